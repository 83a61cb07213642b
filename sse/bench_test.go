package sse_test

// Benchmarks for the sse package. They run only with -bench, for example
//
//	go test -run XXX -bench . -benchmem ./sse/
//
// The inputs come from sse/internal/ssebench, which sse/bench/ssecompare uses
// too to run the same parse benchmark on other SSE libraries.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/sse"
	"github.com/sluicehq/sluice/sse/internal/ssebench"
)

func BenchmarkParse(b *testing.B) {
	for _, spec := range ssebench.Specs() {
		b.Run(spec.Name, func(b *testing.B) {
			in := spec.Build()
			b.ReportAllocs()
			b.SetBytes(int64(len(in.Stream)))
			r := bytes.NewReader(in.Stream)
			for b.Loop() {
				r.Reset(in.Stream)
				p := sse.NewParser(r, sse.ParserConfig{})
				n, total := 0, 0
				for {
					ev, err := p.Next()
					if err == io.EOF {
						break
					}
					if err != nil {
						b.Fatalf("event %d: %v", n, err)
					}
					n++
					total += len(ev.Data)
				}
				if n != len(in.Events) || total != in.DataBytes {
					b.Fatalf("parsed %d events with %d data bytes, want %d with %d", n, total, len(in.Events), in.DataBytes)
				}
			}
		})
	}
}

// BenchmarkParseLineEndings parses the same events with LF, CRLF and CR line
// ends: small events alone, and small events after one 1 MiB event (which
// grows the parser's buffer). All three are valid; a CR-only stream should
// not be much slower than an LF one.
func BenchmarkParseLineEndings(b *testing.B) {
	for _, big := range []bool{false, true} {
		for _, eol := range []struct{ name, s string }{{"LF", "\n"}, {"CRLF", "\r\n"}, {"CR", "\r"}} {
			name := "small/" + eol.name
			if big {
				name = "small-after-1MiB/" + eol.name
			}
			b.Run(name, func(b *testing.B) {
				in := ssebench.Make(name, 20000, 60, 0)
				stream := in.Stream
				want := len(in.Events)
				if big {
					stream = append([]byte("data: "+strings.Repeat("x", 1<<20)+"\n\n"), stream...)
					want++
				}
				stream = bytes.ReplaceAll(stream, []byte("\n"), []byte(eol.s))
				b.ReportAllocs()
				b.SetBytes(int64(len(stream)))
				r := bytes.NewReader(stream)
				for b.Loop() {
					r.Reset(stream)
					p := sse.NewParser(r, sse.ParserConfig{})
					n := 0
					for {
						_, err := p.Next()
						if err == io.EOF {
							break
						}
						if err != nil {
							b.Fatalf("event %d: %v", n, err)
						}
						n++
					}
					if n != want {
						b.Fatalf("parsed %d events, want %d", n, want)
					}
				}
			})
		}
	}
}

func BenchmarkEncode(b *testing.B) {
	for _, spec := range ssebench.Specs() {
		b.Run(spec.Name, func(b *testing.B) {
			in := spec.Build()
			// The encoder must produce exactly the stream the parse
			// benchmark reads.
			var all []byte
			for _, ev := range in.Events {
				var err error
				if all, err = sse.AppendEvent(all, ev); err != nil {
					b.Fatal(err)
				}
			}
			if !bytes.Equal(all, in.Stream) {
				b.Fatal("AppendEvent output differs from the benchmark stream")
			}

			b.ReportAllocs()
			b.SetBytes(int64(len(in.Stream)))
			var buf []byte
			for b.Loop() {
				n := 0
				for _, ev := range in.Events {
					var err error
					if buf, err = sse.AppendEvent(buf[:0], ev); err != nil {
						b.Fatal(err)
					}
					n += len(buf)
				}
				if n != len(in.Stream) {
					b.Fatalf("encoded %d bytes, want %d", n, len(in.Stream))
				}
			}
		})
	}
}

// BenchmarkHubFanout measures publish→all-received through a Hub with 10,000
// subscribers on one topic, each drained by its own goroutine. One operation
// publishes a batch of events and waits until every subscriber has received
// every event of the batch. The batch is at most the subscriber buffer, so no
// subscriber can be dropped; a drop fails the benchmark.
//
// Metrics: events/s (published and fully delivered), deliveries/s (events/s
// times subscribers) and publish-ns/event (the time spent inside Publish,
// which holds the topic lock while it hands the event to every subscriber).
func BenchmarkHubFanout(b *testing.B) {
	for _, batch := range []int{1, 64} {
		b.Run(fmt.Sprintf("subs=10000/batch=%d", batch), func(b *testing.B) {
			benchHubFanout(b, 10000, batch)
		})
	}
}

