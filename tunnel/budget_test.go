package tunnel

import (
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sluicehq/sluice/wire"
)

// budgetSession is tunnelSession with cfg's budget and windows.
func budgetSession(t *testing.T, cfg Config, features []string, upstream http.Handler) Session {
	t.Helper()
	return sessionWith(t, cfg, Config{V1: cfg.V1, V2: cfg.V2}, features, upstream)
}

// settled waits until f's value stopped changing for a while (the agent's
// writes are blocked on flow control), checking ok on every value. It
// fails the test when ok fails.
func settled(t *testing.T, f func() int64, ok func(int64) bool) int64 {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	last, since := f(), time.Now()
	for time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		v := f()
		if !ok(v) {
			t.Fatalf("value %d out of bounds", v)
		}
		if v != last {
			last, since = v, time.Now()
		} else if time.Since(since) > 500*time.Millisecond {
			return v
		}
	}
	t.Fatal("value never settled")
	return 0
}

// Clients that never read a large download hold no more than the budget
// (plus each stream's floor), whatever the windows: the agent is not let
// to send more. Without the budget, each stream would fill its window.
// Then the budget comes back whole as the bodies are read or closed.
func TestBudgetBoundsUnreadDownloads(t *testing.T) {
	t.Parallel()
	const (
		streams = 24
		budget  = 4 << 20
		size    = 16 << 20
	)
	for name, tc := range map[string]struct {
		features []string
		floor    int64 // what a stream may hold whatever the budget
	}{
		"v2":         {v2Features, h2Floor},
		"extensions": {allFeatures, initialWindowV1}, // the first window registered announced
		// An agent without initial_window may send the protocol's first
		// window at once.
		"window": {[]string{wire.FeatureRequestStream, wire.FeatureWindow, wire.FeatureCancel}, DefaultWindowV1},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var written atomic.Int64
			upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				chunk := make([]byte, 16<<10)
				for n := 0; n < size; n += len(chunk) {
					if _, err := w.Write(chunk); err != nil {
						return
					}
					written.Add(int64(len(chunk)))
					w.(http.Flusher).Flush()
				}
			})
			b := NewBudget(budget)
			sess := budgetSession(t, Config{Budget: b}, tc.features, upstream)
			var bodies []io.ReadCloser
			for range streams {
				req, _ := http.NewRequest("GET", "http://t.example/big", nil)
				resp, err := sess.RoundTrip(req)
				if err != nil {
					t.Fatal(err)
				}
				bodies = append(bodies, resp.Body)
			}
			// The agent's side buffers a little per stream too (its
			// writer, a frame in flight).
			limit := int64(budget) + streams*(tc.floor+64<<10)
			got := settled(t, written.Load, func(v int64) bool { return v <= limit })
			t.Logf("%s: %d streams never read: the upstream wrote %d KiB, the budget peaked at %d KiB (limit %d KiB)", name, streams, got>>10, b.Peak()>>10, limit>>10)
			if peak := b.Peak(); peak > budget+streams*tc.floor {
				t.Fatalf("budget peaked at %d, over %d + %d floors of %d", peak, budget, streams, tc.floor)
			}
			// One reader gets the whole body: windows still move.
			n, err := io.Copy(io.Discard, bodies[0])
			if err != nil || n != size {
				t.Fatalf("read %d bytes, %v; want %d", n, err, size)
			}
			for _, body := range bodies {
				body.Close()
			}
			// Everything comes back (v2: exactly; v1 may keep less than
			// 4 KiB of credit unsent).
			settled(t, b.Used, func(int64) bool { return true })
			if used := b.Used(); used > 4<<10 || name == "v2" && used != 0 {
				t.Fatalf("%d bytes still reserved after every body was closed", used)
			}
		})
	}
}

// rawV1Agent registers a raw v1 agent that announces features, and
// returns its connection, the registered frame and the edge's session.
func rawV1Agent(t *testing.T, cfg Config, features ...string) (*websocket.Conn, *wire.Frame, Session) {
	t.Helper()
	url, sessions := acceptor(t, cfg)
	ws, _, err := (&websocket.Dialer{}).Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	reg := wire.Frame{Type: wire.TypeRegister, TunnelID: "t", AgentToken: "k", Features: features}
	if err := ws.WriteMessage(websocket.TextMessage, wire.AppendFrame(nil, &reg, wire.EncodeOptions{})); err != nil {
		t.Fatal(err)
	}
	answer := readRaw(t, ws)
	if answer.Type != wire.TypeRegistered {
		t.Fatalf("answer %+v, want registered", answer)
	}
	return ws, answer, <-sessions
}

