package tunnel

import (
	"bytes"
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sluicehq/sluice/wire"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// agentReply is what a well-behaved v2 agent sends for one GET on stream
// 1: its SETTINGS, the ack of the edge's, and a 200 with the body "ok".
func agentReply(extra func(fr *http2.Framer)) []byte {
	var buf, hb bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 100})
	fr.WriteSettingsAck()
	enc := hpack.NewEncoder(&hb)
	enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
	enc.WriteField(hpack.HeaderField{Name: "content-type", Value: "text/plain"})
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true})
	if extra != nil {
		extra(fr)
	}
	fr.WriteData(1, true, []byte("ok"))
	return buf.Bytes()
}

// FuzzV2Session: whatever bytes a v2 agent sends after registering, in
// whatever messages, the edge's session neither panics nor hangs: a
// request through it ends with a response or an error, and Close returns.
// The well-formed reply, however it is split into messages, gives 200 "ok".
func FuzzV2Session(f *testing.F) {
	valid := agentReply(nil)
	f.Add(valid, uint8(0))
	f.Add(valid, uint8(1))
	f.Add(valid, uint8(9))
	f.Add(agentReply(func(fr *http2.Framer) { fr.WritePing(false, [8]byte{1}) }), uint8(0))
	f.Add(agentReply(func(fr *http2.Framer) { fr.WriteWindowUpdate(0, 1<<31-1) }), uint8(0))
	f.Add(agentReply(func(fr *http2.Framer) { fr.WriteData(3, false, []byte("stray")) }), uint8(0))
	f.Add(agentReply(func(fr *http2.Framer) { fr.WriteRSTStream(1, http2.ErrCodeInternal) }), uint8(0))
	f.Add(agentReply(func(fr *http2.Framer) { fr.WriteGoAway(0, http2.ErrCodeProtocol, []byte("bye")) }), uint8(0))
	f.Add(valid[:20], uint8(0))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"), uint8(0))
	f.Add([]byte{0, 0, 0, 4, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x01}, uint8(3))
	// (x/net's framer may log a bad frame with the standard logger.)
	log.SetOutput(io.Discard)
	f.Cleanup(func() { log.SetOutput(os.Stderr) })
	f.Fuzz(func(t *testing.T, input []byte, split uint8) { v2Input(t, valid, input, split) })
}

// v2Input is one run of FuzzV2Session.
func v2Input(t *testing.T, valid, input []byte, split uint8) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, ws, runDone := rawAgentSession(t, ctx, Config{PongTimeout: 5 * time.Second}, true)
	// The agent's side reads the edge's bytes (the connection preface,
	// then frames) and sends the input once the request's HEADERS came
	// (a reply to a stream not yet opened is an error of its own).
	drained := make(chan struct{})
	gotHeaders := make(chan struct{})
	pr, pw := io.Pipe()
	go func() {
		defer close(drained)
		defer pw.Close()
		for {
			_, msg, err := ws.ReadMessage()
			if err != nil {
				return
			}
			pw.Write(msg)
		}
	}()
	go func() {
		defer io.Copy(io.Discard, pr)
		if _, err := io.ReadFull(pr, make([]byte, len(http2.ClientPreface))); err != nil {
			return
		}
		fr := http2.NewFramer(nil, pr)
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			if _, ok := f.(*http2.HeadersFrame); ok {
				close(gotHeaders)
				return
			}
		}
	}()
	go func() {
		select {
		case <-gotHeaders:
		case <-time.After(100 * time.Millisecond):
		}
		for rest := input; len(rest) > 0; {
			n := len(rest)
			if split > 0 {
				n = min(n, int(split))
			}
			if ws.WriteMessage(websocket.BinaryMessage, rest[:n]) != nil {
				return
			}
			rest = rest[n:]
		}
	}()

	fuzzRequest(t, ctx, s, bytes.Equal(input, valid))
	fuzzEnd(t, s, runDone, ws, drained)
}