func benchHubFanout(b *testing.B, subs, batch int) {
	hub := sse.NewHub(sse.HubConfig{SubscriberBuffer: 256})
	if batch > 256 {
		b.Fatal("batch larger than the subscriber buffer")
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		hub.Close()
		cancel()
		wg.Wait()
	}()

	var remaining atomic.Int64 // subscribers still missing part of the batch
	batchDone := make(chan struct{}, 1)
	failed := make(chan error, 1)
	for range subs {
		sub, err := hub.Subscribe("t", "")
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer sub.Close()
			got := 0
			for {
				if _, err := sub.Next(ctx); err != nil {
					if !errors.Is(err, sse.ErrHubClosed) && ctx.Err() == nil {
						select {
						case failed <- err:
						default:
						}
					}
					return
				}
				got++
				if got%batch == 0 && remaining.Add(-1) == 0 {
					batchDone <- struct{}{}
				}
			}
		}()
	}

	ev := sse.Event{Type: "tick", Data: strings.Repeat("x", 60)}
	b.ReportAllocs()
	var publishing time.Duration
	ops := 0
	for b.Loop() {
		remaining.Store(int64(subs))
		start := time.Now()
		for range batch {
			if _, err := hub.Publish("t", ev); err != nil {
				b.Fatal(err)
			}
		}
		publishing += time.Since(start)
		select {
		case <-batchDone:
		case err := <-failed:
			b.Fatalf("a subscriber ended: %v", err)
		}
		ops++
	}
	events := float64(ops * batch)
	sec := b.Elapsed().Seconds()
	b.ReportMetric(events/sec, "events/s")
	b.ReportMetric(events*float64(subs)/sec, "deliveries/s")
	b.ReportMetric(float64(publishing.Nanoseconds())/events, "publish-ns/event")
}

// memNow returns the live heap and the goroutine stacks in use after full
// collections. Two of them, because sync.Pool keeps objects through one GC
// (net/http pools its bufio buffers): a pool filled by an earlier iteration
// would otherwise be counted in the baseline and then reused for free.
func memNow() (heap, stack int64) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc), int64(ms.StackInuse)
}

// BenchmarkIdleSubscriberMemory measures what an idle subscriber costs:
//
//   - hub: a Subscription alone (no goroutine), live heap only.
//   - hub+goroutine: a Subscription with a goroutine blocked in Next, the
//     usual way to consume one: live heap plus goroutine stacks.
//   - http: a client connected to Hub.Handler through a real loopback
//     httptest server, having received one replayed and one live event.
//     Live heap plus stacks of the whole process, so it includes the client
//     side; the clients are bare net.Conns with no goroutine and no buffer,
//     whose cost tcp-baseline estimates.
//   - tcp-baseline: a bare loopback TCP connection pair with no goroutine on
//     either side (both ends' net.Conn). Half of it is roughly the client
//     side included in http.
//
// ns/op is the time to set up and tear down all the subscribers once.
func BenchmarkIdleSubscriberMemory(b *testing.B) {
	b.Run("hub/subs=10000", func(b *testing.B) { benchIdleHub(b, 10000, false) })
	b.Run("hub+goroutine/subs=10000", func(b *testing.B) { benchIdleHub(b, 10000, true) })
	b.Run("http/conns=1000", func(b *testing.B) { benchIdleHTTP(b, 1000) })
	b.Run("tcp-baseline/conns=1000", func(b *testing.B) { benchIdleTCP(b, 1000) })
}

