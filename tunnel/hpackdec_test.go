package tunnel

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// headResult is what a read loop makes of one HEADERS frame and its
// CONTINUATION frames: the head, or the stream's error, or the
// connection's.
type headResult struct {
	Fields    []string // name: value, ! before a never-indexed one
	Truncated bool
	StreamErr string
	ConnErr   string
}

// readHeads reads the frames of stream as a read loop does, with x/net's
// framer decoding the heads (ReadMetaHeaders) or with ours (readHead),
// until the frames end or the connection fails.
func readHeads(stream []byte, maxList uint32, ours bool) []headResult {
	fr := http2.NewFramer(nil, bytes.NewReader(stream))
	var c *h2Conn
	if ours {
		c = &h2Conn{fr: fr, dec: newHPACKDecoder(hpackTableSize, int(maxList)), listMax: maxList}
	} else {
		fr.ReadMetaHeaders = hpack.NewDecoder(hpackTableSize, nil)
		fr.MaxHeaderListSize = maxList
	}
	var out []headResult
	for {
		f, err := fr.ReadFrame()
		if hf, ok := f.(*http2.HeadersFrame); ok && err == nil && ours {
			f, err = c.readHead(hf)
		}
		var se http2.StreamError
		var ce http2.ConnectionError
		switch {
		case err == nil:
			mh, ok := f.(*http2.MetaHeadersFrame)
			if !ok {
				continue
			}
			r := headResult{Truncated: mh.Truncated}
			for _, hf := range mh.Fields {
				mark := ""
				if hf.Sensitive {
					mark = "!"
				}
				r.Fields = append(r.Fields, mark+hf.Name+": "+hf.Value)
			}
			out = append(out, r)
		case errors.As(err, &se):
			out = append(out, headResult{StreamErr: fmt.Sprintf("%v %v", se.Code, se.Cause)})
		case errors.As(err, &ce):
			// The code is not compared: where a block breaks HPACK and
			// is too large too, x/net may find either first (it decodes
			// frame by frame), ours finds the breach.
			return append(out, headResult{ConnErr: "connection error"})
		default:
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				out = append(out, headResult{ConnErr: err.Error()})
			}
			return out
		}
	}
}

// headStream writes blocks as the header blocks of streams 1, 3, 5...,
// each in a HEADERS frame, or (split > 0) the first split bytes of it in
// one and the rest in a CONTINUATION frame.
func headStream(blocks [][]byte, splits []int) []byte {
	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	for i, b := range blocks {
		id := uint32(2*i + 1)
		if s := splits[i]; s > 0 && s < len(b) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: b[:s]})
			fr.WriteContinuation(id, true, b[s:])
			continue
		}
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: b, EndHeaders: true})
	}
	return buf.Bytes()
}

// sameHeads wants our read loop to make of stream what x/net's makes.
func sameHeads(t testing.TB, stream []byte, maxList uint32) []headResult {
	t.Helper()
	want := readHeads(stream, maxList, false)
	got := readHeads(stream, maxList, true)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("max list %d, stream %x:\n ours  %v\n x/net %v", maxList, stream, got, want)
	}
	return got
}

// lit is a literal field without indexing, its name literal too.
func lit(name, value string) []byte {
	b := []byte{0}
	for _, s := range []string{name, value} {
		n := len(s)
		if n < 127 {
			b = append(b, byte(n))
		} else {
			b = append(b, 127)
			for n -= 127; n >= 128; n >>= 7 {
				b = append(b, byte(n)|0x80)
			}
			b = append(b, byte(n))
		}
		b = append(b, s...)
	}
	return b
}

