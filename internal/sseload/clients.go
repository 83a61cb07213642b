package sseload

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/internal/stats"
	"github.com/sluicehq/sluice/sse"
)

// Summary is the JSON line "clients" prints once every stream is connected
// and has received a fresh event (or the timeout passed).
type Summary struct {
	Streams   int `json:"streams"`   // asked for
	Connected int `json:"connected"` // got 200 and headers
	Failed    int `json:"failed"`    // never connected before the timeout
	Dropped   int `json:"dropped"`   // connected, then ended
	Retries   int `json:"retries"`   // failed attempts that were retried
	// Fresh counts the streams that received an event sent after the last
	// stream connected.
	Fresh          int     `json:"fresh"`
	MinEvents      int64   `json:"min_events"` // fewest events on one stream
	TotalEvents    int64   `json:"total_events"`
	ConnectSeconds float64 `json:"connect_seconds"` // until the last stream connected
	// FreshSeconds is the time from the last connection to the last stream
	// receiving a fresh event.
	FreshSeconds float64 `json:"fresh_seconds"`
	// Delivery of the fresh events, from the upstream's publish to the
	// client's read, in milliseconds.
	DeliveryP50ms float64 `json:"delivery_p50_ms"`
	DeliveryP99ms float64 `json:"delivery_p99_ms"`
	DeliveryMaxms float64 `json:"delivery_max_ms"`
	FirstError    string  `json:"first_error,omitempty"`
}

// crowd is the state shared by the streams of runClients.
type crowd struct {
	pool
	addr, host, path string
	fresh            atomic.Int64
	allAt            atomic.Int64    // UnixNano when the last stream connected; 0 before
	delivery         []time.Duration // guarded by mu
}

// runClients opens the streams, prints the summary and holds the streams
// until standard input closes.
func runClients(args []string) error {
	fs := flag.NewFlagSet("clients", flag.ContinueOnError)
	addr := fs.String("addr", "", "address to connect to (the edge)")
	host := fs.String("host", "", "Host header of the requests")
	path := fs.String("path", "/events", "path of the event stream")
	n := fs.Int("n", 10000, "number of streams")
	concurrency := fs.Int("concurrency", 200, "connection attempts in progress at once")
	timeout := fs.Duration("timeout", 90*time.Second, "how long connecting and waiting for fresh events may take")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *addr == "" || *host == "" {
		return errors.New("clients: -addr and -host are required")
	}
	c := &crowd{pool: newPool(*concurrency), addr: *addr, host: *host, path: *path}
	events := make([]atomic.Int64, *n)

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	start := time.Now()
	var settled, wg sync.WaitGroup // settled: connected or given up
	settled.Add(*n)
	for i := range *n {
		wg.Go(func() { c.stream(ctx, &settled, &events[i]) })
	}
	settled.Wait()
	allAt := time.Now()
	c.allAt.Store(allAt.UnixNano())
	connected := c.connected.Load()
	for c.fresh.Load() < connected-c.dropped.Load() && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}

	s := Summary{
		Streams:        *n,
		Connected:      int(connected),
		Failed:         int(c.failed.Load()),
		Dropped:        int(c.dropped.Load()),
		Retries:        int(c.retries.Load()),
		Fresh:          int(c.fresh.Load()),
		MinEvents:      -1,
		ConnectSeconds: allAt.Sub(start).Seconds(),
		FreshSeconds:   time.Since(allAt).Seconds(),
	}
	for i := range events {
		v := events[i].Load()
		s.TotalEvents += v
		if s.MinEvents < 0 || v < s.MinEvents {
			s.MinEvents = v
		}
	}
	c.mu.Lock()
	d := slices.Clone(c.delivery)
	if c.firstErr != nil {
		s.FirstError = c.firstErr.Error()
	}
	c.mu.Unlock()
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	sum := stats.Summarize(d)
	s.DeliveryP50ms, s.DeliveryP99ms, s.DeliveryMaxms = ms(sum.P50), ms(sum.P99), ms(sum.Max)
	out, _ := json.Marshal(s)
	fmt.Printf("%s\n", out)

	// Hold until standard input closes, then let go of every stream.
	io.Copy(io.Discard, os.Stdin)
	cancel()
	c.closeAll()
	wg.Wait()
	return nil
}

// stream connects one stream, retrying until ctx ends, and reads its events
// until it is closed.
func (c *crowd) stream(ctx context.Context, settled *sync.WaitGroup, events *atomic.Int64) {
	body, ok := c.connect(ctx, settled, c.open)
	if !ok {
		return
	}
	p := sse.NewParser(body, sse.ParserConfig{})
	gotFresh := false
	for {
		ev, err := p.Next()
		if err != nil {
			if !c.closing.Load() {
				c.dropped.Add(1)
				c.noteErr(fmt.Errorf("stream ended after %d events: %w", events.Load(), err))
			}
			return
		}
		now := time.Now()
		events.Add(1)
		sent, err := strconv.ParseInt(ev.Data, 10, 64)
		if err != nil {
			c.noteErr(fmt.Errorf("event data %q: %w", ev.Data, err))
			continue
		}
		if all := c.allAt.Load(); all != 0 && sent >= all && !gotFresh {
			gotFresh = true
			c.mu.Lock()
			c.delivery = append(c.delivery, now.Sub(time.Unix(0, sent)))
			c.mu.Unlock()
			c.fresh.Add(1)
		}
	}
}

// open makes one attempt: it connects, sends the request and reads the
// response head. It returns the connection and the response body.
func (c *crowd) open(ctx context.Context) (net.Conn, io.Reader, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return nil, nil, err
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	req, err := http.NewRequest("GET", "http://"+c.host+c.path, nil)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	if err := req.Write(conn); err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("writing the request: %w", err)
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(conn, 1024), req)
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("reading the response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		conn.Close()
		return nil, nil, fmt.Errorf("status %d: %q", resp.StatusCode, b)
	}
	conn.SetDeadline(time.Time{})
	return conn, resp.Body, nil
}