func benchIdleHub(b *testing.B, n int, withGoroutine bool) {
	b.ReportAllocs()
	var heapSum, stackSum int64
	runs := 0
	for b.Loop() {
		hub := sse.NewHub(sse.HubConfig{})
		subs := make([]*sse.Subscription, 0, n)
		ctx, cancel := context.WithCancel(context.Background())
		var started, exited sync.WaitGroup

		heap0, stack0 := memNow()
		for range n {
			sub, err := hub.Subscribe("t", "")
			if err != nil {
				b.Fatal(err)
			}
			subs = append(subs, sub)
			if withGoroutine {
				started.Add(1)
				exited.Add(1)
				go func() {
					defer exited.Done()
					started.Done()
					_, _ = sub.Next(ctx)
				}()
			}
		}
		started.Wait()
		heap1, stack1 := memNow()
		heapSum += heap1 - heap0
		stackSum += stack1 - stack0
		runs++

		runtime.KeepAlive(subs)
		hub.Close()
		cancel()
		exited.Wait()
	}
	per := float64(runs * n)
	b.ReportMetric(float64(heapSum)/per, "heap-B/sub")
	b.ReportMetric(float64(stackSum)/per, "stack-B/sub")
	b.ReportMetric(float64(heapSum+stackSum)/per, "B/sub")
}

func benchIdleHTTP(b *testing.B, n int) {
	b.ReportAllocs()
	var heapSum, stackSum int64
	runs := 0
	for b.Loop() {
		hub := sse.NewHub(sse.HubConfig{})
		// An event published before anyone connects: clients send an
		// unknown Last-Event-ID and get the whole history replayed, which
		// is done under the same lock as the subscription, so a client
		// that has read it is known to be subscribed (or about to be,
		// before the next Publish can run).
		if _, err := hub.Publish("t", sse.Event{Data: "warm"}); err != nil {
			b.Fatal(err)
		}
		srv := httptest.NewServer(hub.Handler(func(*http.Request) string { return "t" }))
		conns := make([]net.Conn, 0, n)

		heap0, stack0 := memNow()
		addr := srv.Listener.Addr().String()
		req := "GET /events HTTP/1.1\r\nHost: " + addr + "\r\nAccept: text/event-stream\r\nLast-Event-ID: unknown\r\n\r\n"
		for range n {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			conns = append(conns, c)
			if _, err := io.WriteString(c, req); err != nil {
				b.Fatal(err)
			}
		}
		for _, c := range conns {
			if err := readUntil(c, "data: warm"); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := hub.Publish("t", sse.Event{Data: "live"}); err != nil {
			b.Fatal(err)
		}
		for _, c := range conns {
			if err := readUntil(c, "data: live"); err != nil {
				b.Fatal(err)
			}
		}
		heap1, stack1 := memNow()
		heapSum += heap1 - heap0
		stackSum += stack1 - stack0
		runs++

		for _, c := range conns {
			c.Close()
		}
		srv.Close() // waits for the handlers to return
		hub.Close()
	}
	per := float64(runs * n)
	b.ReportMetric(float64(heapSum)/per, "heap-B/conn")
	b.ReportMetric(float64(stackSum)/per, "stack-B/conn")
	b.ReportMetric(float64(heapSum+stackSum)/per, "B/conn")
}

// readUntil reads from c until it has seen marker, with a deadline so that a
// lost event fails the benchmark instead of hanging it.
func readUntil(c net.Conn, marker string) error {
	if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return err
	}
	var acc []byte
	buf := make([]byte, 512)
	for !bytes.Contains(acc, []byte(marker)) {
		n, err := c.Read(buf)
		acc = append(acc, buf[:n]...)
		if err != nil {
			return fmt.Errorf("reading %q: %w (got %q)", marker, err, acc)
		}
	}
	return c.SetReadDeadline(time.Time{})
}

func benchIdleTCP(b *testing.B, n int) {
	b.ReportAllocs()
	var heapSum, stackSum int64
	runs := 0
	for b.Loop() {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		accepted := make(chan net.Conn, n)
		acceptDone := make(chan struct{})
		go func() {
			defer close(acceptDone)
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				accepted <- c
			}
		}()
		clients := make([]net.Conn, 0, n)
		servers := make([]net.Conn, 0, n)

		heap0, stack0 := memNow()
		for range n {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			clients = append(clients, c)
			servers = append(servers, <-accepted)
		}
		heap1, stack1 := memNow()
		heapSum += heap1 - heap0
		stackSum += stack1 - stack0
		runs++

		ln.Close()
		<-acceptDone
		for i := range clients {
			clients[i].Close()
			servers[i].Close()
		}
	}
	per := float64(runs * n)
	b.ReportMetric(float64(heapSum)/per, "heap-B/pair")
	b.ReportMetric(float64(stackSum)/per, "stack-B/pair")
	b.ReportMetric(float64(heapSum+stackSum)/per, "B/pair")
}
