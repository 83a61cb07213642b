package tunnel

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/net/http2/hpack"
)

// hpackPeer decodes what an hpackEncoder writes, with x/net's decoder, as
// the peer does: every block in order, one dynamic table.
type hpackPeer struct {
	enc *hpackEncoder
	buf bytes.Buffer
	dec *hpack.Decoder
}

func newHPACKPeer() *hpackPeer {
	p := &hpackPeer{}
	p.enc = newHPACKEncoder(&p.buf)
	p.dec = hpack.NewDecoder(hpackTableSize, nil)
	return p
}

// setting is the peer's SETTINGS_HEADER_TABLE_SIZE, taken by both.
func (p *hpackPeer) setting(v uint32) {
	p.dec.SetAllowedMaxDynamicTableSize(v)
	p.enc.SetMaxDynamicTableSizeLimit(v)
}

// block encodes fields as one header block and returns what the peer
// decodes, and the block's size.
func (p *hpackPeer) block(t testing.TB, fields []hpack.HeaderField) ([]hpack.HeaderField, int) {
	t.Helper()
	p.buf.Reset()
	for _, f := range fields {
		p.enc.WriteField(f)
	}
	got, err := p.dec.DecodeFull(p.buf.Bytes())
	if err != nil {
		t.Fatalf("decoding %x (of %v): %v", p.buf.Bytes(), fields, err)
	}
	return got, p.buf.Len()
}

// same compares decoded fields with those written: names and values, and
// credentials decoded as never-indexed.
func same(t testing.TB, got, want []hpack.HeaderField) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("decoded %d fields %v, wrote %d %v", len(got), got, len(want), want)
	}
	for i := range want {
		if got[i].Name != want[i].Name || got[i].Value != want[i].Value {
			t.Fatalf("field %d decoded %q: %q, wrote %q: %q", i, got[i].Name, got[i].Value, want[i].Name, want[i].Value)
		}
		if (want[i].Sensitive || hpackSecret(want[i].Name)) && !got[i].Sensitive {
			t.Fatalf("field %d (%s) decoded as indexable, want never-indexed", i, want[i].Name)
		}
	}
}

// The static table as the encoder knows it (its lookups) and as the
// decoder holds it (hpackStatic) matches x/net's: each index's name and
// value, decoded from an indexed field.
func TestHPACKStaticTable(t *testing.T) {
	firsts := map[string]uint8{}
	for i := uint8(1); i <= 61; i++ {
		fs, err := hpack.NewDecoder(hpackTableSize, nil).DecodeFull([]byte{0x80 | i})
		if err != nil || len(fs) != 1 {
			t.Fatalf("index %d: %v %v", i, fs, err)
		}
		f := fs[0]
		if got := hpackStatic[i-1]; got.Name != f.Name || got.Value != f.Value {
			t.Errorf("the decoder's static entry %d is %q: %q, want %q: %q", i, got.Name, got.Value, f.Name, f.Value)
		}
		if _, ok := firsts[f.Name]; !ok {
			firsts[f.Name] = i
		}
		if f.Value != "" {
			if got := hpackStaticPair(f.Name, f.Value); got != i {
				t.Errorf("hpackStaticPair(%q, %q) = %d, want %d", f.Name, f.Value, got, i)
			}
		}
	}
	for name, i := range firsts {
		if got := hpackStaticName(name); got != i {
			t.Errorf("hpackStaticName(%q) = %d, want %d", name, got, i)
		}
	}
	if len(hpackStatic) != 61 {
		t.Errorf("the decoder's static table has %d entries", len(hpackStatic))
	}
	if hpackStaticName("x-forwarded-for") != 0 || hpackStaticPair(":method", "PUT") != 0 {
		t.Error("a name or pair not in the static table has an index")
	}
}