func TestHPACKDecoder(t *testing.T) {
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	indexed := func(name, value string) []byte { // literal with incremental indexing
		b := lit(name, value)
		b[0] = 0x40
		return b
	}
	never := func(name, value string) []byte {
		b := lit(name, value)
		b[0] = 0x10
		return b
	}
	huffBad := []byte{0, 1, 'x', 0x81, 0x00} // a Huffman value of one byte of zeros: bad padding
	cases := []struct {
		name   string
		blocks [][]byte
		check  func(t *testing.T, got []headResult)
	}{
		{"static, dynamic and literal fields", [][]byte{
			cat([]byte{0x82, 0x86, 0x84}, indexed(":authority", "a.example"), lit("x-a", "1"), never("cookie", "c=1")),
			cat([]byte{0x82, 0x86, 0x84, 0xbe}, lit("x-a", "2")), // 0xbe: index 62, the first dynamic entry
		}, func(t *testing.T, got []headResult) {
			want := []string{":method: GET", ":scheme: http", ":path: /", ":authority: a.example"}
			if len(got) != 2 || !reflect.DeepEqual(got[1].Fields, append(want, "x-a: 2")) || got[0].Fields[5] != "!cookie: c=1" {
				t.Fatalf("got %v", got)
			}
		}},
		{"a value with a control byte resets the stream", [][]byte{cat([]byte{0x88}, lit("x-a", "a\x01b"))}, func(t *testing.T, got []headResult) {
			if len(got) != 1 || !strings.Contains(got[0].StreamErr, `invalid header field value for "x-a"`) {
				t.Fatalf("got %v", got)
			}
		}},
		{"an upper-case name", [][]byte{cat([]byte{0x88}, lit("X-A", "1"))}, nil},
		{"a pseudo-header after a regular field", [][]byte{cat(lit("x-a", "1"), []byte{0x88})}, nil},
		{"an unknown pseudo-header", [][]byte{cat([]byte{0x88}, lit(":x", "1"))}, nil},
		{"request and response pseudo-headers", [][]byte{{0x88, 0x82}}, nil},
		{"a pseudo-header twice", [][]byte{{0x88, 0x88}}, nil},
		{"past the list's size", [][]byte{cat([]byte{0x88}, lit("x-a", strings.Repeat("a", 200)), lit("x-b", strings.Repeat("b", 200)))}, func(t *testing.T, got []headResult) {
			if len(got) != 1 || !got[0].Truncated || len(got[0].Fields) != 2 {
				t.Fatalf("got %v", got)
			}
		}},
		{"Trailer fields counted apart", [][]byte{cat([]byte{0x88}, lit("trailer", "a,b,c"), lit("x-a", strings.Repeat("a", 320)))}, func(t *testing.T, got []headResult) {
			if len(got) != 1 || got[0].Truncated || len(got[0].Fields) != 3 {
				t.Fatalf("got %v", got)
			}
		}},
		{"bad Huffman after a field refused is not decoded", [][]byte{cat([]byte{0x88}, lit("x-a", "\x01"), huffBad), {0x88}}, func(t *testing.T, got []headResult) {
			if len(got) != 2 || got[0].StreamErr == "" || got[1].StreamErr != "" || got[1].ConnErr != "" {
				t.Fatalf("got %v", got)
			}
		}},
		{"bad Huffman", [][]byte{cat([]byte{0x88}, huffBad)}, nil},
		{"an entry indexed after a field refused still counts", [][]byte{
			cat([]byte{0x88}, lit("X-A", "1"), indexed("x-b", "2")),
			{0x88, 0xbe},
		}, func(t *testing.T, got []headResult) {
			if len(got) != 2 || got[0].StreamErr == "" || !reflect.DeepEqual(got[1].Fields, []string{":status: 200", "x-b: 2"}) {
				t.Fatalf("got %v", got)
			}
		}},
		{"a size update first, then in the middle while the table is empty", [][]byte{{0x3f, 0xe1, 0x1f, 0x88, 0x20, 0x82 ^ 0x0a}}, nil},
		{"a size update in the middle", [][]byte{cat(indexed("x-a", "1"), []byte{0x20})}, nil},
		{"a size update above the setting", [][]byte{{0x3f, 0xe2, 0x1f}}, nil},
		{"index 0", [][]byte{{0x80}}, nil},
		{"an index past the tables", [][]byte{{0xbf}}, nil},
		{"a field cut short", [][]byte{{0x00, 0x05, 'x'}}, nil},
		{"a varint too long", [][]byte{{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}}, nil},
		{"a string longer than the list", [][]byte{{0x00, 0x7f, 0xff, 0x7f}}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, split := range []int{0, 1, 3} {
				splits := make([]int, len(tc.blocks))
				for i := range splits {
					splits[i] = split
				}
				got := sameHeads(t, headStream(tc.blocks, splits), 400)
				if split == 0 && tc.check != nil {
					tc.check(t, got)
				}
				if split == 0 && tc.check == nil && (len(got) == 0 || (got[len(got)-1].StreamErr == "" && got[len(got)-1].ConnErr == "")) {
					t.Fatalf("want an error, got %v", got)
				}
			}
		})
	}
}

