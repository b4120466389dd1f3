//go:build unix

package cache

import (
	"io"
	"net"
	"syscall"
	"unsafe"
)

// The fast path's raw socket reads are for unix systems only: they read a
// non-blocking socket descriptor with read(2) from inside RawConn.Read and
// rely on EAGAIN to hand the wait back to the runtime's poller. Windows
// sockets are handles driven by overlapped I/O (no non-blocking read(2) to
// call), so there tcpSocket returns nil and the fast path reads through
// net.Conn (rawread_other.go).

// tcpSocket returns c's descriptor access when c is a TCP socket itself,
// or nil. Only then does the fast path call the system directly: a wrapper
// type (a listener's own net.Conn) may do something in its Read or Write.
func tcpSocket(c net.Conn) syscall.RawConn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// readFD reads from a socket descriptor as conn.Read would, without the
// poller: syscall.EAGAIN when nothing is there, io.EOF at the end.
func readFD(fd int, b []byte) (int, error) {
	for {
		// Raw, as vecWriter's writes (see there): a read of a
		// non-blocking socket never waits.
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
		switch {
		case e == syscall.EINTR:
			continue
		case e != 0:
			return 0, e
		case n == 0:
			return 0, io.EOF
		}
		return int(n), nil
	}
}
