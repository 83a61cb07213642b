package tunnel

import (
	"context"
	"io"
	"net"
	"net/http"
	"reflect"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sluicehq/sluice/wire"
)

// Tests in a synctest bubble: the edge and the agent talk over an
// in-memory connection (net.Pipe), so that time is the bubble's fake
// clock. Keepalives, the pong timeout and the v1 agent's hold timer are
// then exact, whatever else the machine is doing.

// pipeListener is a net.Listener of in-memory connections: dial makes one.
type pipeListener struct {
	limit int // for memPipeLimit; set before the first dial
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 80} }

func (l *pipeListener) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	client, server := memPipeLimit(l.limit)
	select {
	case l.conns <- server:
		return client, nil
	case <-l.done:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// bubbleEdge is an edge's agent endpoint in a bubble: every registration
// is granted and its session run; sessions come out in order.
type bubbleEdge struct {
	ln       *pipeListener
	srv      *http.Server
	sessions chan Session
	served   sync.WaitGroup
	cancel   context.CancelFunc
}

func startBubbleEdge(cfg Config) *bubbleEdge {
	ctx, cancel := context.WithCancel(context.Background())
	e := &bubbleEdge{ln: newPipeListener(), sessions: make(chan Session, 16), cancel: cancel}
	e.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, err := Accept(w, r, grantAll(cfg))
		if err != nil {
			return
		}
		e.sessions <- s
		s.Run(ctx)
	})}
	e.served.Add(1)
	go func() {
		defer e.served.Done()
		e.srv.Serve(e.ln)
	}()
	return e
}

// dialConfig is an agent's DialConfig for this edge.
func (e *bubbleEdge) dialConfig(cfg Config, protocol string) DialConfig {
	return DialConfig{Config: cfg, URL: "ws://edge.test/agent", TunnelID: "t", Protocol: protocol, NetDialContext: e.ln.dial}
}

// close ends the edge: its sessions' Run return with the context.
func (e *bubbleEdge) close() {
	e.cancel()
	e.srv.Close()
	e.served.Wait()
}

// bubbleTunnel starts, in the calling bubble, an edge and an agent serving
// upstream, and returns the edge's session and a function that stops both
// and waits for their goroutines.
func bubbleTunnel(t *testing.T, cfg Config, protocol string, upstream http.Handler) (Session, func()) {
	t.Helper()
	e := startBubbleEdge(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	as, err := Dial(ctx, e.dialConfig(cfg, protocol))
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- as.Serve(ctx, upstream) }()
	sess := <-e.sessions
	return sess, func() {
		cancel()
		<-served
		sess.Close()
		e.close()
	}
}

// The v1 agent holds the head of a small response of known length for up
// to holdTime, to send it whole with its body; past that the head goes out
// alone, and what the handler sets afterwards is not a header. In fake
// time the handler's pause is exactly 4 × holdTime, every run.
func TestHoldTimerInBubble(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		features := append(append([]string{}, allFeatures...), wire.FeatureTrailers)
		var heldFor time.Duration
		upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "2")
			io.WriteString(w, "hi")
			start := time.Now()
			time.Sleep(4 * holdTime)
			heldFor = time.Since(start)
			w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
			w.Header().Set("X-Late", "1") // after the head: no effect
		})
		cfg := Config{}
		e := startBubbleEdge(cfg)
		ctx, cancel := context.WithCancel(context.Background())
		dc := e.dialConfig(cfg, ProtocolV1)
		dc.Features = features
		as, err := Dial(ctx, dc)
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- as.Serve(ctx, upstream) }()
		sess := <-e.sessions
		defer func() {
			cancel()
			<-served
			sess.Close()
			e.close()
		}()

		start := time.Now()
		resp, err := (&http.Client{Transport: sess}).Get("http://t.example/small-slow")
		if err != nil {
			t.Fatal(err)
		}
		headAfter := time.Since(start)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(body) != "hi" {
			t.Fatalf("body %q, %v", body, err)
		}
		if headAfter != holdTime {
			t.Errorf("the head came after %v, want the hold time %v", headAfter, holdTime)
		}
		if heldFor != 4*holdTime {
			t.Errorf("the handler slept %v in fake time, want %v", heldFor, 4*holdTime)
		}
		if resp.Header.Get("X-Late") != "" {
			t.Errorf("a header set after the hold reached the client: %v", resp.Header)
		}
		if want := (http.Header{"Grpc-Status": {"0"}}); !reflect.DeepEqual(resp.Trailer, want) {
			t.Errorf("trailers %v, want %v", resp.Trailer, want)
		}
	})
}

// A live agent answers the edge's pings: its session outlives the pong
// timeout many times over and still carries requests.
func TestKeepaliveInBubble(t *testing.T) {
	for _, protocol := range []string{ProtocolV1, ProtocolV2} {
		t.Run(protocol, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cfg := Config{PingInterval: time.Second, PongTimeout: 3 * time.Second}
				sess, stop := bubbleTunnel(t, cfg, protocol, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					io.WriteString(w, "alive")
				}))
				defer stop()
				time.Sleep(10 * time.Minute) // 200 pong timeouts, idle
				select {
				case <-sess.Done():
					t.Fatal("an idle session with a live agent ended")
				default:
				}
				if body := getText(t, sess, "http://t.example/"); body != "alive" {
					t.Fatalf("after 10 idle minutes: %q", body)
				}
			})
		})
	}
}

// An agent that registers and then reads nothing (so it answers no ping)
// is dropped after the pong timeout: not before, and not much after.
func TestSilentAgentDroppedInBubble(t *testing.T) {
	for _, protocol := range []string{ProtocolV1, ProtocolV2} {
		t.Run(protocol, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cfg := Config{PingInterval: time.Second, PongTimeout: 5 * time.Second}
				e := startBubbleEdge(cfg)
				defer e.close()
				d := websocket.Dialer{NetDialContext: e.ln.dial}
				if protocol == ProtocolV2 {
					d.Subprotocols = []string{Subprotocol}
				}
				ws, _, err := d.Dial("ws://edge.test/agent", nil)
				if err != nil {
					t.Fatal(err)
				}
				defer ws.Close()
				registerRaw(t, ws)
				sess := <-e.sessions
				start := time.Now()
				<-sess.Done() // the agent never reads again
				took := time.Since(start)
				if took < cfg.PongTimeout || took > cfg.PongTimeout+cfg.PingInterval {
					t.Errorf("dropped after %v, want the pong timeout %v (within a ping interval)", took, cfg.PongTimeout)
				}
			})
		})
	}
}

// getText GETs url through sess and returns the body.
func getText(t *testing.T, sess Session, url string) string {
	t.Helper()
	resp, err := (&http.Client{Transport: sess}).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return string(body)
}
