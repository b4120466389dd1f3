package cache_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway/cache"
	"github.com/meridian-edge/meridian/internal/testutil"
)

// bodyFor is the deterministic body the test origin serves for a path.
func bodyFor(path string, size int) []byte {
	return bytes.Repeat([]byte(path+"|"), size/(len(path)+1)+1)[:size]
}

func sizedOrigin(w http.ResponseWriter, r *http.Request) {
	size, err := strconv.Atoi(r.URL.Query().Get("size"))
	if err != nil {
		http.Error(w, "size?", http.StatusBadRequest)
		return
	}
	w.Header().Set("Cache-Control", "public, max-age=3600")
	w.Header().Set("ETag", `"`+r.URL.Path+`"`)
	w.Header().Set("Content-Length", strconv.Itoa(size))
	w.Write(bodyFor(r.URL.Path, size))
}

// slowClient dials with a tiny receive buffer, so the server cannot push a
// large body into socket buffers and finish early: it is still writing while
// the test purges and evicts.
func slowClient() *http.Client {
	d := &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = testutil.SetReceiveBuffer(fd, 4096)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableCompression: true}}
}

// smallSendBuffers fixes the server side's socket send buffer small, so a
// large body cannot be handed to the kernel at once.
type smallSendBuffers struct{ net.Listener }

func (l smallSendBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(8192)
	}
	return c, err
}

// A large stored body streamed to a slow client is delivered intact while
// the object is purged and evicted from L1 under it.
func TestLargeHitIntactWhilePurgedAndEvicted(t *testing.T) {
	const size = 400 << 10
	e := newEnv(t, sizedOrigin, envOpt{opts: cache.Options{L1Bytes: 64 << 20, L1LargeBytes: 4 << 20},
		wrapListener: func(l net.Listener) net.Listener { return smallSendBuffers{l} }})
	path := "/big/0?size=" + strconv.Itoa(size)
	e.get(path)
	if r := e.get(path); !strings.Contains(r.cs(), "hit") || r.body != string(bodyFor("/big/0", size)) {
		t.Fatalf("second GET not an intact hit: %s, %d bytes", r.cs(), len(r.body))
	}
	slow := slowClient()
	defer slow.Transport.(*http.Transport).CloseIdleConnections()
	resp, err := slow.Get(e.front.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if cs := resp.Header.Get("Cache-Status"); !strings.Contains(cs, "hit") {
		t.Fatalf("slow client's GET was not a hit: %s", cs)
	}
	got := make([]byte, 0, size)
	buf := make([]byte, 8<<10)
	n, err := io.ReadFull(resp.Body, buf)
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, buf[:n]...)

	// Purge the object and push every large body out of the pool (twelve
	// more objects of the same size into a 4 MiB pool).
	if n, err := e.c.Purge(context.Background(), cache.Selector{Site: "site1", Kind: cache.ByURL,
		Value: e.front.URL + path}); err != nil || n != 1 {
		t.Fatalf("purge: %d, %v", n, err)
	}
	for i := 1; i <= 12; i++ {
		p := fmt.Sprintf("/big/%d?size=%d", i, size)
		e.get(p)
		e.get(p)
	}
	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, rest...)
	if !bytes.Equal(got, bodyFor("/big/0", size)) {
		t.Fatalf("slow client got %d bytes, not the body it started with", len(got))
	}
	if r := e.get(path); !strings.Contains(r.cs(), "fwd=uri-miss") {
		t.Fatalf("purged object served again: %s", r.cs())
	}
}

