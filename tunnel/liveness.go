package tunnel

import (
	"fmt"
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
	dead    func(error)   // ends the connection when a ping cannot be written
}

// newLiveness makes pongs extend ws's read deadline by timeout; dead is
// called (once) when a ping cannot be written within timeout, and must
// close the connection.
func newLiveness(ws *websocket.Conn, timeout time.Duration, dead func(error)) liveness {
	l := liveness{ws: ws, timeout: timeout, dead: dead}
	ws.SetPongHandler(func(string) error { return l.extend() })
	return l
}

// extend moves the read deadline: something came from the peer.
func (l liveness) extend() error { return l.ws.SetReadDeadline(time.Now().Add(l.timeout)) }

// ping sends a ping every interval until stop is closed or a ping cannot
// be written within the pong timeout: a peer that stopped reading (its
// buffers and ours are full) has its connection ended then (l.dead), which
// ends the session's reads.
func (l liveness) ping(interval time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			if err := l.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(l.timeout)); err != nil {
				select {
				case <-stop: // the session ended meanwhile
				default:
					l.dead(fmt.Errorf("%w: %w", ErrPingTimeout, err))
				}
				return
			}
		}
	}
}
