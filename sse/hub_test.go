package sse

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// publishN publishes events "e<from>" to "e<to>" and returns their IDs.
func publishN(t *testing.T, h *Hub, topic string, from, to int) []string {
	t.Helper()
	var ids []string
	for i := from; i <= to; i++ {
		e, err := h.Publish(topic, Event{Data: fmt.Sprint("e", i)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, e.ID)
	}
	return ids
}

func nextData(t *testing.T, s *Subscription, n int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
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
		name string
		last int // the event whose ID is sent, 0 for none, -1 for an unknown one
		want string
		gap  bool
	}{
		{"no id replays nothing", 0, "", false},
		{"known id replays the rest", 6, "e7 e8", false},
		{"newest id replays nothing", 8, "", false},
		{"oldest kept id", 4, "e5 e6 e7 e8", false},
		{"expired id replays all kept", 2, "e4 e5 e6 e7 e8", true},
		{"unknown id replays all kept", -1, "e4 e5 e6 e7 e8", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			topic := "topic " + c.name
			ids := publishN(t, h, topic, 1, 8) // history keeps e4..e8
			lastID := map[int]string{0: "", -1: "nope"}[c.last]
			if c.last > 0 {
				lastID = ids[c.last-1]
			}
			s, err := h.Subscribe(topic, lastID)
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
		synctest.Test(t, func(t *testing.T) {
			h := NewHub(HubConfig{HistoryTTL: 50 * time.Millisecond})
			defer h.Close()
			publishN(t, h, "t", 1, 2)
			time.Sleep(30 * time.Millisecond)
			publishN(t, h, "t", 3, 3)
			time.Sleep(30 * time.Millisecond) // events 1 and 2 are 60 ms old, 3 is 30
			s, _ := h.Subscribe("t", "1")
			defer s.Close()
			if !s.Gap() || len(s.replay) != 1 || s.replay[0].ev.ID != "3" {
				t.Fatalf("expired history: gap=%v replay=%d", s.Gap(), len(s.replay))
			}
		})
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

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The handler subscribes before it sends the headers: a client that
	// has them receives every event published from then on.
	connected := make(chan struct{}, 2)
	c := mustClient(t, srv.URL, ClientConfig{Retry: 50 * time.Millisecond, OnConnect: func(*http.Response) { connected <- struct{}{} }})
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
	waitConnected := func() {
		t.Helper()
		select {
		case <-connected:
		case <-ctx.Done():
			t.Fatal("client not connected")
		}
	}
	waitConnected()
	publishN(t, h, "feed", 1, 3)
	recv("e1")
	recv("e2")
	recv("e3")

	srv.CloseClientConnections()
	publishN(t, h, "feed", 4, 6) // while the client is away (or leaving)
	waitConnected()
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

// smallBuffers gives every accepted connection a small send buffer, so
// that a client that stops reading fills it soon.
type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(16 << 10)
	}
	return c, err
}

// A client that does not read is disconnected; the others get everything.
func TestHubHandlerSlowClient(t *testing.T) {
	t.Parallel()
	// 4 MiB: far more than the stream's buffer and both sockets' hold.
	const events, size = 64, 64 << 10
	h := NewHub(HubConfig{Stream: StreamConfig{BufferSize: 256 << 10}})
	srv := httptest.NewUnstartedServer(h.Handler(func(*http.Request) string { return "t" }))
	srv.Listener = smallBuffers{srv.Listener}
	srv.Start()
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
	})
	defer h.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	deadline, _ := ctx.Deadline()

	stalled := stalledClient(t, srv.URL)
	defer stalled.Close()
	stalled.(*net.TCPConn).SetReadBuffer(16 << 10)
	// Its headers come once the handler has subscribed it.
	stalled.SetReadDeadline(deadline)
	br := bufio.NewReader(stalled)
	if _, err := textproto.NewReader(br).ReadLine(); err != nil {
		t.Fatal(err)
	}
	if _, err := textproto.NewReader(br).ReadMIMEHeader(); err != nil {
		t.Fatal(err)
	}

	connected := make(chan struct{})
	c := mustClient(t, srv.URL, ClientConfig{NoReconnect: true, OnConnect: func(*http.Response) { close(connected) }})
	got := make(chan int) // the reading client's count after each event
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
			if n == events {
				return
			}
		}
	}()
	select {
	case <-connected:
	case <-ctx.Done():
		t.Fatal("reading client not connected")
	}
	big := strings.Repeat("y", size)
	// The publisher goes at the pace of the reading client; the stalled
	// one falls behind by the whole 4 MiB.
	for i := range events {
		if _, err := h.Publish("t", Event{Data: fmt.Sprint(i, big)}); err != nil {
			t.Fatal(err)
		}
		if n := <-got; n != i+1 {
			t.Fatalf("reading client got %d events, want %d", n, i+1)
		}
	}
	// The stalled client's connection was closed by the hub: reading
	// what the socket holds ends in EOF, short of all events.
	p := NewParser(br, ParserConfig{})
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
	if n >= events {
		t.Fatalf("stalled client got all %d events", n)
	}
}