// Through the coalescing listener and without it, stored responses of every
// size arrive intact on one keep-alive connection, full, HEAD, ranged and
// conditional.
func TestCoalescedHitsIntact(t *testing.T) {
	for _, plain := range []bool{false, true} {
		t.Run(fmt.Sprintf("plain=%v", plain), func(t *testing.T) {
			e := newEnv(t, sizedOrigin, envOpt{plainFront: plain})
			tr := &http.Transport{DisableCompression: true, MaxConnsPerHost: 1}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr}
			conns := 0
			trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
				if !i.Reused {
					conns++
				}
			}}
			do := func(method, path string, h ...string) (*http.Response, []byte) {
				t.Helper()
				req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), method, e.front.URL+path, nil)
				for i := 0; i+1 < len(h); i += 2 {
					req.Header.Set(h[i], h[i+1])
				}
				resp, err := client.Do(req)
				if err != nil {
					t.Fatalf("%s %s: %v", method, path, err)
				}
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				if err != nil {
					t.Fatalf("%s %s: %v", method, path, err)
				}
				return resp, b
			}
			for _, size := range []int{10, 3000, 3900, 5000, 16 << 10, 256 << 10} {
				p := fmt.Sprintf("/obj/%d", size)
				path := p + "?size=" + strconv.Itoa(size)
				want := bodyFor(p, size)
				for i := range 3 {
					resp, b := do(http.MethodGet, path)
					if resp.StatusCode != 200 || !bytes.Equal(b, want) || resp.ContentLength != int64(size) {
						t.Fatalf("GET %d (#%d): %d, %d bytes, length %d", size, i, resp.StatusCode, len(b), resp.ContentLength)
					}
					if i > 0 && !strings.Contains(resp.Header.Get("Cache-Status"), "hit") {
						t.Fatalf("GET %d (#%d) not a hit: %s", size, i, resp.Header.Get("Cache-Status"))
					}
				}
				if resp, b := do(http.MethodHead, path); resp.StatusCode != 200 || len(b) != 0 || resp.ContentLength != int64(size) {
					t.Fatalf("HEAD %d: %d, %d bytes, length %d", size, resp.StatusCode, len(b), resp.ContentLength)
				}
				if resp, b := do(http.MethodGet, path, "Range", "bytes=5-9"); resp.StatusCode != 206 || !bytes.Equal(b, want[5:10]) {
					t.Fatalf("Range %d: %d %q", size, resp.StatusCode, b)
				}
				if resp, _ := do(http.MethodGet, path, "If-None-Match", `"`+p+`"`); resp.StatusCode != 304 {
					t.Fatalf("If-None-Match %d: %d", size, resp.StatusCode)
				}
			}
			if conns != 1 {
				t.Fatalf("%d connections for one keep-alive client; responses broke the connection", conns)
			}
		})
	}
}

// A hot object's freshness is memoised but its age is not: Age grows with
// the clock, it goes stale on time, and a soft purge takes effect at once.
func TestHotObjectAgesAndPurges(t *testing.T) {
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("ETag", `"v"`)
		io.WriteString(w, "hello")
	}, envOpt{})
	for range 6 { // hot in L1's memo and the freshness memo
		e.get("/h")
	}
	e.clock.Advance(30 * time.Second)
	if r := e.get("/h"); !strings.Contains(r.cs(), "hit") || r.header.Get("Age") != "30" {
		t.Fatalf("after 30s: %s, Age %q", r.cs(), r.header.Get("Age"))
	}
	e.clock.Advance(40 * time.Second)
	if r := e.get("/h"); strings.Contains(r.cs(), "; hit") {
		t.Fatalf("after 70s of a 60s lifetime still a hit: %s", r.cs())
	}
	for range 6 {
		e.get("/h")
	}
	if r := e.get("/h"); !strings.Contains(r.cs(), "hit") {
		t.Fatalf("refreshed object not a hit: %s", r.cs())
	}
	if _, err := e.c.Purge(context.Background(), cache.Selector{Site: "site1", Kind: cache.ByURL, Value: e.front.URL + "/h", Soft: true}); err != nil {
		t.Fatal(err)
	}
	if r := e.get("/h"); strings.Contains(r.cs(), "; hit") {
		t.Fatalf("soft-purged hot object served as a hit: %s", r.cs())
	}
}
