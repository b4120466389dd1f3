package cache

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/meridian-edge/meridian/middleware"
)

// net/http writes an HTTP/1.x response through a 4 KiB buffer: for a stored
// body larger than what is left of that buffer after the header, the header
// and the first part of the body leave in one write(2) and the rest in
// another, so a hit of a 16 KiB object costs two syscalls and, on the
// client, two wake-ups. A coalescing connection lets the cache hold that
// first write back for the length of one response body and send it with the
// rest in a single writev(2); see maxCoalesced for where that stops paying.

// Coalesce prepares srv, before it serves ln, so that stored responses of
// 2 to 32 KiB leave in one writev(2) on HTTP/1.x connections; serve the
// returned listener:
//
//	srv.Serve(cache.Coalesce(srv, ln))
//
// It wraps ln's connections and chains srv.ConnContext so that the cache's
// handlers find them. Without it everything works, with one more write per
// hit of a 4-32 KiB body. It applies to plain-text HTTP/1.x only: srv must
// serve the returned listener directly (behind a TLS listener the server
// sees *tls.Conn and nothing changes; HTTP/2 connections pass through).
func Coalesce(srv *http.Server, ln net.Listener) net.Listener {
	prev := srv.ConnContext
	srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		if prev != nil {
			ctx = prev(ctx, c)
		}
		if cc, ok := c.(*coalescingConn); ok {
			return context.WithValue(ctx, connValue, cc)
		}
		return ctx
	}
	return coalescingListener{ln}
}

const connValue ctxKey = 100

type coalescingListener struct{ net.Listener }

func (l coalescingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &coalescingConn{Conn: c}, nil
}

// coalescingConn holds back one write while a handler asks it to and sends
// it together with the next one.
type coalescingConn struct {
	net.Conn
	// found is the fast path's lookup for the first request of a
	// connection it handed off (see Fast).
	found atomic.Pointer[fastFound]
	fast  *FastListener // the fast path that handed it off, or nil
	// streak is the fast connection's bounce streak, and responses the
	// complete responses net/http has sent since (see reclaimAfter); only
	// the connection's one serving goroutine touches them.
	streak, responses int
	mu                sync.Mutex
	held              bool
	pending           []byte
	// vec and bufs are the writev's buffers, kept here because a local
	// net.Buffers escapes through the net.Conn.
	vec  [2][]byte
	bufs net.Buffers
}

// maxHeld bounds what is held back: net/http's connection buffer is 4 KiB,
// so a larger write is not the header flush this exists for.
const maxHeld = 8 << 10

func (c *coalescingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.pending) == 0 {
		if c.held && len(p) <= maxHeld {
			c.pending = append(c.pending[:0], p...)
			c.held = false // hold one write only
			return len(p), nil
		}
		return c.Conn.Write(p)
	}
	c.vec = [2][]byte{c.pending, p}
	c.bufs = c.vec[:]
	n, err := c.bufs.WriteTo(c.Conn)
	held := int64(len(c.pending))
	c.pending = c.pending[:0]
	c.vec, c.bufs = [2][]byte{}, nil
	if n < held {
		return 0, err
	}
	return int(n - held), err
}

// hold makes the next write wait for the one after it (or release).
func (c *coalescingConn) hold() {
	c.mu.Lock()
	c.held = true
	c.mu.Unlock()
}

// release sends a write still held back and stops holding.
func (c *coalescingConn) release() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.held = false
	return c.flushLocked()
}

func (c *coalescingConn) flushLocked() error {
	if len(c.pending) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.pending)
	c.pending = c.pending[:0]
	return err
}

// ReadFrom keeps sendfile(2) for responses net/http copies from files.
func (c *coalescingConn) ReadFrom(r io.Reader) (int64, error) {
	c.mu.Lock()
	err := c.flushLocked()
	c.mu.Unlock()
	if err != nil {
		return 0, err
	}
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(c.Conn, r)
}

// CloseWrite keeps net/http's graceful close of TCP connections.
func (c *coalescingConn) CloseWrite() error {
	if err := c.release(); err != nil {
		return err
	}
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Close does not wait for the lock: it may be called while a write to a
// client that stopped reading blocks (http.Server.Close), and must unblock
// it. A held write is dropped; handlers always release before they return.
func (c *coalescingConn) Close() error {
	c.dropFound()
	return c.Conn.Close()
}

// dropFound releases the fast path's lookup if no handler took it.
func (c *coalescingConn) dropFound() {
	c.found.Swap(nil).release()
}

// takeFound returns the fast path's lookup for r when it was made for key.
func takeFound(r *http.Request, key string) (st *stored, varyMiss, ok bool) {
	cc, _ := r.Context().Value(connValue).(*coalescingConn)
	if cc == nil || cc.found.Load() == nil {
		return nil, false, false
	}
	f := cc.found.Swap(nil)
	if f == nil {
		return nil, false, false
	}
	if f.key != key || r.ProtoMajor != 1 || f.noLookup {
		f.release()
		return nil, false, false
	}
	if b := f.call.Swap(nil); b != nil {
		b.c.Close() // no middleware took it over
	}
	return f.st, f.varyMiss, true
}

// Coalescing pays off for bodies up to maxCoalesced only. Measured on
// loopback (bench/cacheproxy pinned to one CPU, wrk -c64, CPU per hit):
// 16 KiB bodies 17.7 µs coalesced against 18.2 µs in two writes (within
// noise), but 256 KiB bodies 51-57 µs coalesced against 42-51 µs in two
// writes, so large bodies keep net/http's two writes.
const (
	minCoalesced = 2 << 10 // smaller bodies leave with the header anyway
	maxCoalesced = 32 << 10
)

// coalescer returns the connection to hold writes on for a body of size
// bytes, or nil.
func coalescer(r *http.Request, size int64) *coalescingConn {
	if r.ProtoMajor != 1 || size < minCoalesced || size > maxCoalesced {
		return nil
	}
	cc, _ := r.Context().Value(connValue).(*coalescingConn)
	return cc
}

// writeBodyFrom sends a seekable stored body of size bytes (a tier that
// streams, or an in-memory body behind a composition of tiers): an
// io.WriterTo such as bytes.Reader hands its bytes to w in one call, without
// a copy.
func writeBodyFrom(w http.ResponseWriter, r *http.Request, body io.Reader, size int64) {
	cc := coalescer(r, size)
	if cc != nil {
		cc.hold()
		defer func() { _ = cc.release() }()
	}
	var err error
	if wt, ok := body.(io.WriterTo); ok {
		_, err = wt.WriteTo(w)
	} else {
		_, err = io.Copy(w, body)
	}
	if err != nil && r.Context().Err() == nil {
		// A tier body failed mid-way (an L2 block whose checksum does not
		// match, a read error): cut the connection so the client sees a
		// truncated response, never a short "complete" one, and say why in
		// the access log.
		if be := storeBodyError(err); be != "" {
			middleware.MarkBodyError(r.Context(), be)
		}
		panic(http.ErrAbortHandler)
	}
	if err == nil && cc != nil {
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
	}
}

// writeBody sends a stored body on w, through one writev with the header when
// the connection coalesces.
func writeBody(w http.ResponseWriter, r *http.Request, body []byte) {
	cc := coalescer(r, int64(len(body)))
	if cc == nil {
		_, _ = w.Write(body)
		return
	}
	cc.hold()
	defer func() { _ = cc.release() }()
	_, err := w.Write(body)
	if err == nil {
		// Push the end of the body out now, while the header flush is still
		// held, instead of at the end of the request after release.
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		} else {
			_ = http.NewResponseController(w).Flush()
		}
	}
}
