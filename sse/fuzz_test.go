package sse

import (
	"bytes"
	"strings"
	"testing"
	"testing/iotest"
	"time"
	"unicode/utf8"
)

// FuzzParse checks that parsing never panics, that the result does not
// depend on how the input is split into reads, and that everything the
// parser returns is valid UTF-8 with no CR or LF in ids and types.
func FuzzParse(f *testing.F) {
	for _, c := range parseCases {
		f.Add([]byte(c.in), uint16(len(c.in)/2))
	}
	f.Fuzz(func(t *testing.T, in []byte, split uint16) {
		whole := parseFuzz(bytes.NewReader(in))
		one := parseFuzz(iotest.OneByteReader(bytes.NewReader(in)))
		i := int(split) % (len(in) + 1)
		halves := parseFuzz(&chunkReader{chunks: []string{string(in[:i]), string(in[i:])}})
		for _, other := range []parseResult{one, halves} {
			if len(other.events) != len(whole.events) || other.lastID != whole.lastID || other.retry != whole.retry || other.retrySet != whole.retrySet {
				t.Fatalf("split changes the result: %+v vs %+v", whole, other)
			}
			for k := range whole.events {
				if whole.events[k] != other.events[k] {
					t.Fatalf("split changes event %d: %+q vs %+q", k, whole.events[k], other.events[k])
				}
			}
		}
		for _, ev := range whole.events {
			if !utf8.ValidString(ev.Data) || !utf8.ValidString(ev.ID) || !utf8.ValidString(ev.Type) {
				t.Fatalf("invalid UTF-8 in %+q", ev)
			}
			if strings.ContainsAny(ev.ID, "\r\n\x00") || strings.ContainsAny(ev.Type, "\r\n") || strings.Contains(ev.Data, "\r") {
				t.Fatalf("line break in %+q", ev)
			}
			if ev.Type == "" {
				t.Fatalf("empty type in %+q", ev)
			}
		}
	})
}

func parseFuzz(r interface{ Read([]byte) (int, error) }) parseResult {
	p := NewParser(r, ParserConfig{MaxEventSize: 1 << 16})
	var res parseResult
	for {
		ev, err := p.Next()
		if err != nil {
			break
		}
		res.events = append(res.events, ev)
	}
	res.lastID = p.LastEventID()
	res.retry, res.retrySet = p.Retry()
	return res
}

// FuzzEncode checks the encoder's promise: what it writes, a parser reads
// back as written (line breaks in data as LF, invalid UTF-8 replaced as the
// decoder does), and what it cannot write faithfully is an error.
func FuzzEncode(f *testing.F) {
	f.Add("1", "", "hello", "", uint32(0))
	f.Add("", "tick", "a\nb\r\nc\rd", "keep\nalive", uint32(1500))
	f.Add("id with space", "type", "", "", uint32(1))
	f.Add("a\nb", "t", "x", "", uint32(0))
	f.Add("", "t\r", "x", "", uint32(0))
	f.Add("\x00", "", "\xff\xfe", "", uint32(0))
	f.Add("", "", "\n\n\n", ":", uint32(0))
	for _, c := range parseCases {
		for _, e := range c.want {
			f.Add(e.ID, e.Type, e.Data, "", uint32(e.Retry/time.Millisecond))
		}
	}
	f.Fuzz(func(t *testing.T, id, typ, data, comment string, retryMs uint32) {
		e := Event{ID: id, Type: typ, Data: data, Comment: comment, Retry: time.Duration(retryMs) * time.Millisecond}
		b, err := AppendEvent(nil, e)
		if strings.ContainsAny(id, "\r\n\x00") {
			if err != ErrInvalidID {
				t.Fatalf("id %q: err = %v, want ErrInvalidID", id, err)
			}
			return
		}
		if strings.ContainsAny(typ, "\r\n") {
			if err != ErrInvalidType {
				t.Fatalf("type %q: err = %v, want ErrInvalidType", typ, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("AppendEvent(%+q): %v", e, err)
		}
		res := parseAll(t, bytes.NewReader(b), ParserConfig{})
		if retryMs > 0 && (!res.retrySet || res.retry != e.Retry) {
			t.Fatalf("encoded %q, parsed retry %v %v, want %v", b, res.retry, res.retrySet, e.Retry)
		}
		if len(res.events) != 1 {
			t.Fatalf("encoded %q, parsed %d events", b, len(res.events))
		}
		got := res.events[0]
		want := Event{
			ID:   decodeString([]byte(id)),
			Type: decodeString([]byte(typ)),
			Data: decodeString([]byte(normalizeBreaks(data))),
		}
		if want.Type == "" {
			want.Type = "message"
		}
		if got != want {
			t.Fatalf("encoded %q\nparsed %+q\nwant   %+q", b, got, want)
		}
	})
}

func normalizeBreaks(s string) string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	return strings.ReplaceAll(s, "\r", "\n")
}
