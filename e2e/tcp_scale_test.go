package e2e

import (
	"bytes"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// TestTCPGibibyte carries 1 GiB each way at once through a TCP tunnel,
// byte-exact (a CRC-32C of the pattern stream at each end), each side
// half-closing when it has sent its part.
func TestTCPGibibyte(t *testing.T) { forProtocols(t, testTCPGibibyte) }

func testTCPGibibyte(t *testing.T, proto string) {
	const size = 1 << 30
	e, _, _ := startTCPEdge(t, "tok")
	got := make(chan uint32, 1)
	local, _ := localServer(t, func(c *net.TCPConn) {
		c.SetDeadline(time.Now().Add(10 * time.Minute)) // a ceiling: a hung test fails
		sum, err := sendAndCRC(c, size)
		if err != nil {
			t.Errorf("local server: %v", err)
		}
		got <- sum
	})
	_, public := startTCPAgent(t, e, proto, "gib", "tok", local)
	c := dialTCP(t, public)
	c.SetDeadline(time.Now().Add(10 * time.Minute))
	sum, err := sendAndCRC(c, size)
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	want := patternSum(size)
	if sum != want {
		t.Error("the client got other bytes than the local server sent")
	}
	if <-got != want {
		t.Error("the local server got other bytes than the client sent")
	}
}

// sendAndCRC writes size bytes of the pattern stream to c and half-closes
// it, while it reads c to its end; it returns the CRC-32C of what it read,
// and an error if it read other than size bytes.
func sendAndCRC(c *net.TCPConn, size int64) (uint32, error) {
	errc := make(chan error, 1)
	go func() {
		_, err := io.CopyN(c, &pattern{}, size)
		if err == nil {
			err = c.CloseWrite()
		}
		errc <- err
	}()
	h := crc32.New(crcTable)
	n, rerr := io.Copy(h, c)
	werr := <-errc
	if rerr == nil && n != size {
		rerr = fmt.Errorf("read %d bytes, want %d", n, size)
	}
	if rerr != nil {
		return 0, rerr
	}
	return h.Sum32(), werr
}

// TestTCPManyConnections: 500 connections through one TCP tunnel at
// once, from four loopback addresses (the edge allows 256 in flight per
// client address), each an echo of its own bytes, all byte-exact.
func TestTCPManyConnections(t *testing.T) { forProtocols(t, testTCPManyConnections) }

func testTCPManyConnections(t *testing.T, proto string) {
	const conns, msg = 500, 4 << 10
	e, _, _ := startTCPEdge(t, "tok")
	local, accepted := localServer(t, func(c *net.TCPConn) {
		c.SetDeadline(time.Now().Add(5 * time.Minute))
		io.Copy(c, c) // echo until the client's half-close
		c.CloseWrite()
	})
	_, public := startTCPAgent(t, e, proto, "many", "tok", local)
	addr, err := net.ResolveTCPAddr("tcp", public)
	if err != nil {
		t.Fatal(err)
	}
	// Every connection is open before any sends: 500 at once, for sure.
	open := make([]*net.TCPConn, conns)
	for i := range open {
		from := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+i%4))}
		c, err := net.DialTCP("tcp", from, addr)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Minute))
		open[i] = c
	}
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i, c := range open {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := bytes.Repeat([]byte{byte(i), byte(i >> 8)}, msg/2)
			if _, err := c.Write(out); err != nil {
				errs <- fmt.Errorf("connection %d: write: %v", i, err)
				return
			}
			c.CloseWrite()
			in, err := io.ReadAll(c)
			if err != nil || !bytes.Equal(in, out) {
				errs <- fmt.Errorf("connection %d: read %d bytes (%v), want its %d back", i, len(in), err, len(out))
			}
		}()
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if failed++; failed <= 5 {
			t.Error(err)
		}
	}
	if failed > 0 {
		t.Errorf("%d of %d connections failed", failed, conns)
	}
	if n := accepted(); n != conns {
		t.Errorf("the local server accepted %d connections, want %d", n, conns)
	}
}
