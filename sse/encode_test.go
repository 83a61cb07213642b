package sse

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestAppendEvent(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		ev   Event
		want string
	}{
		{"data only", Event{Data: "x"}, "data: x\n\n"},
		{"empty data", Event{}, "data: \n\n"},
		{"all fields", Event{ID: "7", Type: "tick", Data: "x", Retry: 1500 * time.Millisecond}, "id: 7\nevent: tick\nretry: 1500\ndata: x\n\n"},
		{"multi-line LF", Event{Data: "a\nb"}, "data: a\ndata: b\n\n"},
		{"multi-line CR", Event{Data: "a\rb"}, "data: a\ndata: b\n\n"},
		{"multi-line CRLF", Event{Data: "a\r\nb"}, "data: a\ndata: b\n\n"},
		{"trailing newline", Event{Data: "a\n"}, "data: a\ndata: \n\n"},
		{"leading space kept", Event{Data: " a"}, "data:  a\n\n"},
		{"comment", Event{Comment: "hi\nthere", Data: "x"}, ": hi\n: there\ndata: x\n\n"},
		{"sub-millisecond retry", Event{Retry: time.Microsecond, Data: "x"}, "retry: 0\ndata: x\n\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got, err := AppendEvent([]byte("prefix|"), c.ev)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != "prefix|"+c.want {
				t.Fatalf("got %q, want %q", got, "prefix|"+c.want)
			}
		})
	}
}

func TestAppendEventRejectsBrokenFields(t *testing.T) {
	t.Parallel()
	cases := []struct {
		ev   Event
		want error
	}{
		{Event{ID: "a\nb"}, ErrInvalidID},
		{Event{ID: "a\rb"}, ErrInvalidID},
		{Event{ID: "a\x00b"}, ErrInvalidID},
		{Event{Type: "a\nb"}, ErrInvalidType},
		{Event{Type: "a\rb"}, ErrInvalidType},
	}
	for _, c := range cases {
		dst := []byte("keep")
		got, err := AppendEvent(dst, c.ev)
		if !errors.Is(err, c.want) {
			t.Errorf("%+q: err = %v, want %v", c.ev, err, c.want)
		}
		if string(got) != "keep" {
			t.Errorf("%+q: dst changed to %q", c.ev, got)
		}
	}
}

func TestEncoderRoundTrip(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	enc := NewEncoder(&buf)
	events := []Event{
		{ID: "1", Data: "first"},
		{Type: "update", Data: "multi\nline\r\nwith\rbreaks"},
		{Data: ""},
		{ID: "x y", Type: "t", Data: "\n\n"},
	}
	if err := enc.Comment("hello"); err != nil {
		t.Fatal(err)
	}
	if err := enc.Retry(0); err != nil {
		t.Fatal(err)
	}
	for _, e := range events {
		if err := enc.Encode(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := enc.Encode(Event{ID: "\n"}); !errors.Is(err, ErrInvalidID) {
		t.Fatalf("err = %v", err)
	}
	res := parseAll(t, &buf, ParserConfig{})
	want := []Event{
		{ID: "1", Type: "message", Data: "first"},
		{ID: "1", Type: "update", Data: "multi\nline\nwith\nbreaks"},
		{ID: "1", Type: "message", Data: ""},
		{ID: "x y", Type: "t", Data: "\n\n"},
	}
	if len(res.events) != len(want) {
		t.Fatalf("got %d events: %+q", len(res.events), res.events)
	}
	for i := range want {
		if res.events[i] != want[i] {
			t.Errorf("event %d = %+q, want %+q", i, res.events[i], want[i])
		}
	}
	if d, set := res.retry, res.retrySet; d != 0 || !set {
		t.Errorf("retry = %v,%v, want 0,true", d, set)
	}
}

func TestAppendDecoded(t *testing.T) {
	t.Parallel()
	// Expected values follow the WHATWG Encoding standard's UTF-8 decoder
	// (one U+FFFD per maximal subpart), which is also what browsers do.
	cases := []struct{ in, want string }{
		{"", ""},
		{"plain", "plain"},
		{"\xFF", "\uFFFD"},
		{"\xC2", "\uFFFD"},
		{"\xC2A", "\uFFFDA"},
		{"\xE2\x82", "\uFFFD"},
		{"\xE2\x82\xAC", "€"},
		{"\xF0\x9F\x98", "\uFFFD"},
		{"\xF0\x9F\x98\x80", "😀"},
		{"\xC0\x80", "\uFFFD\uFFFD"},
		{"\xED\x9F\xBF", "\uD7FF"},
		{"\xED\xA0\x80", "\uFFFD\uFFFD\uFFFD"},
		{"\xF4\x8F\xBF\xBF", "\U0010FFFF"},
		{"\xF4\x90\x80\x80", "\uFFFD\uFFFD\uFFFD\uFFFD"},
		{"\xF5", "\uFFFD"},
		{"a\x80b\xBFc", "a\uFFFDb\uFFFDc"},
		{"\xE0\x9F\x80", "\uFFFD\uFFFD\uFFFD"},
		{"\xF0\x8F\x80\x80", "\uFFFD\uFFFD\uFFFD\uFFFD"},
		{"\xE1\x80\xE1\x80\x80", "\uFFFD\u1000"},
	}
	for _, c := range cases {
		if got := string(appendDecoded(nil, []byte(c.in))); got != c.want {
			t.Errorf("decode(%q) = %q, want %q", c.in, got, c.want)
		}
		if got := decodeString([]byte(c.in)); got != c.want {
			t.Errorf("decodeString(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	// Valid UTF-8 always comes back unchanged.
	for _, s := range []string{"héllo", strings.Repeat("世界", 100)} {
		if got := string(appendDecoded(nil, []byte(s))); got != s {
			t.Errorf("valid %q changed to %q", s, got)
		}
	}
}