// TestHPACKDecoderEncoders decodes what x/net's encoder (Huffman, every
// field indexed, table size changes) and ours write, block after block,
// and wants what x/net's decoder makes of them.
func TestHPACKDecoderEncoders(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	names := []string{"x-a", "x-b", "user-agent", "cookie", "content-type", "accept", "x-forwarded-for"}
	var blocks [][]byte
	var xbuf, obuf bytes.Buffer
	xenc := hpack.NewEncoder(&xbuf)
	oenc := newHPACKEncoder(&obuf)
	for i := range 200 {
		if i%37 == 36 {
			v := uint32(rnd.IntN(hpackTableSize + 1))
			xenc.SetMaxDynamicTableSizeLimit(v)
			oenc.SetMaxDynamicTableSizeLimit(v)
		}
		fields := []hpack.HeaderField{{Name: ":status", Value: "200"}}
		for range rnd.IntN(8) {
			fields = append(fields, hpack.HeaderField{
				Name:      names[rnd.IntN(len(names))],
				Value:     strings.Repeat(string(rune('a'+rnd.IntN(26))), rnd.IntN(300)),
				Sensitive: rnd.IntN(5) == 0,
			})
		}
		xbuf.Reset()
		obuf.Reset()
		for _, f := range fields {
			xenc.WriteField(f)
			oenc.WriteField(f)
		}
		blocks = append(blocks, bytes.Clone(xbuf.Bytes()))
		blocks = append(blocks, bytes.Clone(obuf.Bytes()))
	}
	// Two tables: x/net's blocks on even streams' connection, ours on another.
	var xb, ob [][]byte
	for i, b := range blocks {
		if i%2 == 0 {
			xb = append(xb, b)
		} else {
			ob = append(ob, b)
		}
	}
	for _, bb := range [][][]byte{xb, ob} {
		splits := make([]int, len(bb))
		for i := range splits {
			splits[i] = rnd.IntN(40)
		}
		got := sameHeads(t, headStream(bb, splits), 1<<20)
		if len(got) != len(bb) {
			t.Fatalf("%d heads of %d", len(got), len(bb))
		}
	}
}

// TestHPACKDecoderAllocs: a head allocates the string of its literals
// and no more (the fields' slice is the connection's).
func TestHPACKDecoderAllocs(t *testing.T) {
	var buf bytes.Buffer
	enc := newHPACKEncoder(&buf)
	d := newHPACKDecoder(hpackTableSize, 1<<20)
	// The first block adds the date to the table; the second refers to it.
	for range 2 {
		buf.Reset()
		for _, f := range []hpack.HeaderField{{Name: ":status", Value: "200"}, {Name: "content-type", Value: "text/plain"}, {Name: "x-request-id", Value: "12345"}, {Name: "date", Value: "Tue, 01 Dec 2026 10:00:00 GMT"}} {
			enc.WriteField(f)
		}
		if _, err := d.decode(buf.Bytes(), 1<<20, nil); err != nil {
			t.Fatal(err)
		}
	}
	block := buf.Bytes()
	if n := testing.AllocsPerRun(100, func() {
		if _, err := d.decode(block, 1<<20, nil); err != nil {
			t.Fatal(err)
		}
	}); n > 1 {
		t.Fatalf("%v allocations per head, want 1", n)
	}
}

// FuzzHPACKDecoder: our read loop makes of any header blocks what x/net's
// framer makes of them. The input's first byte sets the list's size
// (small, so that heads are cut short); then blocks, each a length byte,
// a byte where it is split into two frames, and its bytes.
func FuzzHPACKDecoder(f *testing.F) {
	f.Add([]byte{4, 5, 0, 0x82, 0x86, 0x84, 0x41, 0x01, 'a'})
	f.Add(append([]byte{1, 12, 3}, lit("x-a", "a\x01b")...))
	f.Add(append([]byte{0, 10, 0, 0x88}, append(lit("trailer", "a,b"), 0x20)...))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 1 {
			return
		}
		maxList := 32 + uint32(data[0])*8
		data = data[1:]
		var blocks [][]byte
		var splits []int
		for len(data) >= 2 {
			n, s := int(data[0]), int(data[1])
			data = data[2:]
			// A block over four times the list's size ends our
			// connection whatever it holds, where x/net's framer, which
			// keeps nothing, takes one whose bytes use none of the size
			// (table size updates): TestHPACKDecoderBounded has that case.
			n = min(n, len(data), 4*int(maxList))
			blocks = append(blocks, data[:n])
			splits = append(splits, s)
			data = data[n:]
		}
		sameHeads(t, headStream(blocks, splits), maxList)
	})
}

