package cache_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway/cache"
)

// wrappedConns hides the listener's *net.TCPConn behind another type, so
// the fast path reads through net.Conn instead of its raw descriptor.
type wrappedConns struct{ net.Listener }

type wrappedConn struct{ net.Conn }

func (l wrappedConns) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return wrappedConn{c}, nil
}

// fastReadFronts are the two ways the fast path reads and writes a
// connection: a TCP socket's descriptor directly (waiting for it after a
// read that emptied it, writing with raw writev calls), and any other
// net.Conn through Read and Write.
var fastReadFronts = map[string]func(net.Listener) net.Listener{
	"tcp":      nil,
	"net.Conn": func(l net.Listener) net.Listener { return wrappedConns{l} },
}

// TestFastPathReadsHeadsAsTheyArrive: a head that arrives in pieces, a
// request after an idle pause and two pipelined in one write are all
// answered on one connection, in order, by the fast path.
func TestFastPathReadsHeadsAsTheyArrive(t *testing.T) {
	for name, wrap := range fastReadFronts {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, fastOrigin, envOpt{wrapListener: wrap})
			e.get("/a", "Host", "x")
			e.get("/b", "Host", "x")
			waitStored(t, e, 2)
			c, br := rawConn(t, e)
			want := func(what, body string) {
				t.Helper()
				r := readReply(t, br, "GET")
				if r.status != 200 || r.body != body || !strings.Contains(r.cs(), "hit") {
					t.Errorf("%s: %d %q Cache-Status %q, want a hit with %q", what, r.status, r.body, r.cs(), body)
				}
			}
			for _, piece := range []string{"GE", "T /a HTTP/1.1\r", "\nHost: x\r\n", "\r", "\n"} {
				if _, err := io.WriteString(c, piece); err != nil {
					t.Fatal(err)
				}
				time.Sleep(20 * time.Millisecond) // each piece its own segment and read
			}
			want("head in pieces", "body of /a")
			time.Sleep(50 * time.Millisecond) // the connection waits idle
			io.WriteString(c, "GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
			want("after a pause", "body of /b")
			io.WriteString(c, "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
			want("first pipelined", "body of /a")
			want("second pipelined", "body of /b")
			if n := fastCount(e, "served"); n != 4 {
				t.Errorf("fast path served %d, want 4", n)
			}
		})
	}
}

// TestFastPathClosesTricklingHeads: a head that never ends, sent a byte at a
// time, is cut off at the server's ReadHeaderTimeout, counted from its first
// byte: each byte wakes the connection, and none may restart the clock.
func TestFastPathClosesTricklingHeads(t *testing.T) {
	for name, wrap := range fastReadFronts {
		t.Run(name, func(t *testing.T) {
			c, err := cache.New(cache.Options{L1Bytes: 8 << 20})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			srv := &http.Server{ReadHeaderTimeout: 200 * time.Millisecond, Handler: http.NotFoundHandler()}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var front net.Listener = ln
			if wrap != nil {
				front = wrap(ln)
			}
			fl := c.Fast(srv, front, cache.FastOptions{Route: func(string) http.Handler { return nil }})
			go srv.Serve(fl)
			defer func() {
				srv.Close()
				fl.Close()
			}()
			// Before the dial: the server's clock starts at its accept,
			// which may come before Dial returns here.
			start := time.Now()
			conn, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			stop := make(chan struct{})
			defer close(stop)
			go func() {
				io.WriteString(conn, "GET /a HTTP/1.1\r\nX-Trickle: ")
				for range 250 { // 5 s of a byte every 20 ms
					select {
					case <-stop:
						return
					case <-time.After(20 * time.Millisecond):
					}
					if _, err := io.WriteString(conn, "a"); err != nil {
						return
					}
				}
			}()
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			var b [1]byte
			_, err = conn.Read(b[:])
			waited := time.Since(start)
			switch {
			case err == nil || errors.Is(err, os.ErrDeadlineExceeded):
				t.Fatalf("the server kept the trickling connection open (read: %v)", err)
			case waited < 200*time.Millisecond:
				t.Errorf("the server hung up after %v, before its 200ms timeout", waited)
			case waited > 4*time.Second:
				// The trickle lasts 5 s: a clock restarted by each byte
				// closes only after it stops.
				t.Errorf("the server hung up after %v, not at its 200ms timeout: the trickle kept it open", waited)
			}
		})
	}
}

// TestFastPathWritesLargeL1HitsToSlowClients: an L1 hit far larger than
// the socket buffers (and than one raw writev offers) reaches a client that reads slowly intact (the writes
// stop at a full buffer, wait and go on, head and body in order), and a
// client that stops reading is cut off at the server's WriteTimeout.
func TestFastPathWritesLargeL1HitsToSlowClients(t *testing.T) {
	// Over a raw writev's 1 MiB (maxRawWrite), and 200 times the send
	// buffer: L1's large-body pool keeps it.
	const size = 1600 << 10
	path := fmt.Sprintf("/big?size=%d", size)
	for name, wrap := range fastReadFronts {
		t.Run(name, func(t *testing.T) {
			small := func(l net.Listener) net.Listener {
				l = smallSendBuffers{l}
				if wrap != nil {
					l = wrap(l)
				}
				return l
			}
			e := newEnv(t, sizedOrigin, envOpt{opts: cache.Options{L1Bytes: 64 << 20, L1LargeBytes: 32 << 20, L1MaxObject: 4 << 20},
				wrapListener: small, server: func(s *http.Server) { s.WriteTimeout = time.Second }})
			e.get(path, "Host", "x")
			waitStored(t, e, 1)

			c, br := rawConn(t, e)
			_ = c.(*net.TCPConn).SetReadBuffer(16 << 10)
			for i := range 2 { // twice on one connection: the writer is reused
				io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n")
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatal(err)
				}
				if cs := resp.Header.Get("Cache-Status"); !strings.Contains(cs, "detail=l1") {
					t.Fatalf("hit %d: Cache-Status %q, want an L1 hit", i, cs)
				}
				var got bytes.Buffer
				chunk := make([]byte, 16<<10)
				for {
					n, err := resp.Body.Read(chunk)
					got.Write(chunk[:n])
					if err == io.EOF {
						break
					}
					if err != nil {
						t.Fatalf("hit %d: after %d bytes: %v", i, got.Len(), err)
					}
					time.Sleep(200 * time.Microsecond)
				}
				if !bytes.Equal(got.Bytes(), bodyFor("/big", size)) {
					t.Fatalf("hit %d: body of %d bytes differs from the origin's %d", i, got.Len(), size)
				}
			}
			if n := fastCount(e, "served"); n != 2 {
				t.Errorf("fast path served %d, want 2", n)
			}

			stalled, err := net.Dial("tcp", strings.TrimPrefix(e.front.URL, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer stalled.Close()
			_ = stalled.(*net.TCPConn).SetReadBuffer(16 << 10)
			io.WriteString(stalled, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n")
			time.Sleep(2 * time.Second) // well past the write timeout
			_ = stalled.SetReadDeadline(time.Now().Add(20 * time.Second))
			n, err := io.Copy(io.Discard, bufio.NewReader(stalled))
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("the server never closed the stalled connection (%d bytes read)", n)
			}
			if n >= size {
				t.Fatalf("a stalled client still got the whole body (%d bytes): the write timeout did not end the send", n)
			}
		})
	}
}
