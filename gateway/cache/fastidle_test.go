package cache_test

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// TestFastPathNewConnectionGetsTheHeaderTimeout: a client that connects and
// sends nothing, or only part of a head, is disconnected after the server's
// ReadHeaderTimeout, as net/http does, not kept for the (much longer)
// IdleTimeout that only a keep-alive connection between requests gets; and
// such a keep-alive connection, once it was answered, is not cut at the
// header timeout.
func TestFastPathNewConnectionGetsTheHeaderTimeout(t *testing.T) {
	const headerTimeout = 200 * time.Millisecond
	for name, wrap := range fastReadFronts {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, fastOrigin, envOpt{wrapListener: wrap, server: func(s *http.Server) {
				s.ReadHeaderTimeout = headerTimeout
				s.IdleTimeout = time.Hour
			}})
			addr := strings.TrimPrefix(e.front.URL, "http://")
			for what, send := range map[string]string{
				"nothing":     "",
				"half a head": "GET /a HTTP/1.1\r\nHo",
			} {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				io.WriteString(c, send)
				// 50 times the header timeout, far below the idle one: the
				// connection must have been closed by then.
				_ = c.SetReadDeadline(time.Now().Add(50 * headerTimeout))
				var b [1]byte
				if _, err := c.Read(b[:]); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
					t.Errorf("%s: the connection was still open after %v with ReadHeaderTimeout %v (read: %v)", what, 50*headerTimeout, headerTimeout, err)
				}
				c.Close()
			}

			// A keep-alive connection between requests waits for IdleTimeout.
			e.get("/a", "Host", "x")
			waitStored(t, e, 1)
			c, br := rawConn(t, e)
			for i := range 2 {
				if i == 1 {
					time.Sleep(5 * headerTimeout)
				}
				if _, err := io.WriteString(c, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
					t.Fatalf("request %d: %v", i+1, err)
				}
				if r := readReply(t, br, "GET"); r.status != 200 || !strings.Contains(r.cs(), "hit") {
					t.Fatalf("request %d: %d %s, want a hit", i+1, r.status, r.cs())
				}
			}
		})
	}
}
