package sse

import (
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

type parseCase struct {
	name   string
	in     string
	want   []Event
	lastID string // the parser's LastEventID at the end
	retry  time.Duration
	// retrySet is whether the stream set a reconnection time.
	retrySet bool
}

func msg(data string) Event { return Event{Type: "message", Data: data} }

// parseCases covers every rule of the standard's "interpreting an event
// stream" section; the fuzz targets use them as seeds.
var parseCases = []parseCase{
	{name: "simple", in: "data: hello\n\n", want: []Event{msg("hello")}},
	{name: "no space after colon", in: "data:hello\n\n", want: []Event{msg("hello")}},
	{name: "only one leading space removed", in: "data:   x\n\n", want: []Event{msg("  x")}},
	{name: "trailing spaces kept", in: "data: x  \n\n", want: []Event{msg("x  ")}},
	{name: "tab not removed", in: "data:\tx\n\n", want: []Event{msg("\tx")}},
	{name: "colon in value", in: "data: a:b: c\n\n", want: []Event{msg("a:b: c")}},
	{name: "data lines joined with LF", in: "data: a\ndata: b\ndata: c\n\n", want: []Event{msg("a\nb\nc")}},
	{name: "field without colon is empty data", in: "data\n\n", want: []Event{msg("")}},
	{name: "empty data value", in: "data:\n\n", want: []Event{msg("")}},
	{name: "only final LF removed", in: "data: a\ndata\n\n", want: []Event{msg("a\n")}},
	{name: "two empty data lines", in: "data\ndata\n\n", want: []Event{msg("\n")}},
	{name: "CRLF line ends", in: "data: a\r\ndata: b\r\n\r\n", want: []Event{msg("a\nb")}},
	{name: "CR line ends", in: "data: a\rdata: b\r\r", want: []Event{msg("a\nb")}},
	{name: "mixed line ends", in: "data: a\rdata: b\ndata: c\r\n\rdata: d\n\r\n", want: []Event{msg("a\nb\nc"), msg("d")}},
	{name: "LF CR is two line ends", in: "data: a\n\rdata: b\n\n", want: []Event{msg("a"), msg("b")}},
	{name: "blank lines before data", in: "\n\r\n\r\ndata: x\n\n", want: []Event{msg("x")}},
	{name: "several events", in: "data: 1\n\ndata: 2\n\ndata: 3\n\n", want: []Event{msg("1"), msg("2"), msg("3")}},
	{name: "comment ignored", in: ": hello\ndata: x\n: between\n\n", want: []Event{msg("x")}},
	{name: "comment only block dispatches nothing", in: ": keepalive\n\n: keepalive\n\n", want: nil},
	{name: "bare colon comment", in: ":\ndata: x\n\n", want: []Event{msg("x")}},
	{name: "event type", in: "event: tick\ndata: x\n\n", want: []Event{{Type: "tick", Data: "x"}}},
	{name: "event type reset after block", in: "event: tick\ndata: x\n\ndata: y\n\n", want: []Event{{Type: "tick", Data: "x"}, msg("y")}},
	{name: "event type reset by block without data", in: "event: tick\n\ndata: y\n\n", want: []Event{msg("y")}},
	{name: "last event type wins", in: "event: a\nevent: b\ndata: x\n\n", want: []Event{{Type: "b", Data: "x"}}},
	{name: "empty event type means message", in: "event\ndata: x\n\n", want: []Event{msg("x")}},
	{name: "event type with empty data", in: "event: e\ndata\n\n", want: []Event{{Type: "e", Data: ""}}},
	{name: "event type with spaces kept", in: "event:  a b \ndata: x\n\n", want: []Event{{Type: " a b ", Data: "x"}}},
	{name: "id", in: "id: 1\ndata: x\n\n", want: []Event{{ID: "1", Type: "message", Data: "x"}}, lastID: "1"},
	{name: "id persists across events", in: "id: 1\ndata: x\n\ndata: y\n\n", want: []Event{{ID: "1", Type: "message", Data: "x"}, {ID: "1", Type: "message", Data: "y"}}, lastID: "1"},
	{name: "id after data in block", in: "data: x\nid: 9\n\n", want: []Event{{ID: "9", Type: "message", Data: "x"}}, lastID: "9"},
	{name: "id with NULL ignored", in: "id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n", want: []Event{{ID: "1", Type: "message", Data: "a"}, {ID: "1", Type: "message", Data: "b"}}, lastID: "1"},
	{name: "empty id resets", in: "id: 1\ndata: a\n\nid\ndata: b\n\n", want: []Event{{ID: "1", Type: "message", Data: "a"}, {ID: "", Type: "message", Data: "b"}}},
	{name: "empty id with colon resets", in: "id: 1\ndata: a\n\nid:\ndata: b\n\n", want: []Event{{ID: "1", Type: "message", Data: "a"}, msg("b")}},
	{name: "block without data sets last event id", in: "id: 7\n\n", want: nil, lastID: "7"},
	{name: "id from block without data carries on", in: "id: 7\n\ndata: x\n\n", want: []Event{{ID: "7", Type: "message", Data: "x"}}, lastID: "7"},
	{name: "id of unterminated block not dispatched", in: "id: 1\ndata: a\n\nid: 2\n", want: []Event{{ID: "1", Type: "message", Data: "a"}}, lastID: "1"},
	{name: "id with spaces kept", in: "id:  a b\ndata: x\n\n", want: []Event{{ID: " a b", Type: "message", Data: "x"}}, lastID: " a b"},
	{name: "retry", in: "retry: 1500\ndata: x\n\n", want: []Event{msg("x")}, retry: 1500 * time.Millisecond, retrySet: true},
	{name: "retry zero", in: "retry: 0\n", retry: 0, retrySet: true},
	{name: "retry applied without dispatch", in: "retry: 42\n", retry: 42 * time.Millisecond, retrySet: true},
	{name: "retry with letter ignored", in: "retry: 15a\n\n"},
	{name: "retry negative ignored", in: "retry: -1\n\n"},
	{name: "retry with two spaces ignored", in: "retry:  100\n\n"},
	{name: "retry empty ignored", in: "retry\nretry:\n\n"},
	{name: "retry decimal ignored", in: "retry: 1.5\n\n"},
	{name: "retry later valid wins", in: "retry: 10\nretry: x\nretry: 20\n\n", retry: 20 * time.Millisecond, retrySet: true},
	{name: "retry huge saturates", in: "retry: 99999999999999999999999999\n", retry: time.Duration(1<<63-1) / time.Millisecond * time.Millisecond, retrySet: true},
	{name: "unknown field ignored", in: "foo: bar\ndata: x\n\n", want: []Event{msg("x")}},
	{name: "field names are case sensitive", in: "Data: x\nDATA: y\n\n", want: nil},
	{name: "space before colon is part of name", in: "data : x\n\n", want: nil},
	{name: "NULL in data kept", in: "data: a\x00b\n\n", want: []Event{msg("a\x00b")}},
	{name: "unterminated last block discarded", in: "data: x\n\ndata: y\n", want: []Event{msg("x")}},
	{name: "unterminated last line discarded", in: "data: x", want: nil},
	{name: "empty stream", in: "", want: nil},
	{name: "BOM stripped", in: "\xEF\xBB\xBFdata: x\n\n", want: []Event{msg("x")}},
	{name: "only one BOM stripped", in: "\xEF\xBB\xBF\xEF\xBB\xBFdata: x\n\ndata: y\n\n", want: []Event{msg("y")}},
	{name: "BOM later is data", in: "data: \xEF\xBB\xBFx\n\n", want: []Event{msg("\uFEFFx")}},
	{name: "BOM prefix only", in: "\xEF\xBBdata: x\n\n", want: nil},
	{name: "UTF-8 multibyte", in: "data: héllo 世界 🎉\n\n", want: []Event{msg("héllo 世界 🎉")}},
	{name: "invalid byte replaced", in: "data: a\xFFb\n\n", want: []Event{msg("a\uFFFDb")}},
	{name: "truncated sequence at line end is one U+FFFD", in: "data: \xE2\x82\n\n", want: []Event{msg("\uFFFD")}},
	{name: "truncated sequence before ASCII is one U+FFFD", in: "data: \xE2\x82A\n\n", want: []Event{msg("\uFFFDA")}},
	{name: "truncated four-byte sequence", in: "data: \xF0\x9F\x98\n\n", want: []Event{msg("\uFFFD")}},
	{name: "overlong is two U+FFFD", in: "data: \xC0\xAF\n\n", want: []Event{msg("\uFFFD\uFFFD")}},
	{name: "surrogate is three U+FFFD", in: "data: \xED\xA0\x80\n\n", want: []Event{msg("\uFFFD\uFFFD\uFFFD")}},
	{name: "E0 overlong", in: "data: \xE0\x80\xAF\n\n", want: []Event{msg("\uFFFD\uFFFD\uFFFD")}},
	{name: "above U+10FFFF", in: "data: \xF4\x90\x80\x80\n\n", want: []Event{msg("\uFFFD\uFFFD\uFFFD\uFFFD")}},
	{name: "lone continuation bytes", in: "data: \x80\x80\n\n", want: []Event{msg("\uFFFD\uFFFD")}},
	{name: "lead byte then lead byte", in: "data: \xE2\xE2\x82\xAC\n\n", want: []Event{msg("\uFFFD€")}},
	{name: "invalid in event type", in: "event: a\xFF\ndata: x\n\n", want: []Event{{Type: "a\uFFFD", Data: "x"}}},
	{name: "invalid in id", in: "id: \xFF\ndata: x\n\n", want: []Event{{ID: "\uFFFD", Type: "message", Data: "x"}}, lastID: "\uFFFD"},
	{name: "invalid in field name", in: "dat\xE1:x\ndata: y\n\n", want: []Event{msg("y")}},
	{name: "invalid before colon", in: "data\xE2:x\n\n", want: nil},
}

// chunkReader returns its chunks one Read at a time.
type chunkReader struct{ chunks []string }

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.chunks) > 0 && r.chunks[0] == "" {
		r.chunks = r.chunks[1:]
	}
	if len(r.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.chunks[0])
	r.chunks[0] = r.chunks[0][n:]
	return n, nil
}