// readRaw reads the next frame on a raw agent's connection.
func readRaw(t *testing.T, ws *websocket.Conn) *wire.Frame {
	t.Helper()
	ws.SetReadDeadline(time.Now().Add(time.Minute))
	_, msg, err := ws.ReadMessage()
	var f wire.Frame
	if err == nil {
		err = wire.Decode(msg, &f)
	}
	if err != nil {
		t.Fatalf("read a frame: %v", err)
	}
	return &f
}

// With initial_window (and window), the edge announces a small first
// response window in registered and takes only that from its budget per
// stream, whatever the budget; the rest of the 512 KiB window comes in a
// window_update right after the request's head, as far as the budget
// allows. An agent without initial_window keeps the protocol's first window
// (taken whatever is left), and initial_window without window means
// nothing.
func TestInitialWindowV1(t *testing.T) {
	t.Parallel()
	t.Run("announced", func(t *testing.T) {
		t.Parallel()
		b := NewBudget(64 << 20)
		ws, answer, sess := rawV1Agent(t, Config{Budget: b}, wire.FeatureWindow, wire.FeatureInitialWindow)
		if !wire.HasFeature(answer.Features, wire.FeatureInitialWindow) || answer.Window != initialWindowV1 {
			t.Fatalf("registered %+v: want initial_window confirmed with window %d", answer, initialWindowV1)
		}
		// Room in the budget: the rest of the window follows the head.
		req := mustRequest(t)
		go sess.RoundTrip(req) // answered never: the session's end ends it
		head := readRaw(t, ws)
		if head.Type != wire.TypeHTTPRequest {
			t.Fatalf("first frame %+v, want the request", head)
		}
		if f := readRaw(t, ws); f.Type != wire.TypeWindowUpdate || f.RequestID != head.RequestID || f.Bytes != DefaultWindowV1-initialWindowV1 {
			t.Fatalf("after the head: %+v, want a window_update of %d for %q", f, DefaultWindowV1-initialWindowV1, head.RequestID)
		}
		if used := b.Used(); used != DefaultWindowV1 {
			t.Fatalf("budget used %d, want one window (%d)", used, DefaultWindowV1)
		}
		// A spent budget: the next stream gets its first window only, and
		// credit one chunk at a time as its client reads.
		b.Force(b.Max())
		resp := make(chan *http.Response, 1)
		req = mustRequest(t)
		go func() {
			if r, err := sess.RoundTrip(req); err == nil {
				resp <- r
			}
		}()
		head = readRaw(t, ws)
		if used := b.Used(); used != b.Max()+DefaultWindowV1+initialWindowV1 {
			t.Fatalf("budget used %d, want %d", used, b.Max()+DefaultWindowV1+initialWindowV1)
		}
		for _, f := range []wire.Frame{
			{Type: wire.TypeHTTPResponseStart, RequestID: head.RequestID, Status: 200, Headers: http.Header{}},
			{Type: wire.TypeHTTPResponseChunk, RequestID: head.RequestID, Data: make([]byte, initialWindowV1)},
		} {
			if err := ws.WriteMessage(websocket.TextMessage, wire.AppendFrame(nil, &f, wire.EncodeOptions{})); err != nil {
				t.Fatal(err)
			}
		}
		var r *http.Response
		select {
		case r = <-resp:
		case <-time.After(time.Minute):
			t.Fatal("no response")
		}
		defer r.Body.Close()
		if _, err := io.ReadFull(r.Body, make([]byte, initialWindowV1)); err != nil {
			t.Fatal(err)
		}
		if f := readRaw(t, ws); f.Type != wire.TypeWindowUpdate || f.RequestID != head.RequestID || f.Bytes != initialWindowV1 {
			t.Fatalf("after the first window was read: %+v, want a window_update of %d for %q", f, initialWindowV1, head.RequestID)
		}
	})
	t.Run("not announced", func(t *testing.T) {
		t.Parallel()
		b := NewBudget(1 << 20)
		b.Force(b.Max())
		ws, answer, sess := rawV1Agent(t, Config{Budget: b}, wire.FeatureWindow)
		if wire.HasFeature(answer.Features, wire.FeatureInitialWindow) || answer.Window != 0 {
			t.Fatalf("registered %+v: want no initial window", answer)
		}
		req := mustRequest(t)
		go sess.RoundTrip(req)
		readRaw(t, ws)
		if used := b.Used(); used != b.Max()+DefaultWindowV1 {
			t.Fatalf("budget used %d, want %d: the protocol's first window", used, b.Max()+DefaultWindowV1)
		}
	})
	t.Run("without window", func(t *testing.T) {
		t.Parallel()
		_, answer, _ := rawV1Agent(t, Config{}, wire.FeatureInitialWindow)
		if len(answer.Features) != 0 || answer.Window != 0 {
			t.Fatalf("registered %+v: want no feature confirmed", answer)
		}
	})
}

func mustRequest(t *testing.T) *http.Request {
	t.Helper()
	req, err := http.NewRequest("GET", "http://t.example/", nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}
