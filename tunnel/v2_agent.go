package tunnel

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/gorilla/websocket"
	"github.com/sluicehq/sluice/wire"
)

// serveV2 serves the requests (and the TCP connections, with dial) of a protocol v2 connection (after the
// register/registered exchange) with handler until the connection fails or
// ctx ends, then returns once the handlers have returned. An error frame
// the edge sent as a text message is returned as a *PeerError.
func serveV2(ctx context.Context, ws *websocket.Conn, handler http.Handler, dial dialers, cfg Config, live *atomic.Pointer[WSConn]) error {
	parent := ctx
	conn := NewWSConn(ws, cfg.PongTimeout)
	defer conn.Close()
	live.Store(conn)
	defer live.Store(nil)
	var peerMu sync.Mutex
	var peerErr *PeerError
	conn.OnText(func(msg []byte) {
		var f wire.Frame
		if err := wire.Decode(msg, &f); err != nil || f.Type != wire.TypeError {
			cfg.Logger.Warn("unexpected control message from the edge", "msg", string(msg))
			return
		}
		cfg.Logger.Warn("edge error", "code", f.Code, "message", f.Message)
		peerMu.Lock()
		peerErr = &PeerError{Code: f.Code, Message: f.Message}
		peerMu.Unlock()
	})
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		conn.Keepalive(cfg.PingInterval)
	}()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	hs := &handlerSet{idle: make(chan struct{})}
	h := hs.wrap(serveTCPH2(dial, takeExpectation(serveUpgradeH2(handler))))
	serveH2(ctx, conn, h, h2ServerConfig{Window: cfg.V2.Window, OnError: cfg.frameError, Logger: cfg.Logger})
	stop()
	conn.Close()
	cancel() // the handlers' requests are cancelled
	hs.wait()
	wg.Wait()
	if parent.Err() != nil {
		return nil
	}
	peerMu.Lock()
	defer peerMu.Unlock()
	if peerErr != nil {
		return peerErr
	}
	return fmt.Errorf("tunnel: v2 connection lost: %w", conn.Err())
}

// handlerSet counts the handlers running, so that serveV2 returns only
// after they did.
type handlerSet struct {
	mu      sync.Mutex
	n       int
	closing bool
	idle    chan struct{}
}

func (h *handlerSet) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		if h.closing {
			h.mu.Unlock()
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		h.n++
		h.mu.Unlock()
		defer func() {
			h.mu.Lock()
			h.n--
			if h.closing && h.n == 0 {
				close(h.idle)
			}
			h.mu.Unlock()
		}()
		next.ServeHTTP(w, r)
	})
}

func (h *handlerSet) wait() {
	h.mu.Lock()
	h.closing = true
	if h.n == 0 {
		close(h.idle)
	}
	h.mu.Unlock()
	<-h.idle
}