// TestHPACKDecoderManyFields: heads of hundreds of fields, whole, and
// cut short by the list's size with a CONTINUATION frame after the cut
// (which x/net's framer refuses, and so does ours): the same as x/net's.
func TestHPACKDecoderManyFields(t *testing.T) {
	block := []byte{0x88}
	for range 400 {
		block = append(block, lit("x-a", "1")...)
	}
	got := sameHeads(t, headStream([][]byte{block, {0x88}}, []int{2700, 0}), 1<<20)
	if len(got) != 2 || len(got[0].Fields) != 401 {
		t.Fatalf("whole: %d heads", len(got))
	}
	got = sameHeads(t, headStream([][]byte{block, {0x88}}, []int{2700, 0}), 12000)
	if len(got) != 1 || got[0].ConnErr == "" {
		t.Fatalf("cut short, then a CONTINUATION: %v", got)
	}
}

// TestHPACKFieldRules holds the decoder's byte checks to the rules they
// copy: httpguts.ValidHeaderFieldValue, and x/net's name rule on the
// wire (a token without upper case), byte by byte.
func TestHPACKFieldRules(t *testing.T) {
	for c := range 256 {
		s := "a" + string([]byte{byte(c)}) + "b"
		if got, want := validFieldValue(s), httpguts.ValidHeaderFieldValue(s); got != want || validFieldValue([]byte(s)) != want {
			t.Errorf("value %q: %v, httpguts %v", s, got, want)
		}
		want := httpguts.IsTokenRune(rune(c)) && c < 0x80 && !('A' <= c && c <= 'Z')
		if got := validWireName(s); got != want || validWireName([]byte(s)) != want {
			t.Errorf("name %q: %v, want %v", s, got, want)
		}
	}
	if validWireName("") {
		t.Error("an empty name is valid")
	}
}

// TestHPACKDecoderBounded: what the decoder keeps grows with the fields it
// takes and the frames a block came in, not with the block's
// representations: a block of 50,000 table size updates keeps one mark
// per CONTINUATION frame, and x/net's framer makes of it what ours does.
// A block over four times the list's size, and a flood of empty
// CONTINUATION frames, end the connection.
func TestHPACKDecoderBounded(t *testing.T) {
	block := bytes.Repeat([]byte{0x20}, 50000) // size update to 0, allowed anywhere while the table is empty
	got := sameHeads(t, headStream([][]byte{block}, []int{25000}), 1<<20)
	if len(got) != 1 || len(got[0].Fields) != 0 || got[0].ConnErr != "" || got[0].StreamErr != "" {
		t.Fatalf("got %v", got)
	}
	d := newHPACKDecoder(hpackTableSize, 1<<20)
	head, err := d.decode(block, 1<<20, []int{25000})
	if err != nil || len(head.marks) != 1 || cap(d.refs) > 256 {
		t.Fatalf("marks %d, refs %d, %v", len(head.marks), cap(d.refs), err)
	}

	// Over four times the list's size, in size updates that use none of
	// it: the connection ends (x/net's framer would take it).
	got = readHeads(headStream([][]byte{bytes.Repeat([]byte{0x20}, 161)}, []int{48}), 40, true)
	if len(got) != 1 || got[0].ConnErr == "" {
		t.Fatalf("a block over the limit: %v", got)
	}

	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x88}})
	const maxList = 1 << 10
	for range h2MaxContinuations(4*maxList) + 1 {
		fr.WriteContinuation(1, false, nil)
	}
	got = readHeads(buf.Bytes(), maxList, true)
	if len(got) != 1 || got[0].ConnErr == "" {
		t.Fatalf("a flood of CONTINUATION frames: %v", got)
	}
}
