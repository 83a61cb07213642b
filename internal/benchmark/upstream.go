package benchmark

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/sse"
)

// smallBody is the answer to GET /small: 100 bytes.
var smallBody = []byte("sluice bench: a small response of exactly one hundred bytes, to measure per-request costs only....\n")

// upstream is the in-process origin server every target fronts:
//
//	GET  /download?n=N  N bytes (Content-Length set), written 64 KiB at a time
//	POST /upload        counts the body and answers the count
//	GET  /small         smallBody
//	GET  /sse           an event stream fed by the publisher
//	GET  /sse?idle=1    an event stream that gets one "hello" event and then nothing
type upstream struct {
	srv  *http.Server
	port int
	data []byte // pseudo-random bytes the download repeats
	pub  publisher

	sseOpen  atomic.Int64 // /sse streams open now
	idleOpen atomic.Int64 // /sse?idle=1 streams open now
	written  atomic.Int64 // bytes of /download written so far, all requests
	done     chan struct{}
}

func startUpstream() (*upstream, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("upstream: %w", err)
	}
	u := &upstream{port: ln.Addr().(*net.TCPAddr).Port, done: make(chan struct{})}
	u.pub.subs = map[*subscriber]struct{}{}
	u.data = make([]byte, 64<<10)
	r := rand.New(rand.NewChaCha8([32]byte{'s', 'l', 'u', 'i', 'c', 'e'}))
	for i := range u.data {
		u.data[i] = byte(r.Uint32())
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /download", u.download)
	mux.HandleFunc("POST /upload", u.upload)
	mux.HandleFunc("GET /small", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Content-Length", strconv.Itoa(len(smallBody)))
		w.Write(smallBody)
	})
	mux.HandleFunc("GET /sse", u.events)
	u.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 30 * time.Second}
	go func() {
		defer close(u.done)
		u.srv.Serve(ln)
	}()
	return u, nil
}

func (u *upstream) close() {
	u.srv.Close()
	<-u.done
}

func (u *upstream) download(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
	if err != nil || n < 0 {
		http.Error(w, "want /download?n=BYTES", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	for n > 0 {
		m := min(n, int64(len(u.data)))
		k, err := w.Write(u.data[:m])
		u.written.Add(int64(k))
		if err != nil {
			return
		}
		n -= m
	}
}

func (u *upstream) upload(w http.ResponseWriter, r *http.Request) {
	buf := make([]byte, 64<<10)
	var n int64
	for {
		m, err := r.Body.Read(buf)
		n += int64(m)
		if err == io.EOF {
			break
		}
		if err != nil {
			http.Error(w, fmt.Sprintf("reading the body after %d bytes: %v", n, err), http.StatusBadRequest)
			return
		}
	}
	w.Header().Set("Content-Type", "text/plain")
	io.WriteString(w, strconv.FormatInt(n, 10))
}

// events serves /sse. The stream is registered with the publisher (unless
// idle) before its "hello" event is sent, so a client that has read hello
// is sure to get every round that starts afterwards. The handler returns
// when the client goes away.
func (u *upstream) events(w http.ResponseWriter, r *http.Request) {
	s, err := sse.NewStream(w, r, sse.StreamConfig{})
	if err != nil {
		return
	}
	defer s.Close()
	if r.URL.Query().Get("idle") != "" {
		u.idleOpen.Add(1)
		defer u.idleOpen.Add(-1)
	} else {
		u.sseOpen.Add(1)
		defer u.sseOpen.Add(-1)
		sub := &subscriber{s: s}
		u.pub.add(sub)
		defer u.pub.remove(sub)
	}
	if err := s.Send(r.Context(), sse.Event{Type: "hello", Data: "hello"}); err != nil {
		return
	}
	<-s.Done()
}

// waitOpen waits until the counter reads want, or timeout.
func waitCount(c *atomic.Int64, want int64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		got := c.Load()
		if got == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the upstream holds %d streams, want %d", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// paceSlots is how many groups a round's sends are spread over.
const paceSlots = 20

// publisher sends the timestamped events of the SSE runs.
type publisher struct {
	mu   sync.Mutex
	subs map[*subscriber]struct{}
}

type subscriber struct {
	s   *sse.Stream
	seq int64 // ticks sent to this stream in the current run
}

func (p *publisher) add(s *subscriber) {
	p.mu.Lock()
	p.subs[s] = struct{}{}
	p.mu.Unlock()
}

func (p *publisher) remove(s *subscriber) {
	p.mu.Lock()
	delete(p.subs, s)
	p.mu.Unlock()
}

// run sends, every interval for dur, one "tick" event to every stream open
// at its start: id is the stream's sequence number from 1, data the send
// time in Unix nanoseconds, taken just before the event is queued. The
// sends of a round are spread over the interval, in up to paceSlots
// groups, as independent streams would be, rather than all at once: a
// burst of thousands of sends would measure the benchmark's own queueing
// more than the proxy's delay. Then it sends each stream an "end" event
// whose data is the number of ticks that stream was sent. It returns the
// rounds sent and the time of the last tick. A stream that ends during the
// run is an error: no client leaves before it has read "end".
func (p *publisher) run(ctx context.Context, interval, dur time.Duration) (rounds int64, last time.Time, err error) {
	p.mu.Lock()
	subs := make([]*subscriber, 0, len(p.subs))
	for s := range p.subs {
		s.seq = 0
		subs = append(subs, s)
	}
	p.mu.Unlock()
	if len(subs) == 0 {
		return 0, time.Time{}, errors.New("publisher: no stream to publish to")
	}
	slots := min(len(subs), paceSlots)
	tick := time.NewTicker(interval / time.Duration(slots))
	defer tick.Stop()
	start := time.Now()
	var stamp []byte
	for time.Since(start) < dur {
		rounds++
		for slot := 0; slot < slots; slot++ {
			select {
			case <-ctx.Done():
				return rounds, last, ctx.Err()
			case <-tick.C:
			}
			for _, s := range subs[slot*len(subs)/slots : (slot+1)*len(subs)/slots] {
				s.seq++
				last = time.Now()
				stamp = strconv.AppendInt(stamp[:0], last.UnixNano(), 10)
				if err := s.s.Send(ctx, sse.Event{Type: "tick", ID: strconv.FormatInt(s.seq, 10), Data: string(stamp)}); err != nil {
					return rounds, last, fmt.Errorf("publisher: a stream ended during the run, after %d events: %w", s.seq, err)
				}
			}
		}
	}
	for _, s := range subs {
		if err := s.s.Send(ctx, sse.Event{Type: "end", Data: strconv.FormatInt(s.seq, 10)}); err != nil {
			return rounds, last, fmt.Errorf("publisher: a stream ended before its end event: %w", err)
		}
	}
	return rounds, last, nil
}
