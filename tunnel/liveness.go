package tunnel

import (
	"time"

	"github.com/gorilla/websocket"
)

// Liveness, the same for both protocols: each side pings every
// PingInterval; every message or pong received moves the read deadline
// PongTimeout ahead, so a peer from which nothing came for that long fails
// the read that waits for it, and the session ends.

// liveness watches one WebSocket.
type liveness struct {
	ws      *websocket.Conn
	timeout time.Duration // PongTimeout
}

// newLiveness makes pongs extend ws's read deadline by timeout.
func newLiveness(ws *websocket.Conn, timeout time.Duration) liveness {
	l := liveness{ws: ws, timeout: timeout}
	ws.SetPongHandler(func(string) error { return l.extend() })
	return l
}

// extend moves the read deadline: something came from the peer.
func (l liveness) extend() error { return l.ws.SetReadDeadline(time.Now().Add(l.timeout)) }

// ping sends a ping every interval until stop is closed or a ping cannot
// be written.
func (l liveness) ping(interval time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			if err := l.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(l.timeout)); err != nil {
				return
			}
		}
	}
}