type parseResult struct {
	events   []Event
	lastID   string
	retry    time.Duration
	retrySet bool
}

func parseAll(t testing.TB, r io.Reader, cfg ParserConfig) parseResult {
	t.Helper()
	p := NewParser(r, cfg)
	var res parseResult
	for {
		ev, err := p.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		res.events = append(res.events, ev)
	}
	res.lastID = p.LastEventID()
	res.retry, res.retrySet = p.Retry()
	return res
}

func checkResult(t *testing.T, how string, got parseResult, c parseCase) {
	t.Helper()
	if len(got.events) != len(c.want) {
		t.Fatalf("%s: got %d events %q, want %d %q", how, len(got.events), got.events, len(c.want), c.want)
	}
	for i := range c.want {
		if got.events[i] != c.want[i] {
			t.Fatalf("%s: event %d = %+q, want %+q", how, i, got.events[i], c.want[i])
		}
	}
	if got.lastID != c.lastID {
		t.Fatalf("%s: LastEventID = %q, want %q", how, got.lastID, c.lastID)
	}
	if got.retry != c.retry || got.retrySet != c.retrySet {
		t.Fatalf("%s: Retry = %v,%v, want %v,%v", how, got.retry, got.retrySet, c.retry, c.retrySet)
	}
}

func TestParse(t *testing.T) {
	t.Parallel()
	for _, c := range parseCases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			checkResult(t, "whole", parseAll(t, strings.NewReader(c.in), ParserConfig{}), c)
			checkResult(t, "one byte at a time", parseAll(t, iotest.OneByteReader(strings.NewReader(c.in)), ParserConfig{}), c)
			// Split into two reads at every byte position, and into
			// three reads at every pair of positions for short inputs.
			for i := 0; i <= len(c.in); i++ {
				r := &chunkReader{chunks: []string{c.in[:i], c.in[i:]}}
				checkResult(t, "split at "+strconv.Itoa(i), parseAll(t, r, ParserConfig{}), c)
				if len(c.in) > 40 {
					continue
				}
				for j := i; j <= len(c.in); j++ {
					r := &chunkReader{chunks: []string{c.in[:i], c.in[i:j], c.in[j:]}}
					checkResult(t, "split at "+strconv.Itoa(i)+","+strconv.Itoa(j), parseAll(t, r, ParserConfig{}), c)
				}
			}
		})
	}
}

