//go:build unix

package h1client

import "syscall"

// peeker asks a socket, without waiting and without taking a byte,
// whether its peer has closed it or sent something: one recv with
// MSG_PEEK|MSG_DONTWAIT, open when it would block. One is made per
// connection, on its first reuse, so that asking allocates nothing (a
// closure per ask cost three allocations per request).
type peeker struct {
	rc   syscall.RawConn
	fn   func(fd uintptr) bool // p.peek, bound once
	b    [1]byte
	open bool
}

func newPeeker(rc syscall.RawConn) *peeker {
	p := &peeker{rc: rc}
	p.fn = p.peek
	return p
}

func (p *peeker) peek(fd uintptr) bool {
	_, _, err := syscall.Recvfrom(int(fd), p.b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	p.open = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
	return true // never wait for the socket
}

// Open reports whether the socket is open with nothing to read.
func (p *peeker) Open() bool {
	p.open = false
	err := p.rc.Read(p.fn)
	return err == nil && p.open
}
