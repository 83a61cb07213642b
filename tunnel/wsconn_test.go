package tunnel

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Close returns even while the writer is blocked on a peer that stopped
// reading (as when reading failed on a dead peer): the blocked write is
// cut after a second.
func TestWSConnCloseWithStalledPeer(t *testing.T) {
	t.Parallel()
	conns := make(chan *websocket.Conn, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		conns <- ws
	}))
	defer srv.Close()
	peer, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close() // it never reads
	c := NewWSConn(<-conns, time.Minute)
	chunk := make([]byte, 256<<10)
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		for {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	}()
	// Let the socket buffers and the pending buffer fill.
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	closed := make(chan struct{})
	go func() {
		c.Close()
		close(closed)
	}()
	select {
	case <-closed:
		t.Logf("Close returned in %v", time.Since(start).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Fatal("Close blocked on a write to a peer that does not read")
	}
	select {
	case <-wrote:
	case <-time.After(5 * time.Second):
		t.Fatal("a Write stayed blocked after Close")
	}
}
