package tunnel

import (
	"context"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"
)

// An idle held TCP connection holds no copy buffer at the agent: the heap
// in use per held connection, edge and agent together (one process here),
// after each carried one byte, stays below what one more copy buffer
// (copyBufferSize) would make it. v2's figure includes the edge's frame
// buffer of x/net's client for each request body it sends (the largest
// frame the agent reads, h2AgentFrameSize), held while the body waits.
// Before the agent's copies took their buffers only while bytes flowed,
// v1 held about 70 KB and v2 175 KB here; since, about 5 KB and 78 KB.
// Not parallel: it reads the process's heap.
func TestTCPHeldConnectionMemory(t *testing.T) {
	const held = 200
	limits := map[string]int64{ProtocolV1: 32 << 10, ProtocolV2: h2AgentFrameSize + 32<<10}
	for _, proto := range tcpProtocols {
		t.Run(proto, func(t *testing.T) {
			var got sync.WaitGroup
			release := make(chan struct{})
			s := tcpSession(t, proto, Config{}, func(c *net.TCPConn) {
				var b [1]byte
				io.ReadFull(c, b[:])
				got.Done()
				<-release
			}, nil)
			// Twice: buffers left in pools are freed, so that any buffer a
			// held connection keeps is counted.
			runtime.GC()
			runtime.GC()
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			streams := make([]Stream, 0, held)
			defer func() {
				close(release)
				for _, st := range streams {
					st.Close()
				}
			}()
			got.Add(held)
			for range held {
				st, err := s.OpenTCP(context.Background(), "127.0.0.1:9")
				if err != nil {
					t.Fatal(err)
				}
				streams = append(streams, st)
				if _, err := st.Write([]byte{'H'}); err != nil {
					t.Fatal(err)
				}
			}
			done := make(chan struct{})
			go func() { got.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(time.Minute):
				t.Fatal("the local server did not get each connection's byte")
			}
			runtime.GC() // twice again: what pools keep is not held
			runtime.GC()
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			per := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / held
			t.Logf("%d bytes of heap per held connection", per)
			if per > limits[proto] {
				t.Errorf("%d bytes of heap per held connection (edge and agent), want at most %d: a copy buffer held while idle?", per, limits[proto])
			}
		})
	}
}
