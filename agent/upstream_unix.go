//go:build unix

package agent

import "syscall"

// peekOpen asks the socket, without waiting and without taking a byte,
// whether its peer has closed it or sent something: one recv with
// MSG_PEEK|MSG_DONTWAIT, open when it would block.
func peekOpen(rc syscall.RawConn) bool {
	open := false
	var b [1]byte
	err := rc.Read(func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		open = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
		return true // never wait for the socket
	})
	return err == nil && open
}