// topicCount returns how many topics the hub holds.
func topicCount(h *Hub) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.topics)
}

func TestHubReclaimsEmptyTopics(t *testing.T) {
	t.Parallel()
	t.Run("last subscriber leaves, no history", func(t *testing.T) {
		h := NewHub(HubConfig{HistorySize: -1})
		defer h.Close()
		a, _ := h.Subscribe("t", "")
		b, _ := h.Subscribe("t", "")
		a.Close()
		if n := topicCount(h); n != 1 {
			t.Fatalf("%d topics with one subscriber left", n)
		}
		b.Close()
		if n := topicCount(h); n != 0 {
			t.Fatalf("%d topics after the last subscriber left", n)
		}
	})
	t.Run("publish to nobody, no history", func(t *testing.T) {
		h := NewHub(HubConfig{HistorySize: -1})
		defer h.Close()
		// IDs go on across the topic's lives: a client's Last-Event-ID
		// never matches an event of an earlier life.
		for want := 1; want <= 3; want++ {
			e, err := h.Publish("t", Event{Data: "x"})
			if err != nil || e.ID != fmt.Sprint(want) {
				t.Fatalf("Publish = %+v, %v; want ID %d", e, err, want)
			}
			if n := topicCount(h); n != 0 {
				t.Fatalf("%d topics after publishing to nobody", n)
			}
		}
	})
	t.Run("history keeps a topic until it expires", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := NewHub(HubConfig{HistoryTTL: time.Minute, MaxTopics: 2})
			defer h.Close()
			publishN(t, h, "a", 1, 1)
			publishN(t, h, "b", 1, 1)
			if _, err := h.Subscribe("c", ""); !errors.Is(err, ErrTooManyTopics) {
				t.Fatalf("Subscribe to a third topic = %v, want ErrTooManyTopics", err)
			}
			if _, err := h.Publish("c", Event{Data: "x"}); !errors.Is(err, ErrTooManyTopics) {
				t.Fatalf("Publish to a third topic = %v, want ErrTooManyTopics", err)
			}
			publishN(t, h, "a", 2, 2) // known topics still work
			time.Sleep(time.Minute + time.Second)
			s, err := h.Subscribe("c", "")
			if err != nil {
				t.Fatalf("Subscribe after the history expired: %v", err)
			}
			s.Close()
			if n := topicCount(h); n != 0 {
				t.Fatalf("%d topics left, want 0", n)
			}
		})
	})
	t.Run("many topics come and go", func(t *testing.T) {
		h := NewHub(HubConfig{HistorySize: -1, MaxTopics: 10})
		defer h.Close()
		for i := range 1000 {
			s, err := h.Subscribe(fmt.Sprint("topic", i), "")
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
		}
		if n := topicCount(h); n != 0 {
			t.Fatalf("%d topics left", n)
		}
	})
}

// Subscribers come and go on one topic, so that it is reclaimed and
// created again all the time: a subscriber still gets every event published
// after it subscribed (none goes to a reclaimed topic).
func TestHubReclaimRace(t *testing.T) {
	t.Parallel()
	h := NewHub(HubConfig{HistorySize: -1, SubscriberBuffer: 1 << 16})
	defer h.Close()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				s, err := h.Subscribe("t", "")
				if err != nil {
					t.Error(err)
					return
				}
				want := fmt.Sprint(g, "-", i)
				if _, err := h.Publish("t", Event{Data: want}); err != nil {
					t.Error(err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				for {
					ev, err := s.Next(ctx)
					if err != nil {
						t.Errorf("subscriber %s: %v", want, err)
						break
					}
					if ev.Data == want {
						break
					}
				}
				cancel()
				s.Close()
			}
		})
	}
	wg.Wait()
	if n := topicCount(h); n != 0 {
		t.Fatalf("%d topics left", n)
	}
}

// Handler: a client whose Last-Event-ID the hub no longer has is told so
// before the history; a new topic beyond MaxTopics is refused with 503.
func TestHubHandlerGapAndTopicBound(t *testing.T) {
	t.Parallel()
	h := NewHub(HubConfig{HistorySize: 2, MaxTopics: 1})
	srv := newServer(t, make(chan struct{}), h.Handler(func(r *http.Request) string { return r.URL.Path }).ServeHTTP)
	defer h.Close()
	publishN(t, h, "/feed", 1, 5) // history keeps ids 4 and 5

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := mustClient(t, srv.URL+"/feed", ClientConfig{LastEventID: "1"})
	evs, err := collect(t, c, ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	want := []Event{
		{ID: "1", Type: GapEventType, Data: "1"},
		{ID: "4", Type: "message", Data: "e4"},
		{ID: "5", Type: "message", Data: "e5"},
	}
	for i := range want {
		if evs[i] != want[i] {
			t.Errorf("event %d = %+v, want %+v", i, evs[i], want[i])
		}
	}
	resp, err := http.Get(srv.URL + "/other")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), ErrTooManyTopics.Error()) {
		t.Fatalf("a second topic: %s %q, want 503 and ErrTooManyTopics", resp.Status, body)
	}
}
