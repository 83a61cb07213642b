package sse

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

func publishN(t *testing.T, h *Hub, topic string, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		if _, err := h.Publish(topic, Event{Data: fmt.Sprint("e", i)}); err != nil {
			t.Fatal(err)
		}
	}
}

func nextData(t *testing.T, s *Subscription, n int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var out []string
	for range n {
		ev, err := s.Next(ctx)
		if err != nil {
			t.Fatalf("after %v: %v", out, err)
		}
		out = append(out, ev.Data)
	}
	return out
}

func TestHubReplay(t *testing.T) {
	t.Parallel()
	h := NewHub(HubConfig{HistorySize: 5})
	defer h.Close()
	publishN(t, h, "other", 1, 2)

	cases := []struct {
		name   string
		lastID string
		want   string
		gap    bool
	}{
		{"no id replays nothing", "", "", false},
		{"known id replays the rest", "6", "e7 e8", false},
		{"newest id replays nothing", "8", "", false},
		{"oldest kept id", "4", "e5 e6 e7 e8", false},
		{"expired id replays all kept", "2", "e4 e5 e6 e7 e8", true},
		{"unknown id replays all kept", "nope", "e4 e5 e6 e7 e8", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			topic := "topic " + c.name
			publishN(t, h, topic, 1, 8) // history keeps e4..e8 (ids 4..8)
			s, err := h.Subscribe(topic, c.lastID)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if s.Gap() != c.gap {
				t.Errorf("Gap = %v, want %v", s.Gap(), c.gap)
			}
			n := len(strings.Fields(c.want))
			got := strings.Join(nextData(t, s, n), " ")
			if got != c.want {
				t.Fatalf("replay = %q, want %q", got, c.want)
			}
			// Then live events, with nothing in between.
			if _, err := h.Publish(topic, Event{Data: "live"}); err != nil {
				t.Fatal(err)
			}
			if got := nextData(t, s, 1); got[0] != "live" {
				t.Fatalf("live = %q", got)
			}
		})
	}
}

func TestHubHistoryBounds(t *testing.T) {
	t.Parallel()
	t.Run("bytes", func(t *testing.T) {
		h := NewHub(HubConfig{HistoryBytes: 100})
		defer h.Close()
		for i := range 50 {
			h.Publish("t", Event{Data: strings.Repeat("x", 20) + fmt.Sprint(i)})
		}
		s, _ := h.Subscribe("t", "x")
		defer s.Close()
		if n := len(s.replay); n == 0 || n > 3 {
			t.Fatalf("history holds %d events of ~40 bytes under a 100-byte bound", n)
		}
	})
	t.Run("ttl", func(t *testing.T) {
		h := NewHub(HubConfig{HistoryTTL: 50 * time.Millisecond})
		defer h.Close()
		publishN(t, h, "t", 1, 3)
		time.Sleep(120 * time.Millisecond)
		s, _ := h.Subscribe("t", "1")
		defer s.Close()
		if !s.Gap() || len(s.replay) != 0 {
			t.Fatalf("expired history: gap=%v replay=%d", s.Gap(), len(s.replay))
		}
	})
	t.Run("none", func(t *testing.T) {
		h := NewHub(HubConfig{HistorySize: -1})
		defer h.Close()
		publishN(t, h, "t", 1, 3)
		s, _ := h.Subscribe("t", "1")
		defer s.Close()
		if len(s.replay) != 0 {
			t.Fatal("history kept with HistorySize < 0")
		}
	})
}

func TestHubSlowSubscriberDropped(t *testing.T) {
	t.Parallel()
	h := NewHub(HubConfig{SubscriberBuffer: 4})
	defer h.Close()
	slow, _ := h.Subscribe("t", "")
	defer slow.Close()
	fast, _ := h.Subscribe("t", "")
	defer fast.Close()

	// The fast one reads each event before the next is published; the
	// slow one never reads, and publishing must not wait for it.
	for i := 1; i <= 100; i++ {
		if _, err := h.Publish("t", Event{Data: fmt.Sprint("e", i)}); err != nil {
			t.Fatal(err)
		}
		if got := nextData(t, fast, 1); got[0] != fmt.Sprint("e", i) {
			t.Fatalf("fast subscriber got %q", got)
		}
	}
	// The slow one gets what was buffered, then the reason.
	n := 0
	for {
		_, err := slow.Next(context.Background())
		if err != nil {
			if !errors.Is(err, ErrSlowSubscriber) {
				t.Fatalf("err = %v, want ErrSlowSubscriber", err)
			}
			break
		}
		n++
	}
	if n != 4 {
		t.Fatalf("slow subscriber got %d buffered events, want 4", n)
	}
}

func TestHubCloseEndsEverything(t *testing.T) {
	t.Parallel()
	h := NewHub(HubConfig{})
	s, _ := h.Subscribe("t", "")
	errc := make(chan error)
	go func() {
		_, err := s.Next(context.Background())
		errc <- err
	}()
	h.Close()
	h.Close() // idempotent
	if err := <-errc; !errors.Is(err, ErrHubClosed) {
		t.Fatalf("Next = %v", err)
	}
	if _, err := h.Publish("t", Event{Data: "x"}); !errors.Is(err, ErrHubClosed) {
		t.Fatalf("Publish = %v", err)
	}
	if _, err := h.Subscribe("t", ""); !errors.Is(err, ErrHubClosed) {
		t.Fatalf("Subscribe = %v", err)
	}
	s.Close()
}

