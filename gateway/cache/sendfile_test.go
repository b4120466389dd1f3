package cache_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway/cache/l2"
)

func l2Env(t *testing.T, o envOpt) *env {
	t.Helper()
	e, _ := l2EnvAt(t, t.TempDir(), o)
	return e
}

// l2EnvAt is an env whose store is the L2 tier it returns, in dir; the
// tier is closed at the end of the test, or earlier by the caller.
func l2EnvAt(t *testing.T, dir string, o envOpt) (*env, *l2.Tier) {
	t.Helper()
	t2, err := l2.Open(l2.Options{Dir: dir, Bytes: 256 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { t2.Close() })
	o.opts.Store = t2
	return newEnv(t, sizedOrigin, o), t2
}

// TestL2HitsSentFromTheFileAreExact serves L2 hits of a small, a mid-size
// and a large object through the fast path, written from the file's
// mapping or sent by sendfile (FastOptions.Sendfile), on keep-alive
// connections from several clients at once, and checks every byte, the
// hit's origin (L2) and HEAD. The server's send buffers are small, so a
// large body takes many writes or sendfile calls and waits for the socket
// in between.
func TestL2HitsSentFromTheFileAreExact(t *testing.T) {
	for _, sendfile := range []bool{false, true} {
		t.Run(fmt.Sprintf("sendfile=%v", sendfile), func(t *testing.T) { testL2HitsExact(t, sendfile) })
	}
}

func testL2HitsExact(t *testing.T, sendfile bool) {
	e := l2Env(t, envOpt{sendfile: sendfile, wrapListener: func(l net.Listener) net.Listener { return smallSendBuffers{l} }})
	sizes := []int{0, 5000, 100 << 10, 1<<20 + 100}
	for _, n := range sizes {
		e.get(fmt.Sprintf("/o?size=%d", n))
	}
	waitStored(t, e, len(sizes))
	e.concurrently(4, 5, func() error {
		for _, n := range sizes {
			r, err := e.fetch(fmt.Sprintf("/o?size=%d", n))
			switch {
			case err != nil:
				return fmt.Errorf("%d bytes: %v", n, err)
			case r.body != string(bodyFor("/o", n)):
				return fmt.Errorf("%d bytes: body differs (%d bytes read)", n, len(r.body))
			case !strings.Contains(r.cs(), "detail=l2"):
				return fmt.Errorf("%d bytes: Cache-Status %q, want an L2 hit", n, r.cs())
			}
		}
		return nil
	})
	if got, want := fastCount(e, "served"), 4*5*len(sizes); got != want {
		t.Errorf("fast path served %d hits, want %d", got, want)
	}
	r := e.do(http.MethodHead, fmt.Sprintf("/o?size=%d", sizes[2]), nil, nil)
	if r.status != 200 || r.body != "" || r.header.Get("Content-Length") != strconv.Itoa(sizes[2]) {
		t.Errorf("HEAD: %d, body %d bytes, Content-Length %q", r.status, len(r.body), r.header.Get("Content-Length"))
	}
	if e.count.Load() != int64(len(sizes)) {
		t.Errorf("origin asked %d times, want %d", e.count.Load(), len(sizes))
	}
}

// TestL2HitToAStalledClientEndsAtTheWriteTimeout: a client that stops
// reading in the middle of a large L2 hit, written or sent by sendfile,
// must not hold the connection past the server's WriteTimeout (the
// cleanup's Drain also fails if the connection is still open).
func TestL2HitToAStalledClientEndsAtTheWriteTimeout(t *testing.T) {
	for _, sendfile := range []bool{false, true} {
		t.Run(fmt.Sprintf("sendfile=%v", sendfile), func(t *testing.T) { testStalledClient(t, sendfile) })
	}
}

func testStalledClient(t *testing.T, sendfile bool) {
	// Small send buffers on the server and a small receive buffer here, so
	// the body cannot all sit in socket buffers while the client stalls.
	const size = 8 << 20
	path := fmt.Sprintf("/o?size=%d", size)
	// The fill goes through a front without the write timeout (on a loaded
	// machine it may take longer than the timeout); the stalled client then
	// talks to a second front over the same L2 directory.
	dir := t.TempDir()
	fill, filled := l2EnvAt(t, dir, envOpt{})
	fill.get(path, "Host", "shop") // one Host for both fronts: it is in the key
	waitStored(t, fill, 1)
	if err := filled.Close(); err != nil {
		t.Fatal(err)
	}
	e, _ := l2EnvAt(t, dir, envOpt{sendfile: sendfile, server: func(s *http.Server) { s.WriteTimeout = time.Second },
		wrapListener: func(l net.Listener) net.Listener { return smallSendBuffers{l} }})

	c, err := net.Dial("tcp", e.front.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.(*net.TCPConn).SetReadBuffer(64 << 10)
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: shop\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(resp.Header.Get("Cache-Status"), "detail=l2") {
		t.Fatalf("Cache-Status %q, want an L2 hit", resp.Header.Get("Cache-Status"))
	}
	// Stall well past the write timeout, then read what is left: the
	// server must have given up and closed, so the body ends short.
	time.Sleep(2 * time.Second)
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil || n >= size {
		t.Fatalf("a stalled client still got the whole body (%d bytes, %v): the write timeout did not end the send", n, err)
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the server never closed the stalled connection (%d bytes read)", n)
	}
}
