package tunnel

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// UDP tunnels: the edge keeps a session per remote address of its public
// UDP port and opens a datagram stream to the agent for each one
// (Session.OpenUDP); at the agent, the tunnel opens a local socket
// (DialConfig.DialUDP, a connected UDP net.Conn) and moves datagrams both
// ways, each whole, until the session is idle for UDPIdleTimeout or the
// edge ends it. v1 carries datagrams as udp_data frames (udp_v1.go), v2 as
// length-prefixed datagrams on a full-duplex HTTP/2 stream (udp_v2.go).
// A datagram is never truncated: one too large for the other side is
// counted and dropped.

const (
	// MaxDatagram is the largest datagram a UDP tunnel carries (its v2
	// length prefix is 2 bytes).
	MaxDatagram = 65535
	// DefaultUDPIdleTimeout ends an agent's UDP session with no datagram
	// either way for that long.
	DefaultUDPIdleTimeout = 60 * time.Second
	// udpQueue bounds the datagrams queued for a v1 UDP session's reader;
	// past it datagrams are dropped, as a full socket buffer drops them.
	udpQueue = 256
)

// Datagrams is one UDP session through the tunnel, at the edge: the
// datagrams of one remote address. ReadDatagram reads the agent's next
// datagram whole into p (which should hold MaxDatagram bytes): a datagram
// longer than p is dropped with io.ErrShortBuffer; io.EOF once the agent
// ended the session (its idle timeout), an error wrapping ErrStreamReset
// when it broke (the agent could not open its socket, the session
// ended). WriteDatagram sends p as one datagram (ErrDatagramTooLarge past
// MaxDatagram). Close ends the session at both ends. One goroutine may
// read while another writes; Close may be called at any time.
type Datagrams interface {
	ReadDatagram(p []byte) (int, error)
	WriteDatagram(p []byte) error
	Close() error
}

// errNoDialUDP refuses a UDP session at an agent without DialUDP.
var errNoDialUDP = errors.New("this agent does not serve UDP sessions")

// dialers are how an agent reaches its local service for TCP and UDP
// tunnels (DialConfig.DialTCP, DialUDP, UDPIdleTimeout), and for pipes
// (DialConfig.Pipe, once the edge confirmed them).
type dialers struct {
	tcp, udp dialTCP
	udpIdle  time.Duration
	pipe     func(context.Context) (net.Conn, error)
}

// udpPeer is the tunnel's side of one UDP session at the agent, for
// pumpUDP. readDatagram gets the edge's next datagram (an error once the
// session ended); writeDatagram sends one to the edge; end makes a blocked
// readDatagram return.
type udpPeer interface {
	readDatagram(p []byte) (int, error)
	writeDatagram(p []byte) error
	end()
}

// pumpUDP moves datagrams between the local socket conn and the edge
// until either side fails, the edge ends the session, or no datagram
// went either way for idle; then it closes conn and ends p. It returns
// why the session ended: errUDPIdle, or the failure.
func pumpUDP(conn net.Conn, p udpPeer, idle time.Duration) error {
	var once sync.Once
	var why error
	stop := func(err error) {
		once.Do(func() {
			why = err
			conn.Close()
			p.end()
		})
	}
	t := time.AfterFunc(idle, func() { stop(errUDPIdle) })
	defer t.Stop()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // edge -> local
		defer wg.Done()
		buf := make([]byte, MaxDatagram)
		for {
			n, err := p.readDatagram(buf)
			if err != nil {
				stop(err)
				return
			}
			t.Reset(idle)
			if _, err := conn.Write(buf[:n]); err != nil {
				stop(err)
				return
			}
		}
	}()
	buf := make([]byte, MaxDatagram)
	for { // local -> edge
		n, err := conn.Read(buf)
		if err != nil {
			stop(err)
			break
		}
		t.Reset(idle)
		if err := p.writeDatagram(buf[:n]); err != nil {
			stop(err)
			break
		}
	}
	wg.Wait()
	return why
}

// errUDPIdle ends a UDP session with no datagram for its idle timeout.
var errUDPIdle = errors.New("idle")

// udpReason is why a UDP session ended, as the reason of v1's tcp_close:
// "idle" for the idle timeout, "" for the edge's end, else the error.
func udpReason(err error) string {
	switch {
	case errors.Is(err, errUDPIdle):
		return "idle"
	case err == nil, errors.Is(err, ErrStreamReset), errors.Is(err, io.EOF):
		return ""
	}
	return tcpReason(err)
}

// dialUDPSession dials the local socket for a UDP session (dial nil:
// refused).
func dialUDPSession(ctx context.Context, dial dialTCP, remoteAddr string) (net.Conn, error) {
	if dial == nil {
		return nil, errNoDialUDP
	}
	return dial(ctx, remoteAddr)
}

// writeDatagramTo writes p to w as one length-prefixed datagram (v2): a
// 2-byte big-endian length and p, in one Write through buf.
func writeDatagramTo(w io.Writer, buf *[]byte, p []byte) error {
	if len(p) > MaxDatagram {
		return ErrDatagramTooLarge
	}
	b := binary.BigEndian.AppendUint16((*buf)[:0], uint16(len(p)))
	b = append(b, p...)
	*buf = b
	_, err := w.Write(b)
	return err
}

// readDatagramFrom reads one length-prefixed datagram from r into p: io.EOF
// at a clean end between datagrams, errTCPTruncated inside one,
// io.ErrShortBuffer (the datagram skipped) when p is too small.
func readDatagramFrom(r io.Reader, p []byte) (int, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if err == io.ErrUnexpectedEOF {
			err = errTCPTruncated
		}
		return 0, err
	}
	n := int(binary.BigEndian.Uint16(hdr[:]))
	if n > len(p) {
		if _, err := io.CopyN(io.Discard, r, int64(n)); err != nil {
			return 0, errTCPTruncated
		}
		return 0, fmt.Errorf("tunnel: datagram of %d bytes: %w", n, io.ErrShortBuffer)
	}
	if _, err := io.ReadFull(r, p[:n]); err != nil {
		return 0, errTCPTruncated
	}
	return n, nil
}
