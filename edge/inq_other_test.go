//go:build !linux

package edge_test

import "net"

// unreadBytes cannot tell on this system.
func unreadBytes(net.Conn) int { return -1 }
