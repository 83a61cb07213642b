package edge_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// frameLog records the frames a raw v1 agent reads, in order, until its
// connection ends.
type frameLog struct {
	mu     sync.Mutex
	frames []frame
	done   chan struct{}
}

// logFrames reads a's frames in the background.
func logFrames(a *rawAgent) *frameLog {
	l := &frameLog{done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for {
			f, err := a.readFrame(10 * time.Minute)
			if err != nil {
				return
			}
			l.mu.Lock()
			l.frames = append(l.frames, f)
			l.mu.Unlock()
		}
	}()
	return l
}

func (l *frameLog) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.frames)
}

// check reports what is wrong with the order of the frames so far: the
// first must be registered, an http_cancel may only follow its request's
// head, and comes at most once. It also returns the requests sent and the
// ones not cancelled yet.
func (l *frameLog) check() (problems []string, requests, open int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	sent := map[string]bool{}
	cancels := map[string]int{}
	for i, f := range l.frames {
		id := f.str("request_id")
		switch typ := f.typ(); {
		case i == 0 && typ != "registered":
			problems = append(problems, fmt.Sprintf("first frame is %s, not registered", f.raw))
		case i > 0 && typ == "registered":
			problems = append(problems, "a second registered")
		case typ == "http_request" || typ == "http_request_start":
			if cancels[id] > 0 {
				problems = append(problems, fmt.Sprintf("request %s after its cancel", id))
			}
			sent[id] = true
		case typ == "http_cancel":
			if !sent[id] {
				problems = append(problems, fmt.Sprintf("http_cancel %s before its request", id))
			}
			if cancels[id]++; cancels[id] == 2 {
				problems = append(problems, fmt.Sprintf("request %s cancelled twice", id))
			}
		}
	}
	for id := range sent {
		if cancels[id] == 0 {
			open++
		}
	}
	return problems, len(sent), open
}

// Clients that leave while their request is being opened, including while
// a new agent registers and replaces the old one: every agent's first
// frame is registered, and each request it got is cancelled exactly once,
// after it was sent. (The edge once sent http_request, then http_cancel
// twice, then registered, to an agent that was still opening.)
func TestCancelDuringOpening(t *testing.T) {
	t.Parallel()
	e := startEdge(t, nil)
	const name = "order"
	connect := func() (*rawAgent, *frameLog) {
		a := e.dial(t)
		a.send(t, `{"type":"register","tunnel_id":"`+name+`","agent_token":"T","features":["request_stream","window","cancel"]}`)
		return a, logFrames(a)
	}
	_, first := connect()
	logs := []*frameLog{first}
	for deadline := time.Now().Add(time.Minute); first.len() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the first agent got no answer to register in a minute")
		}
	}

	// Clients: each sends a request and goes away at once or after a
	// moment, before any answer (the agents never answer).
	ctx, stop := context.WithCancel(context.Background())
	var clients sync.WaitGroup
	for c := range 8 {
		clients.Add(1)
		go func() {
			defer clients.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 1))
			for ctx.Err() == nil {
				if rng.IntN(2) == 0 {
					// Gone before the edge even routes it: the request
					// is written and the connection closed at once.
					conn, err := net.Dial("tcp", e.addr)
					if err != nil {
						continue
					}
					fmt.Fprintf(conn, "GET /%d HTTP/1.1\r\nHost: %s.localhost\r\n\r\n", c, name)
					conn.Close()
					continue
				}
				rctx, cancel := context.WithTimeout(ctx, time.Duration(rng.IntN(3000))*time.Microsecond)
				req, _ := http.NewRequestWithContext(rctx, "GET", "http://"+e.addr+"/", nil)
				req.Host = name + ".localhost"
				if resp, err := e.client.Do(req); err == nil {
					resp.Body.Close()
				}
				cancel()
			}
		}()
	}
	// Meanwhile, agents with the same token replace each other.
	for range 15 {
		time.Sleep(20 * time.Millisecond)
		_, l := connect()
		logs = append(logs, l)
	}
	time.Sleep(50 * time.Millisecond)
	stop()
	clients.Wait()
	stopped := time.Now()

	// Every request an agent got is cancelled in the end, each exactly
	// once, or its agent's connection closed (a replaced agent's, after
	// its requests in flight ended or its grace period).
	total := 0
	for i, l := range logs {
		var problems []string
		var requests, open int
		for wait := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
			problems, requests, open = l.check()
			if len(problems) > 0 || open == 0 || time.Now().After(wait) {
				break
			}
			select {
			case <-l.done:
				problems, requests, open = l.check()
				if open > 0 {
					t.Logf("agent %d: closed with %d of %d requests not cancelled, %v after the clients stopped", i, open, requests, time.Since(stopped))
				}
				open = 0
			default:
				continue
			}
			break
		}
		for _, p := range problems {
			t.Errorf("agent %d: %s", i, p)
		}
		if open > 0 {
			t.Errorf("agent %d: %d of %d requests never cancelled", i, open, requests)
			l.mu.Lock()
			for _, f := range l.frames[max(0, len(l.frames)-30):] {
				t.Logf("  %s", f.raw)
			}
			l.mu.Unlock()
		}
		total += requests
	}
	t.Logf("%d agents, %d requests reached them", len(logs), total)
	if total == 0 {
		t.Fatal("no request reached an agent: the test tested nothing")
	}
}

// When the store fails, an agent is told to come back later
// (internal_error, which it retries), never that its token is wrong (which
// would stop it for good).
func TestStoreDownRefusesAsInternal(t *testing.T) {
	t.Parallel()
	e, st, _, secret := storeEdge(t, time.Minute)
	st.Close()
	a := e.dial(t)
	a.send(t, `{"type":"register","tunnel_id":"down","agent_token":"`+secret+`","features":["cancel"]}`)
	f := a.read(t, 5*time.Second)
	if f.typ() != "error" || f.str("code") != "internal_error" {
		t.Fatalf("with the store down: %s, want an error frame internal_error", f.raw)
	}
	if strings.Contains(string(f.raw), "closed") || strings.Contains(string(f.raw), "sql") {
		t.Errorf("the refusal shows the store's error to the agent: %s", f.raw)
	}
}
