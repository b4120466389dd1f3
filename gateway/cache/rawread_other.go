//go:build !unix

package cache

import (
	"net"
	"syscall"
)

// tcpSocket returns nil: raw socket reads are unix-only (see
// rawread_unix.go), so here the fast path reads and writes through the
// net.Conn, with the runtime's poller, as it does for any wrapped
// connection.
func tcpSocket(net.Conn) syscall.RawConn { return nil }

// readFD is not called: tcpSocket returns nil, so the fast path never has
// a raw descriptor here.
func readFD(int, []byte) (int, error) {
	panic("cache: raw socket read on a platform without it")
}
