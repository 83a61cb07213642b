package agent

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/inspect"
	"github.com/sluicehq/sluice/tunnel"
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

var respFollowCases = []struct {
	in   string
	head bool // the request was a HEAD
}{
	{"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\n", false},
	{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\nrest", false},
	{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", false},
	{"HTTP/1.1 200 OK\nContent-Length: 3\n\nabc", false},
	{"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true},
	{"HTTP/1.1 204 No Content\r\n\r\nafter", false},
	{"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", false},
	{"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false},
	{"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", false},
	{"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\noops", false},
	{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", false},
}

// respFollow ends a response where net/http's parser does, with its
// status and the body's bytes, however the bytes are split.
func TestRespFollow(t *testing.T) {
	for _, tc := range respFollowCases {
		checkRespFollow(t, []byte(tc.in), len(tc.in)/2, tc.head)
	}
	// A body that ends with the connection: all that came is the body.
	f := &respFollow{}
	if _, done := f.read([]byte("HTTP/1.1 200 OK\r\n\r\nabc")); done || f.body != 3 || f.status != 200 {
		t.Errorf("close-delimited: done %v, body %d, status %d", done, f.body, f.status)
	}
	// Framing it cannot follow: the record says so, and keeps what
	// follows as it came.
	in := inspect.New(inspect.Config{})
	defer in.Close()
	rec := in.RecordHead("GET", "/", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	f = &respFollow{rec: rec}
	if _, done := f.read([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n")); done {
		t.Error("a bad chunk size line: followed to an end")
	}
	rec.End(nil, f.cut(io.EOF))
	body, r, _ := in.Body("1", false)
	if !strings.Contains(r.CaptureNote, "could not be followed (a bad chunk size)") || string(body) != "abczz\r\n" {
		t.Errorf("a bad chunk size line: note %q, body %q", r.CaptureNote, body)
	}
}

func FuzzRespFollow(f *testing.F) {
	for _, tc := range respFollowCases {
		f.Add([]byte(tc.in), uint16(len(tc.in)/3), tc.head)
	}
	f.Fuzz(func(t *testing.T, b []byte, cut uint16, head bool) { checkRespFollow(t, b, int(cut), head) })
}

// checkRespFollow: where net/http reads b as a response (to a GET, or a
// HEAD) whose body ends by its framing, the follower ends there too, with
// the same status and body bytes, whole, cut at cut, and byte by byte; and
// the inspector's record of it (made from the whole) has net/http's
// header (without the hop-by-hop fields), body and trailers. Where
// net/http cannot, the follower only must not fail.
func checkRespFollow(t *testing.T, b []byte, cut int, head bool) {
	t.Helper()
	in := inspect.New(inspect.Config{})
	defer in.Close()
	method := http.MethodGet
	if head {
		method = http.MethodHead
	}
	rec := in.RecordHead(method, "/", []byte(method+" / HTTP/1.1\r\nHost: x\r\n\r\n"))
	follow := func(parts [][]byte, rec *inspect.Recorder) (f *respFollow, used int, done bool) {
		f = &respFollow{headReq: head, rec: rec}
		for _, p := range parts {
			n, ok := f.read(p)
			used += n
			if ok {
				return f, used, true
			}
		}
		return f, used, false
	}
	cut %= len(b) + 1
	bytewise := make([][]byte, len(b))
	for i := range b {
		bytewise[i] = b[i : i+1]
	}
	whole, wused, wdone := follow([][]byte{b}, rec)
	rec.End(whole.trailers(), nil)
	for name, parts := range map[string][][]byte{"cut": {b[:cut], b[cut:]}, "byte by byte": bytewise} {
		f, used, done := follow(parts, nil)
		if done != wdone || used != wused || f.body != whole.body || f.status != whole.status {
			t.Fatalf("%q %s: %v %d body %d status %d; whole: %v %d body %d status %d",
				b, name, done, used, f.body, f.status, wdone, wused, whole.body, whole.status)
		}
	}

	req := &http.Request{Method: http.MethodGet}
	if head {
		req.Method = http.MethodHead
	}
	r := bytes.NewReader(b)
	br := bufio.NewReader(r)
	resp, err := http.ReadResponse(br, req)
	if err != nil || resp.StatusCode < 200 {
		return // no response, or an informational one: headScan's
	}
	// The header as a proxy passes it on: the trailers announced before
	// the body is read.
	header := resp.Header.Clone()
	tunnel.RemoveHopByHop(header)
	tunnel.AnnounceTrailers(header, resp.Trailer)
	framed := resp.ContentLength >= 0 || resp.Body == http.NoBody || len(resp.TransferEncoding) > 0
	body, err := io.ReadAll(resp.Body)
	n := int64(len(body))
	if err != nil {
		if framed && wdone {
			t.Fatalf("%q: net/http: %v after %d bytes; the follower ended it (body %d)", b, err, n, whole.body)
		}
		return // cut short: the follower waits for the rest, or the close
	}
	used := len(b) - r.Len() - br.Buffered()
	if !framed {
		if wdone || whole.body != int64(n) {
			t.Fatalf("%q: read to the end (%d bytes); the follower: %v body %d", b, n, wdone, whole.body)
		}
		return
	}
	if !wdone || wused != used || whole.body != n || whole.status != resp.StatusCode {
		t.Fatalf("%q: net/http ends at %d, body %d, status %d; the follower: %v %d body %d status %d",
			b, used, n, resp.StatusCode, wdone, wused, whole.body, whole.status)
	}

	recorded, r2, _ := in.Body("1", false)
	trailers := http.Header{}
	for k, vv := range resp.Trailer {
		if len(vv) > 0 {
			trailers[k] = vv
		}
	}
	if len(trailers) == 0 {
		trailers = nil
	}
	got := r2.ResponseTrailers
	if len(got) == 0 {
		got = nil
	}
	if r2.Status != resp.StatusCode || !bytes.Equal(recorded, body) || !reflect.DeepEqual(r2.ResponseHeaders, header) ||
		!reflect.DeepEqual(got, trailers) || r2.State != inspect.StateDone {
		t.Fatalf("%q: recorded %d %v %q trailers %v (%s); net/http: %d %v %q trailers %v",
			b, r2.Status, r2.ResponseHeaders, recorded, got, r2.State, resp.StatusCode, header, body, trailers)
	}
}
