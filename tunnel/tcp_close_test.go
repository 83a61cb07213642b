package tunnel

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
)

// TestTCPCloseAfterCleanEnds: the local server half-closes at once; the
// edge reads that end, sends its bytes, half-closes and closes the stream
// at once, as a copy loop does when both ways are done. Every byte still
// reaches the local server, which sees a clean end: Close after two clean
// half-closes waits for the stream to finish rather than reset it (the
// last DATA frames may still be on their way; a reset dropped them and
// the local server saw a clean end short of them).
func TestTCPCloseAfterCleanEnds(t *testing.T) {
	forTCP(t, func(t *testing.T, proto string) {
		up := randomBytes(8<<20 + 5)
		got := make(chan []byte, 1)
		sess := tcpSession(t, proto, Config{}, func(c *net.TCPConn) {
			c.CloseWrite()
			b, err := io.ReadAll(c)
			if err != nil {
				t.Errorf("local server: %v", err)
			}
			got <- b
		}, nil)
		for range 3 {
			st, err := sess.OpenTCP(context.Background(), "203.0.113.1:5000")
			if err != nil {
				t.Fatal(err)
			}
			if b, err := io.ReadAll(st); err != nil || len(b) != 0 {
				t.Fatalf("read %d bytes, %v; want the local server's end", len(b), err)
			}
			if _, err := st.Write(up); err != nil {
				t.Fatal(err)
			}
			st.CloseWrite()
			st.Close()
			if b := <-got; !bytes.Equal(b, up) {
				t.Fatalf("the local server got %d bytes, want %d", len(b), len(up))
			}
		}
	})
}
