package cache

import (
	"io"
	"os"
	"syscall"
)

// connSender returns a fileSender for a TCP socket's rc (tcpSocket), or
// nil without one, in which case bodies are written from memory.
func connSender(rc syscall.RawConn) *fileSender {
	if rc == nil {
		return nil
	}
	s := &fileSender{rc: rc}
	s.step = s.send
	return s
}

// maxSendfile bounds one sendfile call (Linux moves at most 0x7ffff000
// bytes per call anyway).
const maxSendfile = 1 << 30

// fileSender sends a response head and a file range on one connection.
// It is kept per connection, with its poller callback bound once, so that a
// response allocates nothing for it.
type fileSender struct {
	rc   syscall.RawConn
	step func(uintptr) bool // s.send, bound once
	// One call's state, for step.
	head         []byte
	fd           int
	off, n, sent int64
	op           string
	err          error
}

// sendFile sends *head (what is left of it) and then n bytes of the file fd
// from offset off. The head goes with MSG_MORE, so that it leaves in the
// same segments as the file's first bytes (one writev's worth, as nginx's
// tcp_nopush does with a cork); the last sendfile call pushes. Waiting for
// a full socket buffer goes through the runtime's poller, so the
// connection's write deadline holds.
func (s *fileSender) sendFile(head *[]byte, fd int, off, n int64) (int64, error) {
	s.head, s.fd, s.off, s.n, s.sent, s.op, s.err = *head, fd, off, n, 0, "sendmsg", nil
	err := s.rc.Write(s.step)
	*head = s.head
	s.head = nil
	switch {
	case err != nil:
		return s.sent, err
	case s.err != nil:
		return s.sent, os.NewSyscallError(s.op, s.err)
	}
	return s.sent, nil
}

// send makes what progress the socket allows; false means wait until it
// is writable.
func (s *fileSender) send(sock uintptr) bool {
	flags := syscall.MSG_NOSIGNAL
	if s.n > 0 {
		flags |= syscall.MSG_MORE // pushed by the last sendfile; never for an empty range
	}
	for len(s.head) > 0 {
		k, e := syscall.SendmsgN(int(sock), s.head, nil, nil, flags)
		switch e {
		case nil:
			s.head = s.head[k:]
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			s.err = e
			return true
		}
	}
	s.op = "sendfile"
	for s.sent < s.n {
		o := s.off + s.sent
		k, e := syscall.Sendfile(int(sock), s.fd, &o, int(min(s.n-s.sent, maxSendfile)))
		if k > 0 {
			s.sent += int64(k)
		}
		switch {
		case e == syscall.EINTR:
		case e == syscall.EAGAIN:
			return false
		case e != nil:
			s.err = e
			return true
		case k == 0:
			// The file ends before the range does: cut short, so the
			// connection is closed rather than the response padded.
			s.err = io.ErrUnexpectedEOF
			return true
		}
	}
	return true
}