// fuzzRequest sends a GET through s while the fuzzed agent answers: it
// must end, with a response or an error. A reply that never completes is
// an agent that does not answer, and the request ends with its context
// (50 ms); the well-formed reply (valid) must give 200 "ok", and gets a
// minute, since a busy machine is slow, not broken.
func fuzzRequest(t *testing.T, ctx context.Context, s Session, valid bool) {
	t.Helper()
	timeout := 50 * time.Millisecond
	if valid {
		timeout = time.Minute
	}
	rctx, rcancel := context.WithTimeout(ctx, timeout)
	defer rcancel()
	type result struct {
		status int
		body   []byte
		err    error
	}
	done := make(chan result, 1)
	go func() {
		req, _ := http.NewRequestWithContext(rctx, "GET", "http://t.example/", nil)
		resp, err := s.RoundTrip(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		done <- result{resp.StatusCode, body, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-time.After(timeout + time.Minute):
		t.Fatal("the request outlived its context by a minute")
	}
	if valid && (r.err != nil || r.status != 200 || string(r.body) != "ok") {
		t.Fatalf("the well-formed reply: status %d, body %q, %v", r.status, r.body, r.err)
	}
}

// fuzzEnd closes the session and checks that it, its Run and the agent's
// reader all end.
func fuzzEnd(t *testing.T, s Session, runDone <-chan struct{}, ws *websocket.Conn, drained <-chan struct{}) {
	t.Helper()
	closed := make(chan struct{})
	go func() {
		s.Close()
		close(closed)
	}()
	wait(t, closed, "Close")
	wait(t, runDone, "the session's Run")
	ws.Close()
	wait(t, drained, "the agent's reader")
}

// wait fails t if ch is not closed within a minute (a hang, not a slow
// machine).
func wait(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(time.Minute):
		t.Fatalf("%s did not return", what)
	}
}

// grantAll is an AcceptConfig that grants every registration.
// rawAgentSession opens an edge session (Accept with cfg, Run with ctx)
// for a raw agent WebSocket that asks for v2 (or not) and registers with
// features. It returns the session, the agent's WebSocket (closed when the
// test ends, as is the server) and a channel closed once Run returned.
func rawAgentSession(t *testing.T, ctx context.Context, cfg Config, v2 bool, features ...string) (Session, *websocket.Conn, <-chan struct{}) {
	t.Helper()
	return rawAgentSessionWith(t, ctx, cfg, v2, wire.Frame{Type: wire.TypeRegister, TunnelID: "t", AgentToken: "k", Features: features})
}

// rawAgentSessionWith is rawAgentSession registering with reg.
func rawAgentSessionWith(t *testing.T, ctx context.Context, cfg Config, v2 bool, reg wire.Frame) (Session, *websocket.Conn, <-chan struct{}) {
	t.Helper()
	sessions := make(chan Session, 1)
	runDone := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, err := Accept(w, r, grantAll(cfg))
		if err != nil {
			close(runDone)
			close(sessions)
			return
		}
		sessions <- s
		s.Run(ctx)
		close(runDone)
	}))
	t.Cleanup(srv.Close)
	var d websocket.Dialer
	if v2 {
		d.Subprotocols = []string{Subprotocol}
	}
	ws, _, err := d.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	registerRawFrame(t, ws, &reg)
	var s Session
	select {
	case s = <-sessions:
	case <-time.After(time.Minute):
	}
	if s == nil {
		t.Fatal("the session did not open")
	}
	return s, ws, runDone
}

func grantAll(cfg Config) AcceptConfig {
	return AcceptConfig{Config: cfg, Authorize: func(_ context.Context, reg *Registration) (*Grant, error) {
		g := &Grant{TunnelID: reg.TunnelID}
		if reg.Type != wire.TunnelHTTP {
			g.PublicURL = reg.Type + "://127.0.0.1:1"
		}
		return g, nil
	}}
}

// registerRaw sends a register frame on a raw agent WebSocket and reads the
// answer, which must be registered.
func registerRaw(t *testing.T, ws *websocket.Conn, features ...string) {
	t.Helper()
	registerRawFrame(t, ws, &wire.Frame{Type: wire.TypeRegister, TunnelID: "t", AgentToken: "k", Features: features})
}

// registerRawFrame is registerRaw with a register frame of the caller's.
func registerRawFrame(t *testing.T, ws *websocket.Conn, reg *wire.Frame) {
	t.Helper()
	if err := ws.WriteMessage(websocket.TextMessage, wire.AppendFrame(nil, reg, wire.EncodeOptions{})); err != nil {
		t.Fatal(err)
	}
	typ, msg, err := ws.ReadMessage()
	var f wire.Frame
	if err == nil {
		err = wire.Decode(msg, &f)
	}
	if err != nil || typ != websocket.TextMessage || f.Type != wire.TypeRegistered {
		t.Fatalf("registered: message type %d, %s, %v", typ, msg, err)
	}
}
