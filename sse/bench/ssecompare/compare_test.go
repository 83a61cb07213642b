// Package ssecompare benchmarks parsing an SSE stream with sluice's sse.Parser
// against github.com/tmaxmax/go-sse and github.com/r3labs/sse/v2. It is its
// own module so that those libraries never become dependencies of sluice or
// of the sse module.
//
// Run it with
//
//	go test -bench . -benchmem
package ssecompare

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"

	r3sse "github.com/r3labs/sse/v2"
	"github.com/sluicehq/sluice/sse"
	"github.com/sluicehq/sluice/sse/internal/ssebench"
	gosse "github.com/tmaxmax/go-sse"
	"gopkg.in/cenkalti/backoff.v1"
)

// maxEventSize is the event size limit given to every library: sluice's
// default (sse.DefaultMaxEventSize, 16 MiB). go-sse and r3labs default to
// 64 KiB; see TestDefaultLimits.
const maxEventSize = sse.DefaultMaxEventSize

// A parser parses a whole stream with an event size limit (0: the library's
// default), calling fn for each event, and returns the first error.
type parser struct {
	name  string
	parse func(stream []byte, limit int, fn func(sse.Event)) error
}

var parsers = []parser{
	{"sluice", parseSluice},
	{"go-sse", parseGoSSE},
	{"r3labs-client", parseR3Client},
	{"r3labs-reader", parseR3Reader},
}

// parseSluice measures sse.NewParser + Parser.Next until io.EOF: the events
// come out fully decoded (ID, Type, Data as strings).
func parseSluice(stream []byte, limit int, fn func(sse.Event)) error {
	p := sse.NewParser(bytes.NewReader(stream), sse.ParserConfig{MaxEventSize: limit})
	for {
		ev, err := p.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		fn(ev)
	}
}

// parseGoSSE measures gosse.Read, go-sse's public API for parsing a stream
// from an io.Reader (an iterator of events with LastEventID, Type and Data
// as strings). MaxEventSize bounds its bufio.Scanner; the default is 64 KiB.
func parseGoSSE(stream []byte, limit int, fn func(sse.Event)) error {
	var cfg *gosse.ReadConfig
	if limit > 0 {
		cfg = &gosse.ReadConfig{MaxEventSize: limit}
	}
	for ev, err := range gosse.Read(bytes.NewReader(stream), cfg) {
		if err != nil {
			return err
		}
		fn(sse.Event{ID: ev.LastEventID, Type: ev.Type, Data: ev.Data})
	}
	return nil
}

// parseR3Client measures r3labs' complete public parsing path: a Client
// whose http.Client serves the stream from memory (no network), and
// Client.SubscribeRaw. That runs EventStreamReader.ReadEvent (a
// bufio.Scanner that splits at blank lines), the unexported
// Client.processEvent (which splits the event into fields and copies
// ID/Data/Event into []byte), the LastEventID bookkeeping, and the hand-off
// of each event from r3labs' read goroutine to the handler over an
// unbuffered channel; plus one fake request per stream (a few
// microseconds). ClientMaxBufferSize bounds the scanner; the default is
// 64 KiB. The reconnect strategy is StopBackOff, so an error ends the call
// instead of retrying.
func parseR3Client(stream []byte, limit int, fn func(sse.Event)) error {
	opts := []func(*r3sse.Client){}
	if limit > 0 {
		opts = append(opts, r3sse.ClientMaxBufferSize(limit))
	}
	c := r3sse.NewClient("http://sse.invalid/events", opts...)
	c.Connection = &http.Client{Transport: memoryTransport(stream)}
	c.ReconnectStrategy = &backoff.StopBackOff{}
	return c.SubscribeRaw(func(ev *r3sse.Event) {
		fn(sse.Event{ID: string(ev.ID), Type: string(ev.Event), Data: string(ev.Data)})
	})
}

// memoryTransport answers every request with stream as an event stream.
type memoryTransport []byte

func (m memoryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	return &http.Response{
		Status:     "200 OK",
		StatusCode: http.StatusOK,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     http.Header{"Content-Type": {"text/event-stream"}},
		Body:       io.NopCloser(bytes.NewReader(m)),
		Request:    req,
	}, nil
}

// parseR3Reader measures only r3labs' NewEventStreamReader + ReadEvent: it
// finds where each event ends and returns its raw bytes, without splitting
// them into fields (that is processEvent, unexported). It is a lower bound
// on r3labs' parsing cost, not a complete parser: the fn call here gets the
// raw event block as Data, so only the event count is comparable.
func parseR3Reader(stream []byte, limit int, fn func(sse.Event)) error {
	if limit <= 0 {
		limit = 1 << 16 // what r3labs' NewClient uses
	}
	r := r3sse.NewEventStreamReader(bytes.NewReader(stream), limit)
	for {
		raw, err := r.ReadEvent()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		fn(sse.Event{Data: string(raw)})
	}
}

