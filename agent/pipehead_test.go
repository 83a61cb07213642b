package agent

import (
	"bufio"
	"bytes"
	"testing"
)

var headScanCases = []struct {
	in   string
	at   int
	done bool
}{
	{"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0, true},
	{"HTTP/1.1 101 Switching Protocols\r\n\r\n", 0, true},
	{"HTTP/1.0 204 No Content\r\n\r\n", 0, true},
	{"not a status line at all", 0, true},
	{"HTTP/1.1 1", 0, false},
	{"", 0, false},
	{"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\n\r\n", 57, true},
	{"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n", 0, false},
	{"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 2", 0, false},
	{"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", 52, true},
	{"HTTP/1.1 103 Early\nLink: x\n\nHTTP/1.1 200 OK\n\n", 28, true},
	{"HTTP/1.1 103\n\nHTTP/1.1 200 OK\n\n", 14, true},
	{"HTTP/1.1 103 X\r\n\nHTTP/1.1 500 Oops\r\n\r\n", 17, true},
	{"HTTP/1.1 103 X\r\nA: b\rc\r\n\r\nHTTP/1.1 200 OK\r\n\r\n", 26, true},
	{"HTTP/1.1 103 X\r\nA: b\r\r\nHTTP/1.1 200 OK\r\n\r\n", 0, false}, // "\r\r\n" is no empty line: still the 103's head
}

// headScan finds where the final head starts, however the bytes are split:
// whole, byte by byte, and cut in two anywhere.
func TestHeadScan(t *testing.T) {
	for _, tc := range headScanCases {
		if at, done := scanWhole([]byte(tc.in)); at != tc.at || done != tc.done {
			t.Errorf("%q: %d %v, want %d %v", tc.in, at, done, tc.at, tc.done)
		}
		checkHeadScan(t, []byte(tc.in), len(tc.in)/2)
	}
}

func FuzzHeadScan(f *testing.F) {
	for _, tc := range headScanCases {
		f.Add([]byte(tc.in), uint16(len(tc.in)/3))
	}
	f.Fuzz(func(t *testing.T, b []byte, cut uint16) { checkHeadScan(t, b, int(cut)) })
}

func scanWhole(b []byte) (int, bool) {
	var s headScan
	return s.final(b)
}

// checkHeadScan: headScan's answer on b is the same whole, byte by byte,
// and cut in two at cut (modulo len(b)+1), and it is where net/textproto's
// line reading puts the first head that is not an informational one:
// each 1xx head ends at its first empty line ("\n" or "\r\n").
func checkHeadScan(t *testing.T, b []byte, cut int) {
	t.Helper()
	at, done := scanWhole(b)

	want, wantDone := 0, false
	for off := 0; len(b)-off >= statusPrefix; {
		if !informational(b[off : off+statusPrefix]) {
			want, wantDone = off, true
			break
		}
		br := bufio.NewReader(bytes.NewReader(b[off+statusPrefix:]))
		used, end := 0, false
		for first := true; ; first = false {
			line, err := br.ReadSlice('\n')
			if err != nil {
				break
			}
			used += len(line)
			if !first && (len(line) == 1 || len(line) == 2 && line[0] == '\r') {
				end = true
				break
			}
		}
		if !end {
			break
		}
		off += statusPrefix + used
	}
	if at != want || done != wantDone {
		t.Fatalf("%q: %d %v; the lines say %d %v", b, at, done, want, wantDone)
	}

	feed := func(parts [][]byte) (int, bool) {
		var s headScan
		base := 0
		for _, p := range parts {
			if a, ok := s.final(p); ok {
				return base + a, true
			}
			base += len(p)
		}
		return 0, false
	}
	cut %= len(b) + 1
	if a, ok := feed([][]byte{b[:cut], b[cut:]}); a != at || ok != done {
		t.Fatalf("%q cut at %d: %d %v, whole: %d %v", b, cut, a, ok, at, done)
	}
	bytewise := make([][]byte, len(b))
	for i := range b {
		bytewise[i] = b[i : i+1]
	}
	if a, ok := feed(bytewise); a != at || ok != done {
		t.Fatalf("%q byte by byte: %d %v, whole: %d %v", b, a, ok, at, done)
	}
}
