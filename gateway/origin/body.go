package origin

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// body is a response body from an origin. It ends the attempt's context when
// closed (so the total timeout covers the body and nothing leaks after it),
// aborts the body when one Read waits longer than the idle timeout, and counts
// the attempt's outcome once, when the body ends: the status class, or
// body_error when the origin's body ended early.
type body struct {
	rc     io.ReadCloser
	pool   *Pool
	server *server
	status int
	// client is the caller's context: a body cut because the client went
	// away is not the origin's fault.
	client context.Context
	cancel context.CancelFunc
	idle   time.Duration
	// idleTimer runs only while a Read waits, so a slow client (the proxy
	// blocked writing to it) never counts against the origin.
	idleTimer *time.Timer
	idleFired atomic.Bool
	n         atomic.Int64
	once      sync.Once
}

func (p *Pool) newBody(rc io.ReadCloser, s *server, status int, client context.Context, cancel context.CancelFunc) *body {
	b := &body{rc: rc, pool: p, server: s, status: status, client: client, cancel: cancel, idle: p.opts.IdleTimeout}
	if b.idle > 0 {
		b.idleTimer = time.AfterFunc(b.idle, func() { b.idleFired.Store(true); cancel() })
		b.idleTimer.Stop()
	}
	return b
}

func (b *body) Read(p []byte) (int, error) {
	if b.idleTimer != nil {
		b.idleTimer.Reset(b.idle)
	}
	n, err := b.rc.Read(p)
	if b.idleTimer != nil {
		b.idleTimer.Stop()
	}
	b.n.Add(int64(n))
	switch {
	case err == io.EOF:
		b.finish(nil)
	case err != nil:
		if b.idleFired.Load() {
			err = fmt.Errorf("origin: site %s: server %s sent no body byte for %s (timeouts.idle) after %d bytes: %w",
				b.pool.opts.Site, b.server.URL.Host, b.idle, b.n.Load(), context.DeadlineExceeded)
		}
		b.finish(err)
	}
	return n, err
}

// Close ends the attempt. A body closed before its end was abandoned by the
// caller (client gone, or not wanted): the origin answered, so the status
// class is counted.
func (b *body) Close() error {
	err := b.rc.Close()
	b.finish(nil)
	b.cancel()
	return err
}

func (b *body) finish(err error) {
	b.once.Do(func() {
		if b.idleTimer != nil {
			b.idleTimer.Stop()
		}
		outcome := statusClass(b.status)
		if err != nil && b.client.Err() == nil {
			outcome = "body_error"
			b.pool.log.Warn("origin body ended early; the client got a truncated response",
				"site", b.pool.opts.Site, "server", b.server.URL.Host, "status", b.status, "bytes", b.n.Load(), "err", err)
		}
		b.pool.count(b.server, outcome)
		b.server.release()
	})
}

// cancelBody ends the request's context when the body is closed. It is the
// body of a 101 response, which has no idle timeout: a WebSocket may be
// silent for long.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc // safe to call again: no sync.Once needed
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// upgradedBody is the body of a 101 response: the connection itself, which
// httputil.ReverseProxy needs writable to tunnel (a WebSocket).
type upgradedBody struct {
	*cancelBody
	w io.Writer
}

func (b *upgradedBody) Write(p []byte) (int, error) { return b.w.Write(p) }
