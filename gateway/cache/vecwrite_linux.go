package cache

import (
	"net"
	"syscall"
	"unsafe"
)

// vecWriter writes a fast connection's responses: a head and a body in
// one writev(2), issued as a raw system call. The socket is non-blocking,
// so the call never waits (a full buffer is EAGAIN, waited for through the
// runtime's poller, so the write deadline holds), and the bytes it copies
// are in memory: an L1 body, or an L2 body just verified in its mapping,
// which faulted its pages in. A raw call tells the runtime nothing, so its
// monitor does not take the processor away from a write that a busy core
// happened to stretch (on a 2-core box shared with the load generator,
// handing the processor to another thread and back cost more than the
// write).
type vecWriter struct {
	rc   syscall.RawConn
	step func(uintptr) bool // w.send, bound once
	// One call's state, for step.
	bufs [2][]byte
	iov  [2]syscall.Iovec
	n    int64
	err  error
}

// maxRawWrite bounds the bytes one raw writev offers. The kernel copies as
// much as the send buffer takes (autotuned up to 4 MiB by default), and a
// raw call cannot be preempted: a stop-the-world pause waits for it. 1 MiB
// keeps a call to a few hundred microseconds and costs a large body one
// call per MiB.
const maxRawWrite = 1 << 20

// newVecWriter returns a vecWriter for a TCP socket's rc (tcpSocket), or
// nil without one (then the connection's Write is used).
func newVecWriter(rc syscall.RawConn) *vecWriter {
	if rc == nil {
		return nil
	}
	w := &vecWriter{rc: rc}
	w.step = w.send
	return w
}

// write sends a and then b, as net.Buffers.WriteTo would, and returns the
// bytes written.
func (w *vecWriter) write(a, b []byte) (int64, error) {
	w.bufs, w.n, w.err = [2][]byte{a, b}, 0, nil
	err := w.rc.Write(w.step)
	// b may be a mapping that is unmapped once its body closes.
	w.bufs, w.iov = [2][]byte{}, [2]syscall.Iovec{}
	if err == nil {
		err = w.err
	}
	return w.n, err
}

// send makes what progress the socket allows; false means wait until it is
// writable.
func (w *vecWriter) send(fd uintptr) bool {
	for {
		k, room := 0, maxRawWrite
		for _, b := range w.bufs {
			if n := min(len(b), room); n > 0 {
				w.iov[k].Base = unsafe.SliceData(b)
				w.iov[k].SetLen(n)
				room -= n
				k++
			}
		}
		if k == 0 {
			return true
		}
		r, _, e := syscall.RawSyscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&w.iov[0])), uintptr(k))
		switch e {
		case 0:
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		default:
			w.err = &net.OpError{Op: "write", Net: "tcp", Err: syscall.Errno(e)}
			return true
		}
		w.n += int64(r)
		for i := range w.bufs {
			c := min(int(r), len(w.bufs[i]))
			w.bufs[i] = w.bufs[i][c:]
			r -= uintptr(c)
		}
	}
}
