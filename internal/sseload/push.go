package sseload

import (
	"bufio"
	"bytes"
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
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/internal/stats"
	"github.com/sluicehq/sluice/sse"
)

// PushSummary is the JSON line "push" prints once every stream has
// received a config_changed event (or the timeout passed).
type PushSummary struct {
	Clients   int `json:"clients"`   // tokens in the file
	Connected int `json:"connected"` // received ": connected"
	// Received counts the streams that received a config_changed event.
	Received int `json:"received"`
	Failed   int `json:"failed"`  // never connected before the timeout
	Dropped  int `json:"dropped"` // connected, then ended before the event
	Retries  int `json:"retries"` // failed attempts that were retried
	// ConnectSeconds is the time until every stream was connected, that
	// is until "ready"; WaitSeconds the time from "ready" until the last
	// stream received the event.
	ConnectSeconds float64 `json:"connect_seconds"`
	WaitSeconds    float64 `json:"wait_seconds"`
	// Delays from the event's sent_at (the edge's clock) to the stream
	// reading it (this process's clock: the same machine's), in
	// milliseconds.
	P50ms      float64 `json:"p50_ms"`
	P99ms      float64 `json:"p99_ms"`
	Maxms      float64 `json:"max_ms"`
	FirstError string  `json:"first_error,omitempty"`
}

// pushCrowd is the state shared by the streams of runPush.
type pushCrowd struct {
	pool
	url      string
	received atomic.Int64
	delays   []time.Duration // guarded by mu
}

// runPush opens one push stream per agent token, prints "ready N", waits
// for a config_changed event on every stream, prints the summary and holds
// the streams until standard input closes.
func runPush(args []string) error {
	fs := flag.NewFlagSet("push", flag.ContinueOnError)
	addr := fs.String("addr", "", "the edge's address, HOST:PORT")
	tokensFile := fs.String("tokens", "", "file of agent token secrets, one a line; one stream per token")
	concurrency := fs.Int("concurrency", 200, "connection attempts in progress at once")
	timeout := fs.Duration("timeout", 120*time.Second, "how long connecting may take, and then how long waiting for the event may take")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *addr == "" || *tokensFile == "" {
		return errors.New("push: -addr and -tokens are required")
	}
	b, err := os.ReadFile(*tokensFile)
	if err != nil {
		return fmt.Errorf("push: %w", err)
	}
	var secrets []string
	for line := range strings.Lines(string(b)) {
		if s := strings.TrimSpace(line); s != "" {
			secrets = append(secrets, s)
		}
	}
	if len(secrets) == 0 {
		return fmt.Errorf("push: no tokens in %s", *tokensFile)
	}

	// ctx ends when standard input closes. The read is not joined: it
	// cannot be interrupted, and it ends with the process.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		io.Copy(io.Discard, os.Stdin)
		cancel()
	}()

	c := &pushCrowd{pool: newPool(*concurrency), url: "http://" + *addr + "/api/agent/push"}
	connCtx, connCancel := context.WithTimeout(ctx, *timeout)
	defer connCancel()
	start := time.Now()
	var settled, wg sync.WaitGroup // settled: connected or given up
	settled.Add(len(secrets))
	for _, secret := range secrets {
		wg.Go(func() { c.stream(connCtx, &settled, *addr, secret) })
	}
	settled.Wait()
	ready := time.Now()
	connected := c.connected.Load()
	fmt.Printf("ready %d\n", connected)

	wait := time.NewTimer(*timeout)
	defer wait.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for waiting := true; waiting && c.received.Load() < connected-c.dropped.Load(); {
		select {
		case <-tick.C:
		case <-wait.C:
			waiting = false
		case <-ctx.Done():
			waiting = false
		}
	}

	s := PushSummary{
		Clients:        len(secrets),
		Connected:      int(connected),
		Received:       int(c.received.Load()),
		Failed:         int(c.failed.Load()),
		Dropped:        int(c.dropped.Load()),
		Retries:        int(c.retries.Load()),
		ConnectSeconds: ready.Sub(start).Seconds(),
		WaitSeconds:    time.Since(ready).Seconds(),
	}
	c.mu.Lock()
	d := slices.Clone(c.delays)
	if c.firstErr != nil {
		s.FirstError = c.firstErr.Error()
	}
	c.mu.Unlock()
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	sum := stats.Summarize(d)
	s.P50ms, s.P99ms, s.Maxms = ms(sum.P50), ms(sum.P99), ms(sum.Max)
	out, _ := json.Marshal(s)
	fmt.Printf("%s\n", out)

	// Hold until standard input closes, then let go of every stream.
	<-ctx.Done()
	c.closeAll()
	wg.Wait()
	return nil
}