func TestSubscriptionClose(t *testing.T) {
	t.Parallel()
	h := NewHub(HubConfig{})
	defer h.Close()
	s, _ := h.Subscribe("t", "")
	s.Close()
	s.Close()
	if _, err := s.Next(context.Background()); !errors.Is(err, ErrUnsubscribed) {
		t.Fatalf("Next = %v", err)
	}
	if _, err := h.Publish("t", Event{Data: "x"}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s2, _ := h.Subscribe("t", "")
	defer s2.Close()
	if _, err := s2.Next(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Next with cancelled ctx = %v", err)
	}
}

// Over real HTTP: a client that loses its connection reconnects with
// Last-Event-ID and receives exactly the events it missed, then live ones.
func TestHubHandlerReplayAfterReconnect(t *testing.T) {
	t.Parallel()
	h := NewHub(HubConfig{})
	var mu sync.Mutex
	var lastIDs []string
	handler := h.Handler(func(*http.Request) string { return "feed" })
	release := make(chan struct{})
	srv := newServer(t, release, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		lastIDs = append(lastIDs, r.Header.Get("Last-Event-ID"))
		mu.Unlock()
		handler.ServeHTTP(w, r)
	})
	defer h.Close() // runs before the server's cleanup: ends the streams

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := mustClient(t, srv.URL, ClientConfig{Retry: 50 * time.Millisecond})
	events := make(chan Event)
	go func() {
		defer close(events)
		for ev, err := range c.Events(ctx) {
			if err != nil {
				return
			}
			events <- ev
		}
	}()
	defer func() {
		cancel()
		for range events {
		}
	}()
	recv := func(want string) {
		t.Helper()
		select {
		case ev := <-events:
			if ev.Data != want {
				t.Fatalf("got %q (id %s), want %q", ev.Data, ev.ID, want)
			}
		case <-ctx.Done():
			t.Fatalf("no event, want %q", want)
		}
	}
	waitRequests := func(n int) {
		t.Helper()
		for ctx.Err() == nil {
			mu.Lock()
			got := len(lastIDs)
			mu.Unlock()
			if got >= n {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatalf("no request %d", n)
	}
	waitRequests(1)
	publishN(t, h, "feed", 1, 3)
	recv("e1")
	recv("e2")
	recv("e3")

	srv.CloseClientConnections()
	publishN(t, h, "feed", 4, 6) // while the client is away (or leaving)
	waitRequests(2)
	recv("e4")
	recv("e5")
	recv("e6")
	publishN(t, h, "feed", 7, 7)
	recv("e7")
	select {
	case ev := <-events:
		t.Fatalf("extra event %q", ev.Data)
	case <-time.After(100 * time.Millisecond):
	}
	mu.Lock()
	defer mu.Unlock()
	if lastIDs[0] != "" || lastIDs[1] != "3" {
		t.Fatalf("Last-Event-ID headers = %q, want \"\" then \"3\"", lastIDs)
	}
}

// A client that does not read is disconnected; the others get everything.
func TestHubHandlerSlowClient(t *testing.T) {
	t.Parallel()
	h := NewHub(HubConfig{Stream: StreamConfig{BufferSize: 1 << 20}})
	srv := newServer(t, make(chan struct{}), h.Handler(func(*http.Request) string { return "t" }).ServeHTTP)
	defer h.Close()

	stalled := stalledClient(t, srv.URL)
	defer stalled.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := mustClient(t, srv.URL, ClientConfig{NoReconnect: true})
	got := make(chan int) // the reading client's count after each event
	connected := make(chan struct{})
	c.cfg.OnConnect = func(*http.Response) { close(connected) }
	go func() {
		defer close(got)
		n := 0
		for _, err := range c.Events(ctx) {
			if err != nil {
				t.Logf("reading client: %v", err)
				return
			}
			n++
			got <- n
			if n == 400 {
				return
			}
		}
	}()
	<-connected
	time.Sleep(50 * time.Millisecond) // let the stalled request subscribe too
	big := strings.Repeat("y", 64<<10)
	// The publisher goes at the pace of the reading client; the stalled
	// one falls behind by the whole 25 MiB.
	for i := range 400 {
		if _, err := h.Publish("t", Event{Data: fmt.Sprint(i, big)}); err != nil {
			t.Fatal(err)
		}
		if n := <-got; n != i+1 {
			t.Fatalf("reading client got %d events, want %d", n, i+1)
		}
	}
	// The stalled client's connection was closed by the hub: reading
	// what the socket holds ends in EOF, short of 400 events.
	stalled.SetReadDeadline(time.Now().Add(10 * time.Second))
	p := NewParser(stalled, ParserConfig{})
	n := 0
	for {
		if _, err := p.Next(); err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatalf("stalled client: %v after %d events (want EOF: disconnected)", err, n)
			}
			break
		}
		n++
	}
	if n >= 400 {
		t.Fatalf("stalled client got all %d events", n)
	}
}