func TestHPACKEncoder(t *testing.T) {
	p := newHPACKPeer()
	request := func(ua, xff string) []hpack.HeaderField {
		return []hpack.HeaderField{
			{Name: ":authority", Value: "demo.example.com"},
			{Name: ":method", Value: "GET"},
			{Name: ":path", Value: "/api/items?page=2"},
			{Name: ":scheme", Value: "https"},
			{Name: "user-agent", Value: ua},
			{Name: "accept", Value: "*/*"},
			{Name: "x-forwarded-for", Value: xff},
			{Name: "x-forwarded-proto", Value: "https"},
			{Name: "authorization", Value: "Bearer secret"},
			{Name: "cookie", Value: "s=1"},
			{Name: "x-custom", Value: "value"},
			{Name: "x-marked", Value: "private", Sensitive: true},
		}
	}
	first := request("curl/8.5.0", "192.0.2.1")
	got, n1 := p.block(t, first)
	same(t, got, first)
	got, n2 := p.block(t, first)
	same(t, got, first)
	if n2 >= n1/2 {
		t.Errorf("the same request again: %d bytes, first %d: the indexed fields were not found again", n2, n1)
	}
	// Values that alternate, a value too large to index, and the
	// credentials again: each decodes as written.
	for i := range 50 {
		fs := request(fmt.Sprintf("agent/%d", i%3), fmt.Sprintf("192.0.2.%d", i%7))
		fs = append(fs, hpack.HeaderField{Name: "accept-language", Value: strings.Repeat("x", 600*(i%2))})
		got, _ = p.block(t, fs)
		same(t, got, fs)
	}
	// The peer's table shrinks to nothing, then grows again; a response.
	for _, size := range []uint32{0, 100, 4096, 64, 1 << 20, 4096} {
		p.setting(size)
		resp := []hpack.HeaderField{
			{Name: ":status", Value: "200"}, {Name: ":status", Value: "302"},
			{Name: "content-type", Value: "text/event-stream"},
			{Name: "date", Value: "Wed, 02 Dec 2026 07:55:55 GMT"},
			{Name: "set-cookie", Value: "id=2"},
			{Name: "content-length", Value: "12"},
		}
		for range 3 {
			got, _ = p.block(t, resp)
			same(t, got, resp)
			got, _ = p.block(t, first)
			same(t, got, first)
		}
	}
	// Several changes between two blocks: the smallest, then the last.
	p.setting(50)
	p.setting(3000)
	got, _ = p.block(t, first)
	same(t, got, first)
	if p.buf.Bytes()[0] != 0x20 || p.buf.Bytes()[1] != 0x20|0x1f || p.enc.max != 3000 {
		t.Errorf("block after two changes opens with %x, max %d; want size updates 0 then 3000", p.buf.Bytes()[:4], p.enc.max)
	}
}

// FuzzHPACKEncoder writes blocks of fields the input chooses (names from
// a list that covers each kind, values and table sizes from the input)
// and decodes them with x/net's decoder: every block decodes, as written.
func FuzzHPACKEncoder(f *testing.F) {
	f.Add([]byte("\x00\x01a\x02\x03bb\x10\x04"))
	f.Add([]byte("\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\xff\x00\x10\x00\x00\x00\x01\x02"))
	f.Add(bytes.Repeat([]byte("\x00\x04ab"), 300))
	names := []string{":authority", ":method", ":path", ":status", ":scheme", "user-agent", "accept",
		"accept-encoding", "x-forwarded-for", "content-type", "content-length", "date", "te",
		"authorization", "cookie", "set-cookie", "etag", "x-custom", "via", "www-authenticate"}
	f.Fuzz(func(t *testing.T, in []byte) {
		p := newHPACKPeer()
		var block []hpack.HeaderField
		for len(in) > 0 {
			op := in[0]
			in = in[1:]
			switch {
			case op == 0xff: // end of a block
				got, _ := p.block(t, block)
				same(t, got, block)
				block = block[:0]
			case op == 0xfe && len(in) >= 2: // a new table size, between blocks
				if len(block) == 0 {
					p.setting(uint32(binary.BigEndian.Uint16(in)))
				}
				in = in[2:]
			default:
				name := names[int(op)%len(names)]
				n := 0
				if len(in) > 0 {
					n = min(int(in[0]), len(in)-1)
					if op&0x80 != 0 {
						n = min(n*8, len(in)-1) // now and then a long value
					}
					in = in[1:]
				}
				value := string(in[:n])
				in = in[n:]
				block = append(block, hpack.HeaderField{Name: name, Value: value, Sensitive: op&0x40 != 0})
			}
		}
		got, _ := p.block(t, block)
		same(t, got, block)
	})
}

// The encoder against x/net's, on the request block of a small GET as the
// edge sends it, again and again on one connection.
func BenchmarkHPACKEncoder(b *testing.B) {
	fields := []hpack.HeaderField{
		{Name: ":authority", Value: "bench.localhost"}, {Name: ":method", Value: "GET"},
		{Name: ":path", Value: "/small"}, {Name: ":scheme", Value: "http"},
		{Name: "user-agent", Value: "Go-http-client/1.1"}, {Name: "accept-encoding", Value: "gzip"},
		{Name: "x-forwarded-for", Value: "127.0.0.1"}, {Name: "x-forwarded-host", Value: "bench.localhost"},
		{Name: "x-forwarded-proto", Value: "http"},
	}
	var buf bytes.Buffer
	b.Run("sluice", func(b *testing.B) {
		e := newHPACKEncoder(&buf)
		for b.Loop() {
			buf.Reset()
			for _, f := range fields {
				e.WriteField(f)
			}
		}
	})
	b.Run("x-net", func(b *testing.B) {
		e := hpack.NewEncoder(&buf)
		for b.Loop() {
			buf.Reset()
			for _, f := range fields {
				e.WriteField(f)
			}
		}
	})
}