// stream connects one push stream, retrying with backoff until ctx ends,
// and then reads its events until the stream is closed.
func (c *pushCrowd) stream(ctx context.Context, settled *sync.WaitGroup, addr, secret string) {
	body, ok := c.connect(ctx, settled, func(ctx context.Context) (net.Conn, io.Reader, error) {
		return c.open(ctx, addr, secret)
	})
	if !ok {
		return
	}
	p := sse.NewParser(body, sse.ParserConfig{})
	got := false
	for {
		ev, err := p.Next()
		if err != nil {
			if !c.closing.Load() && !got {
				c.dropped.Add(1)
				c.noteErr(fmt.Errorf("stream ended before config_changed: %w", err))
			}
			return
		}
		now := time.Now()
		if ev.Type != "config_changed" || got {
			continue
		}
		var data struct {
			SentAt int64 `json:"sent_at"`
		}
		if err := json.Unmarshal([]byte(ev.Data), &data); err != nil || data.SentAt == 0 {
			c.noteErr(fmt.Errorf("config_changed data %q: no sent_at (%w)", ev.Data, err))
			continue
		}
		got = true
		c.mu.Lock()
		c.delays = append(c.delays, now.Sub(time.Unix(0, data.SentAt)))
		c.mu.Unlock()
		c.received.Add(1)
	}
}

// permanentError is an answer that retrying will not change, such as 401
// for a wrong token.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// open makes one attempt: it connects, sends the request, reads the
// response head and then the ": connected" comment. It returns the
// connection and the rest of the response body.
func (c *pushCrowd) open(ctx context.Context, addr, secret string) (net.Conn, io.Reader, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	// ctx ending interrupts the attempt.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	fail := func(err error) (net.Conn, io.Reader, error) {
		conn.Close()
		return nil, nil, err
	}
	req, err := http.NewRequest("GET", c.url, nil)
	if err != nil {
		return fail(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Authorization", "Bearer "+secret)
	if err := req.Write(conn); err != nil {
		return fail(fmt.Errorf("writing the request: %w", err))
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(conn, 1024), req)
	if err != nil {
		return fail(fmt.Errorf("reading the response: %w", err))
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		err := fmt.Errorf("status %d: %q", resp.StatusCode, b)
		if resp.StatusCode/100 == 4 && resp.StatusCode != http.StatusTooManyRequests {
			err = &permanentError{err}
		}
		return fail(err)
	}
	// The stream starts with ": connected" (nothing else comes first but
	// a retry field or blank lines).
	br := bufio.NewReaderSize(resp.Body, 512)
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return fail(fmt.Errorf("waiting for \": connected\": %w", err))
		}
		line = bytes.TrimRight(line, "\r\n")
		if string(line) == ": connected" {
			break
		}
		if len(line) > 0 && !bytes.HasPrefix(line, []byte("retry:")) {
			return fail(fmt.Errorf("the stream began with %q, not \": connected\"", line))
		}
	}
	if !stop() {
		return fail(ctx.Err())
	}
	conn.SetDeadline(time.Time{})
	return conn, br, nil
}
