package sse

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"
)

// relayAll parses in and relays it, as a relay server would: every event,
// then the state at the end of the stream.
func relayAll(t testing.TB, in []byte) []byte {
	t.Helper()
	p := NewParser(bytes.NewReader(in), ParserConfig{MaxEventSize: 1 << 16})
	r := NewRelay(p, "")
	var out []byte
	for {
		ev, err := p.Next()
		if err != nil {
			if err != io.EOF && err != ErrEventTooLarge {
				t.Fatalf("Next: %v", err)
			}
			if err == io.EOF {
				out = r.AppendState(out)
			}
			return out
		}
		if out, err = r.AppendEvent(out, ev); err != nil {
			t.Fatalf("AppendEvent(%+q): %v", ev, err)
		}
	}
}

func TestRelay(t *testing.T) {
	t.Parallel()
	cases := []struct{ name, in, out string }{
		{"ids only when they change",
			"id: 1\ndata: a\n\ndata: b\n\nid: 2\ndata: c\n\nid: 2\ndata: d\n\n",
			"id: 1\ndata: a\n\ndata: b\n\nid: 2\ndata: c\n\ndata: d\n\n"},
		{"retry only when it changes, even to 0",
			"retry: 500\ndata: a\n\nretry: 500\ndata: b\n\nretry: 0\ndata: c\n\n",
			"retry: 500\ndata: a\n\ndata: b\n\nretry: 0\ndata: c\n\n"},
		{"a retry-only block at the start reaches the first event",
			"retry: 0\n\ndata: a\n\n",
			"retry: 0\ndata: a\n\n"},
		{"an id reset to empty",
			"id: 1\ndata: a\n\nid\ndata: b\n\n",
			"id: 1\ndata: a\n\nid: \ndata: b\n\n"},
		{"types other than message",
			"event: message\ndata: a\n\nevent: tick\ndata: b\n\n",
			"data: a\n\nevent: tick\ndata: b\n\n"},
		{"state set after the last event",
			"data: a\n\nid: 9\nretry: 100\n\n: bye\n",
			"data: a\n\nid: 9\nretry: 100\n\n"},
		{"an unterminated block is dropped",
			"id: 1\ndata: a\n\nid: 2\ndata: lost",
			"id: 1\ndata: a\n\n"},
		{"nothing", "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := relayAll(t, []byte(c.in))
			if string(out) != c.out {
				t.Fatalf("relayed %q\ngot  %q\nwant %q", c.in, out, c.out)
			}
			checkRelay(t, []byte(c.in), out)
		})
	}
}

// checkRelay checks the relay's promise: the relayed stream parses to the
// same events and the same final state, and has no more id or retry lines
// than the original.
func checkRelay(t *testing.T, in, out []byte) {
	t.Helper()
	want := parseFuzz(bytes.NewReader(in))
	got := parseFuzz(bytes.NewReader(out))
	if len(got.events) != len(want.events) || got.lastID != want.lastID || got.retry != want.retry || got.retrySet != want.retrySet {
		t.Fatalf("relay of %q is %q:\nparsed %+v\nwant   %+v", in, out, got, want)
	}
	for i := range want.events {
		if got.events[i] != want.events[i] {
			t.Fatalf("relay of %q is %q: event %d = %+q, want %+q", in, out, i, got.events[i], want.events[i])
		}
	}
	for _, field := range []string{"id", "retry"} {
		if n, max := countField(out, field), countField(in, field); n > max {
			t.Fatalf("relay of %q is %q: %d %s lines, the original has %d", in, out, n, field, max)
		}
	}
}

// countField counts the lines of a field, however they end.
func countField(b []byte, field string) int {
	n := 0
	for _, line := range strings.FieldsFunc(string(b), func(r rune) bool { return r == '\r' || r == '\n' }) {
		name, _, _ := strings.Cut(line, ":")
		if name == field {
			n++
		}
	}
	return n
}

// A relay from a Client, to a reader that reconnected with a Last-Event-ID.
func TestRelayFromClientState(t *testing.T) {
	t.Parallel()
	src := &Client{lastID: "7", retry: 2 * time.Second, retrySet: true}
	r := NewRelay(src, "7")
	out, err := r.AppendEvent(nil, Event{ID: "7", Type: "message", Data: "x"})
	if err != nil || string(out) != "retry: 2000\ndata: x\n\n" {
		t.Fatalf("%q %v", out, err)
	}
	if out := r.AppendState(nil); len(out) != 0 {
		t.Fatalf("state in step, yet wrote %q", out)
	}
}

// FuzzRelay checks parse → relay → parse on any input.
func FuzzRelay(f *testing.F) {
	for _, c := range parseCases {
		f.Add([]byte(c.in))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		p := NewParser(bytes.NewReader(in), ParserConfig{MaxEventSize: 1 << 16})
		for {
			if _, err := p.Next(); err != nil {
				if err != io.EOF {
					return // too large: the relay would stop there too
				}
				break
			}
		}
		checkRelay(t, in, relayAll(t, in))
	})
}