func BenchmarkParse(b *testing.B) {
	for _, spec := range ssebench.Specs() {
		var in *ssebench.Input // built once, for the first parser that runs
		for _, p := range parsers {
			b.Run(spec.Name+"/"+p.name, func(b *testing.B) {
				if in == nil {
					in = spec.Build()
				}
				benchParse(b, in, p)
			})
		}
	}
}

func benchParse(b *testing.B, in *ssebench.Input, p parser) {
	var n, total int
	count := func(ev sse.Event) {
		n++
		total += len(ev.Data)
	}
	check := func() error {
		if n != len(in.Events) {
			return fmt.Errorf("parsed %d events, want %d", n, len(in.Events))
		}
		if p.name != "r3labs-reader" && total != in.DataBytes {
			return fmt.Errorf("parsed %d data bytes, want %d", total, in.DataBytes)
		}
		return nil
	}
	// One untimed run: a library that cannot parse this input at all
	// skips, which is a finding, not a benchmark failure.
	if err := p.parse(in.Stream, maxEventSize, count); err != nil {
		b.Skipf("%s cannot parse %s events with a %d-byte limit: %v", p.name, in.Name, maxEventSize, err)
	}
	if err := check(); err != nil {
		b.Skipf("%s misparses %s events: %v", p.name, in.Name, err)
	}

	b.ReportAllocs()
	b.SetBytes(int64(len(in.Stream)))
	for b.Loop() {
		n, total = 0, 0
		if err := p.parse(in.Stream, maxEventSize, count); err != nil {
			b.Fatal(err)
		}
		if err := check(); err != nil {
			b.Fatal(err)
		}
	}
}

// TestSameEvents checks that the parsers being compared do the same work:
// on every input they return the same events (id, type, data) as sluice.
func TestSameEvents(t *testing.T) {
	for _, spec := range ssebench.Specs() {
		in := spec.Build()
		for _, p := range parsers {
			if p.name == "r3labs-reader" {
				continue // returns raw blocks, not events
			}
			var got []sse.Event
			if err := p.parse(in.Stream, maxEventSize, func(ev sse.Event) { got = append(got, ev) }); err != nil {
				t.Errorf("%s/%s: %v", in.Name, p.name, err)
				continue
			}
			if len(got) != len(in.Events) {
				t.Errorf("%s/%s: %d events, want %d", in.Name, p.name, len(got), len(in.Events))
				continue
			}
			for i, ev := range got {
				want := in.Events[i]
				if ev.ID != want.ID || ev.Type != want.Type || ev.Data != want.Data {
					t.Errorf("%s/%s: event %d differs: id %q type %q data %d bytes, want id %q type %q data %d bytes",
						in.Name, p.name, i, ev.ID, ev.Type, len(ev.Data), want.ID, want.Type, len(want.Data))
					break
				}
			}
		}
	}
}

// TestDefaultLimits records which inputs each library parses with its
// default limits (run with -v to see the table). It fails only if sluice,
// whose default is 16 MiB, cannot parse one.
func TestDefaultLimits(t *testing.T) {
	for _, spec := range ssebench.Specs() {
		in := spec.Build()
		for _, p := range parsers {
			n := 0
			err := p.parse(in.Stream, 0, func(sse.Event) { n++ })
			switch {
			case err != nil:
				t.Logf("%-16s %-14s default limit: FAILS after %d of %d events: %v", in.Name, p.name, n, len(in.Events), err)
			case n != len(in.Events):
				t.Logf("%-16s %-14s default limit: %d of %d events", in.Name, p.name, n, len(in.Events))
			default:
				t.Logf("%-16s %-14s default limit: ok", in.Name, p.name)
			}
			if p.name == "sluice" && (err != nil || n != len(in.Events)) {
				t.Errorf("sluice fails on %s with its default limit: %v", in.Name, err)
			}
		}
	}
}

// TestR3ClientErrorReturns makes sure parseR3Client returns the error of an
// event too large for the limit instead of reconnecting.
func TestR3ClientErrorReturns(t *testing.T) {
	big := ssebench.Make("big", 1, 1<<17, 0)
	err := parseR3Client(big.Stream, 1<<16, func(sse.Event) {})
	if err == nil || errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want a too-large error", err)
	}
}
