package gateway_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway"
)

// TestPoPEndToEnd runs the cache's request rules through a whole PoP
// (middleware, fast path, cache, origin pool) over sockets, to catch what a
// wrapper between them can break (as it once broke WebSockets).
func TestPoPEndToEnd(t *testing.T) {
	var got atomic.Value // the last body the origin received
	var count atomic.Int64
	hang := make(chan struct{})
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		count.Add(1)
		b, _ := io.ReadAll(r.Body)
		got.Store(r.Method + " " + string(b))
		switch r.URL.Path {
		case "/hints":
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			w.Header().Del("Link")
			w.Header().Set("Cache-Control", "max-age=600")
			io.WriteString(w, "after hints")
		case "/hang":
			<-hang
		default:
			w.Header().Set("Cache-Control", "max-age=600")
			io.WriteString(w, "0123456789 "+r.URL.Path)
		}
	}))
	t.Cleanup(origin.Close)
	t.Cleanup(func() { close(hang) }) // before origin.Close, which waits for handlers
	p := startPoP(t, gateway.Options{Sites: []gateway.Site{{Name: "a", Hosts: []string{"a.test"}, Origin: pool(t, "a", origin.URL, 300*time.Millisecond)}}})

	send := func(t *testing.T, raw string) *http.Response {
		t.Helper()
		r := exchange(t, p.HTTPAddr(), raw)
		return r[0]
	}
	body := func(r *http.Response) string { b, _ := io.ReadAll(r.Body); return string(b) }

	t.Run("request bodies reach the origin for every method and invalidate", func(t *testing.T) {
		send(t, "GET /doc HTTP/1.1\r\nHost: a.test\r\n\r\n")
		before := count.Load()
		if r := send(t, "GET /doc HTTP/1.1\r\nHost: a.test\r\n\r\n"); !strings.Contains(r.Header.Get("Cache-Status"), "hit") {
			t.Fatalf("not stored: %q", r.Header.Get("Cache-Status"))
		}
		for _, m := range []string{"PUT", "POST", "FROB"} {
			r := send(t, m+" /doc HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\r\nhello")
			if r.StatusCode != 200 || got.Load() != m+" hello" {
				t.Errorf("%s: status %d, origin got %q", m, r.StatusCode, got.Load())
			}
		}
		if r := send(t, "GET /doc HTTP/1.1\r\nHost: a.test\r\n\r\n"); strings.Contains(r.Header.Get("Cache-Status"), "hit") {
			t.Errorf("GET after PUT/POST was a hit (%q): the URL must be invalidated", r.Header.Get("Cache-Status"))
		}
		if n := count.Load() - before; n != 4 {
			t.Errorf("origin requests after the hit: %d, want 4 (3 writes, 1 refetch)", n)
		}
	})

	t.Run("1xx passed on, not stored", func(t *testing.T) {
		c, err := net.Dial("tcp", p.HTTPAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "GET /hints HTTP/1.1\r\nHost: a.test\r\n\r\n")
		br := bufio.NewReader(c)
		status, _ := br.ReadString('\n')
		if !strings.HasPrefix(status, "HTTP/1.1 103") {
			t.Fatalf("first status line %q, want the 103 passed on", status)
		}
		for line, _ := br.ReadString('\n'); line != "\r\n" && line != ""; line, _ = br.ReadString('\n') {
		}
		final, err := http.ReadResponse(br, nil)
		if err != nil || final.StatusCode != 200 || body(final) != "after hints" {
			t.Fatalf("final response %v %v", final, err)
		}
		hit := send(t, "GET /hints HTTP/1.1\r\nHost: a.test\r\n\r\n")
		if hit.StatusCode != 200 || !strings.Contains(hit.Header.Get("Cache-Status"), "hit") {
			t.Errorf("stored 200 after the hints: %d %q", hit.StatusCode, hit.Header.Get("Cache-Status"))
		}
	})

	t.Run("Range and HEAD from the stored response", func(t *testing.T) {
		send(t, "GET /r HTTP/1.1\r\nHost: a.test\r\n\r\n")
		r := send(t, "GET /r HTTP/1.1\r\nHost: a.test\r\nRange: bytes=2-4\r\n\r\n")
		if r.StatusCode != http.StatusPartialContent || body(r) != "234" {
			t.Errorf("Range: %d", r.StatusCode)
		}
		r = send(t, "GET /r HTTP/1.1\r\nHost: a.test\r\nRange: bytes=500-\r\n\r\n")
		if r.StatusCode != http.StatusRequestedRangeNotSatisfiable {
			t.Errorf("unsatisfiable Range: %d, want 416", r.StatusCode)
		}
		n := count.Load()
		c, err := net.Dial("tcp", p.HTTPAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "HEAD /r HTTP/1.1\r\nHost: a.test\r\n\r\n")
		h, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: "HEAD"})
		if err != nil || h.StatusCode != 200 || h.ContentLength != int64(len("0123456789 /r")) || count.Load() != n {
			t.Errorf("HEAD: %v %v (origin asked %d more)", h, err, count.Load()-n)
		}
	})

	t.Run("an origin that hangs gets a clear 504", func(t *testing.T) {
		r := send(t, "GET /hang HTTP/1.1\r\nHost: a.test\r\n\r\n")
		if b := body(r); r.StatusCode != http.StatusGatewayTimeout || !strings.Contains(b, `origin of site "a" did not answer in time`) {
			t.Errorf("hanging origin: %d %q, want 504 naming the site", r.StatusCode, b)
		}
	})
}