// A block that ends with CR must be dispatched at once, without waiting to
// see whether an LF follows.
func TestParseCRDoesNotHoldEventBack(t *testing.T) {
	t.Parallel()
	pr, pw := io.Pipe()
	defer pr.Close()
	p := NewParser(pr, ParserConfig{})
	got := make(chan Event)
	errc := make(chan error, 1)
	go func() {
		for {
			ev, err := p.Next()
			if err != nil {
				errc <- err
				close(got)
				return
			}
			got <- ev
		}
	}()
	write := func(s string) {
		if _, err := pw.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	expect := func(want Event) {
		t.Helper()
		select {
		case ev := <-got:
			if ev != want {
				t.Fatalf("got %+q, want %+q", ev, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("event %+q not dispatched", want)
		}
	}
	write("data: a\r\r")
	expect(msg("a"))
	// The LF completing the CRLF arrives late and must not count as a
	// line of its own.
	write("\ndata: b\r")
	write("\ndata: c\r\n\r")
	expect(msg("b\nc"))
	write("\n")
	write("data: d\n\n")
	expect(msg("d"))
	pw.Close()
	if _, ok := <-got; ok {
		t.Fatal("unexpected event")
	}
	if err := <-errc; err != io.EOF {
		t.Fatalf("err = %v, want EOF", err)
	}
}

func TestParseMaxEventSize(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 100)
	cases := []struct {
		name string
		in   string
		ok   int // events before the error
	}{
		{"one long line", "data: " + long + "\n\n", 0},
		{"long line without end", "data: " + long + long, 0},
		{"long comment", ": " + long + "\n\n", 0},
		{"many data lines", strings.Repeat("data: 0123456789\n", 10) + "\n", 0},
		{"small events then a big one", "data: a\n\ndata: b\n\ndata: " + long + "\n\n", 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			p := NewParser(strings.NewReader(c.in), ParserConfig{MaxEventSize: 64})
			n := 0
			for {
				_, err := p.Next()
				if err == nil {
					n++
					continue
				}
				if !errors.Is(err, ErrEventTooLarge) {
					t.Fatalf("err = %v, want ErrEventTooLarge", err)
				}
				break
			}
			if n != c.ok {
				t.Fatalf("%d events before the error, want %d", n, c.ok)
			}
			if _, err := p.Next(); !errors.Is(err, ErrEventTooLarge) {
				t.Fatalf("error not sticky: %v", err)
			}
		})
	}
	t.Run("event at the limit passes", func(t *testing.T) {
		data := strings.Repeat("y", 50)
		res := parseAll(t, strings.NewReader("data: "+data+"\n\n"), ParserConfig{MaxEventSize: 64})
		if len(res.events) != 1 || res.events[0].Data != data {
			t.Fatalf("got %q", res.events)
		}
	})
	t.Run("default allows 1 MiB lines", func(t *testing.T) {
		data := strings.Repeat("z", 1<<20)
		res := parseAll(t, strings.NewReader("data: "+data+"\n\n"), ParserConfig{})
		if len(res.events) != 1 || res.events[0].Data != data {
			t.Fatal("1 MiB event not parsed")
		}
	})
}

func TestParseComments(t *testing.T) {
	t.Parallel()
	var comments []string
	in := ": keepalive\n:no space\n:  two\ndata: x\n\n:\n"
	p := NewParser(strings.NewReader(in), ParserConfig{OnComment: func(s string) { comments = append(comments, s) }})
	for {
		if _, err := p.Next(); err != nil {
			break
		}
	}
	want := []string{"keepalive", "no space", " two", ""}
	if strings.Join(comments, "|") != strings.Join(want, "|") {
		t.Fatalf("comments = %q, want %q", comments, want)
	}
}

func TestParseInitialLastEventID(t *testing.T) {
	t.Parallel()
	res := parseAll(t, strings.NewReader("data: x\n\nid: 5\ndata: y\n\n"), ParserConfig{LastEventID: "4"})
	want := []Event{{ID: "4", Type: "message", Data: "x"}, {ID: "5", Type: "message", Data: "y"}}
	if len(res.events) != 2 || res.events[0] != want[0] || res.events[1] != want[1] {
		t.Fatalf("got %+q, want %+q", res.events, want)
	}
}

// errReader fails after its data.
func TestParseReaderError(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	r := io.MultiReader(strings.NewReader("data: a\n\ndata: b\n"), iotest.ErrReader(boom))
	p := NewParser(r, ParserConfig{})
	if ev, err := p.Next(); err != nil || ev.Data != "a" {
		t.Fatalf("first: %v %v", ev, err)
	}
	if _, err := p.Next(); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
}
