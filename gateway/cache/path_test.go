package cache_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway/cache"
	"github.com/meridian-edge/meridian/gateway/cache/cachetest"
	"github.com/meridian-edge/meridian/internal/testutil"
)

func TestUnsafeMethodsForwardBodyAndInvalidate(t *testing.T) {
	var e *env
	e = newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			w.Header().Set("Cache-Control", "max-age=600")
			fmt.Fprintf(w, "get %d", e.count.Load())
			return
		}
		sum := sha256.New()
		n, _ := io.Copy(sum, r.Body)
		if r.URL.Path == "/create" {
			w.Header().Set("Location", "/a")
			w.Header().Set("Content-Location", "http://other.test/a2")
			w.WriteHeader(http.StatusCreated)
		}
		fmt.Fprintf(w, "%s %d %s", r.Method, n, hex.EncodeToString(sum.Sum(nil)))
	}, envOpt{})
	body := []byte(strings.Repeat("x\x00y", 50000))
	sum := sha256.Sum256(body)
	for _, m := range []string{"POST", "PUT", "DELETE", "PATCH", "FROB"} {
		t.Run(m, func(t *testing.T) {
			e.get("/a")
			if r := e.get("/a"); !strings.Contains(r.cs(), "hit") {
				t.Fatalf("setup: /a not cached: %q", r.cs())
			}
			r := e.do(m, "/a", nil, body)
			want := fmt.Sprintf("%s %d %s", m, len(body), hex.EncodeToString(sum[:]))
			if r.body != want || !strings.Contains(r.cs(), "fwd=method") {
				t.Fatalf("origin answered %q (Cache-Status %q), want %q", r.body, r.cs(), want)
			}
			if r := e.get("/a"); strings.Contains(r.cs(), "hit") {
				t.Fatalf("/a still served from cache after %s: %q", m, r.cs())
			}
		})
	}
	t.Run("Location", func(t *testing.T) {
		e.get("/a")
		if r := e.get("/a"); !strings.Contains(r.cs(), "hit") {
			t.Fatal("setup: /a not cached")
		}
		if r := e.do("POST", "/create", nil, []byte("new")); r.status != 201 {
			t.Fatalf("POST status %d", r.status)
		}
		if r := e.get("/a"); strings.Contains(r.cs(), "hit") {
			t.Fatalf("/a named in Location still cached: %q", r.cs())
		}
	})
	t.Run("error status does not invalidate", func(t *testing.T) {
		e.get("/b")
		e.do("POST", "/b?fail", nil, nil) // different URL: no effect either way
		if r := e.get("/b"); !strings.Contains(r.cs(), "hit") {
			t.Fatalf("/b: %q", r.cs())
		}
	})
}

func TestHeadersOnHitsMatchOrigin(t *testing.T) {
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["X-Multi"] = []string{"a", "b, c"}
		h.Set("Cache-Control", "max-age=60")
		h.Set("Connection", "X-Hop")
		h.Set("X-Hop", "secret")
		h.Set("Content-Type", "application/x-thing")
		io.WriteString(w, "data")
	}, envOpt{})
	for i, phase := range []string{"miss", "hit"} {
		r := e.get("/h")
		if got := r.header["X-Multi"]; len(got) != 2 || got[0] != "a" || got[1] != "b, c" {
			t.Errorf("%s: X-Multi = %q", phase, got)
		}
		if r.header.Get("X-Hop") != "" || r.header.Get("Connection") != "" {
			t.Errorf("%s: hop-by-hop fields reached the client", phase)
		}
		if r.header.Get("Content-Type") != "application/x-thing" || r.header.Get("Via") != "1.1 meridian-test-pop" {
			t.Errorf("%s: Content-Type %q Via %q", phase, r.header.Get("Content-Type"), r.header.Get("Via"))
		}
		if i == 1 && r.header.Get("Age") == "" {
			t.Errorf("hit without Age")
		}
	}
}

func TestFillRequestHeaders(t *testing.T) {
	seen := make(chan http.Header, 4)
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
		w.Header().Set("Cache-Control", "max-age=60")
	}, envOpt{})
	e.get("/f", "Connection", "X-Private", "X-Private", "1", "X-Forwarded-For", "198.51.100.7",
		"If-None-Match", `"client"`, "Range", "bytes=0-1", "X-Original-URL", "/admin", "X-HTTP-Method-Override", "DELETE")
	h := <-seen
	for _, f := range []string{"X-Private", "If-None-Match", "Range", "X-Original-URL", "X-Http-Method-Override"} {
		if v := h.Get(f); v != "" {
			t.Errorf("fill forwarded %s: %q", f, v)
		}
	}
	if got := h.Get("X-Forwarded-For"); got != "198.51.100.7, 127.0.0.1" {
		t.Errorf("X-Forwarded-For %q", got)
	}
	if h.Get("Via") != "1.1 meridian-test-pop" || h.Get("X-Forwarded-Proto") != "http" || !strings.Contains(h.Get("Forwarded"), "for=127.0.0.1") {
		t.Errorf("forwarding fields: %v", h)
	}
}

func TestInterimResponsesNotStored(t *testing.T) {
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</a.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, "final")
	}, envOpt{})
	var codes []int
	ctx := httptrace.WithClientTrace(t.Context(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error { codes = append(codes, code); return nil },
	})
	for i := 0; i < 2; i++ {
		req, _ := http.NewRequestWithContext(ctx, "GET", e.front.URL+"/e", nil)
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "final" || resp.StatusCode != 200 || resp.Header.Get("Link") != "" {
			t.Fatalf("request %d: %d %q Link=%q", i, resp.StatusCode, b, resp.Header.Get("Link"))
		}
	}
	if len(codes) != 1 || codes[0] != 103 {
		t.Fatalf("interim responses %v: want one 103 on the miss and none on the hit", codes)
	}
}

// rawOrigin listens on loopback and runs fn for each connection.
func rawOrigin(t *testing.T, fn func(net.Conn)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); fn(c) }()
		}
	}()
	return "http://" + ln.Addr().String()
}

func TestOriginFailuresThroughCache(t *testing.T) {
	hang := make(chan struct{})
	defer close(hang)
	tests := []struct {
		name     string
		fn       func(net.Conn)
		wantCode int
		wantText string
	}{
		{"hang", func(net.Conn) { <-hang }, 504, "did not answer in time"},
		{"reset", func(c net.Conn) { c.(*net.TCPConn).SetLinger(0); c.Close() }, 502, "reset the connection"},
		{"malformed", func(c net.Conn) {
			bufio.NewReader(c).ReadString('\n')
			io.WriteString(c, "NOT HTTP AT ALL\r\n\r\n")
		}, 502, "malformed response"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := cache.New(cache.Options{L1Bytes: 8 << 20})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			h := c.Handler(cache.SitePolicy{SiteID: "shop"}, cachetest.Transport(t, rawOrigin(t, tc.fn), 300*time.Millisecond))
			e := &env{t: t}
			e.front = newServer(t, h)
			e.client = http.DefaultClient
			r := e.get("/x")
			if r.status != tc.wantCode || !strings.Contains(r.body, tc.wantText) || !strings.Contains(r.body, `"shop"`) {
				t.Fatalf("got %d %q, want %d mentioning %q and the site", r.status, r.body, tc.wantCode, tc.wantText)
			}
		})
	}
}

func TestStaleServedWhenOriginDown(t *testing.T) {
	var e *env
	e = newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=1, stale-if-error=3600")
		io.WriteString(w, "kept")
	}, envOpt{timeout: time.Second})
	e.get("/d")
	e.origin.CloseClientConnections()
	e.origin.Close()
	e.clock.Advance(time.Minute)
	r := e.get("/d")
	if r.status != 200 || r.body != "kept" || !strings.Contains(r.cs(), "stale-if-error") {
		t.Fatalf("origin down: %d %q %q, want the stale copy", r.status, r.body, r.cs())
	}
	if r := e.get("/other"); r.status != 502 {
		t.Fatalf("uncached URL with origin down: %d, want 502", r.status)
	}
}

func TestCollapsing(t *testing.T) {
	release := make(chan struct{})
	var e *env
	e = newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		<-release
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, strings.Repeat("c", 5000))
	}, envOpt{})
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan string, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := e.client.Get(e.front.URL + "/hot")
			if err != nil {
				errs <- err.Error()
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if len(b) != 5000 {
				errs <- fmt.Sprintf("short body %d", len(b))
			}
		}()
	}
	testutil.WaitFor(t, "the first request to reach the origin", func() bool { return e.count.Load() >= 1 })
	time.Sleep(200 * time.Millisecond) // let the others queue up (not asserted)
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := e.count.Load(); got != 1 {
		t.Fatalf("origin saw %d requests for 200 concurrent misses, want 1", got)
	}
}

func TestUncacheableWaitersGoConcurrently(t *testing.T) {
	const n = 10
	var arrived sync.WaitGroup
	arrived.Add(n)
	var e *env
	e = newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "private")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		arrived.Done()
		// Every request must be at the origin at once: if the waiters were
		// sent one after another this would never finish.
		done := make(chan struct{})
		go func() { arrived.Wait(); close(done) }()
		select {
		case <-done:
			io.WriteString(w, "mine")
		case <-time.After(10 * time.Second):
			io.WriteString(w, "serialised")
		}
	}, envOpt{})
	var wg sync.WaitGroup
	bodies := make(chan string, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bodies <- e.get("/private").body
		}()
	}
	wg.Wait()
	close(bodies)
	for b := range bodies {
		if b != "mine" {
			t.Fatalf("body %q: waiters were not sent to the origin concurrently", b)
		}
	}
	if got := e.count.Load(); got != n {
		t.Fatalf("origin requests %d, want %d (private responses are never shared)", got, n)
	}
}

func TestClientGoingAwayDoesNotAbortFill(t *testing.T) {
	half := make(chan struct{})
	var e *env
	e = newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Content-Length", "8")
		io.WriteString(w, "1234")
		w.(http.Flusher).Flush()
		<-half
		io.WriteString(w, "5678")
	}, envOpt{})
	req, _ := http.NewRequest("GET", e.front.URL+"/slow", nil)
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "1234" {
		t.Fatalf("first half: %q %v", buf, err)
	}
	resp.Body.Close() // the first client goes away mid-body
	// A second client arrives while the fill is still running and joins it.
	got := make(chan reply, 1)
	go func() { got <- e.get("/slow") }()
	testutil.WaitFor(t, "the second client to join the fill", func() bool {
		return strings.Contains(metricText(t, e), `meridian_cache_collapsed_total{pop="test-pop",site="site1"} 1`)
	})
	close(half)
	if r := <-got; r.body != "12345678" {
		t.Fatalf("second client got %q", r.body)
	}
	if r := e.get("/slow"); r.body != "12345678" || !strings.Contains(r.cs(), "hit") {
		t.Fatalf("after the fill: %q %q, want a hit", r.body, r.cs())
	}
	if n := e.count.Load(); n != 1 {
		t.Fatalf("origin requests %d, want 1", n)
	}
}

func TestUncacheableURLsStopCollapsing(t *testing.T) {
	const n = 8
	var arrived sync.WaitGroup
	arrived.Add(n)
	var e *env
	e = newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if e.count.Load() == 1 {
			io.WriteString(w, "first")
			return
		}
		// Before any header is sent, all n requests must be here: once a URL
		// proved uncacheable its requests must not queue behind a leader.
		arrived.Done()
		done := make(chan struct{})
		go func() { arrived.Wait(); close(done) }()
		select {
		case <-done:
			io.WriteString(w, "direct")
		case <-time.After(10 * time.Second):
			io.WriteString(w, "queued")
		}
	}, envOpt{})
	if r := e.get("/dyn"); r.body != "first" {
		t.Fatal(r.body)
	}
	var wg sync.WaitGroup
	bodies := make(chan string, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); bodies <- e.get("/dyn").body }()
	}
	wg.Wait()
	close(bodies)
	for b := range bodies {
		if b != "direct" {
			t.Fatalf("got %q: requests for an uncacheable URL were queued behind one another", b)
		}
	}
}

// TestPurgeDuringFill: a request after a purge does not join a fill that
// started before it (whose body is what was purged): it fetches anew and
// gets the origin's new body, while the request already reading the old
// fill finishes it; the old body is not stored. The same holds for an
// invalidation by a write to the URL.
func TestPurgeDuringFill(t *testing.T) {
	for _, how := range []string{"purge", "put"} {
		t.Run(how, func(t *testing.T) {
			release := make(chan struct{})
			var releaseOnce sync.Once
			var version atomic.Int64
			e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
				if r.Method != http.MethodGet {
					version.Add(1) // the write changes the object
					return
				}
				w.Header().Set("Cache-Control", "max-age=600")
				if v := version.Load(); v > 0 {
					fmt.Fprintf(w, "v%d", v+1)
					return
				}
				io.WriteString(w, "v1 begins")
				w.(http.Flusher).Flush()
				<-release
				io.WriteString(w, ", v1 ends")
			}, envOpt{})
			t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) }) // before the origin's Close waits for it
			first, err := e.client.Get(e.front.URL + "/doc")
			if err != nil {
				t.Fatal(err)
			}
			defer first.Body.Close()
			part := make([]byte, len("v1 begins"))
			if _, err := io.ReadFull(first.Body, part); err != nil {
				t.Fatal(err)
			}
			if how == "purge" {
				version.Add(1) // the object changed at the origin; the site purges it
				if _, err := e.c.Purge(context.Background(), cache.Selector{Site: "site1", Kind: cache.ByURL, Value: e.front.URL + "/doc"}); err != nil {
					t.Fatal(err)
				}
			} else if r := e.do(http.MethodPut, "/doc", nil, []byte("new")); r.status != 200 {
				t.Fatalf("PUT: %d", r.status)
			}
			// Joined to the old fill, this request would wait for its end,
			// which the origin holds back: a bound, not a timing.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.front.URL+"/doc", nil)
			resp, err := e.client.Do(req)
			if err != nil {
				t.Fatalf("after the %s: %v (joined the fill that began before it?)", how, err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if cs := resp.Header.Get("Cache-Status"); err != nil || string(b) != "v2" || strings.Contains(cs, "collapsed") {
				t.Fatalf("after the %s: %q %v (Cache-Status %q), want the origin's v2 from a fetch of its own", how, b, err, cs)
			}
			releaseOnce.Do(func() { close(release) })
			rest, err := io.ReadAll(first.Body)
			if err != nil || string(part)+string(rest) != "v1 begins, v1 ends" {
				t.Fatalf("the first request's body: %q %v, want v1 whole", string(part)+string(rest), err)
			}
			if r := e.get("/doc"); r.body != "v2" || !strings.Contains(r.cs(), "hit") {
				t.Fatalf("later: %q (Cache-Status %q), want the stored v2", r.body, r.cs())
			}
		})
	}
}

// lookupHold holds one request (the one sent with get) between its store
// lookup on the fast path and its join of the collapsing table, until
// resume is closed.
type lookupHold struct {
	inner        http.Handler
	held, resume chan struct{}
}

func newLookupHold() *lookupHold {
	return &lookupHold{held: make(chan struct{}), resume: make(chan struct{})}
}

// opt sets o up to hold: the fast path looks up with the cache's handler
// itself and hands its miss (with what it found) to the wrapped server.
func (lh *lookupHold) opt(o envOpt) envOpt {
	o.wrapFront = func(h http.Handler) http.Handler {
		lh.inner = h
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("X-Hold") != "" {
				close(lh.held)
				<-lh.resume
			}
			h.ServeHTTP(w, r)
		})
	}
	o.fast = func(fo *cache.FastOptions) { fo.Route = func(string) http.Handler { return lh.inner } }
	return o
}

// get sends the held request; its reply arrives once resume is closed.
func (lh *lookupHold) get(e *env, path string) <-chan reply {
	out := make(chan reply, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, e.front.URL+path, nil)
		req.Header.Set("X-Hold", "1")
		var r reply
		if resp, err := e.client.Do(req); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			r = reply{status: resp.StatusCode, header: resp.Header, body: string(b)}
		}
		out <- r
	}()
	return out
}

// TestLookupBeforeFillJoinAfter: a request that looked the store up (on
// the fast path) before a fill stored its object, and reaches the
// collapsing table after that fill left it, is answered from the store,
// not by a second origin fetch.
func TestLookupBeforeFillJoinAfter(t *testing.T) {
	release := make(chan struct{})
	var releaseOnce sync.Once
	lh := newLookupHold()
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Cache-Control", "max-age=600")
		io.WriteString(w, "the object")
	}, lh.opt(envOpt{}))
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
	leader := make(chan reply, 1)
	go func() {
		r, _ := e.fetch("/hot")
		leader <- r
	}()
	testutil.WaitFor(t, "the leader at the origin", func() bool { return e.count.Load() == 1 })
	late := lh.get(e, "/hot")
	<-lh.held // looked up: a miss, the fill still at the origin
	releaseOnce.Do(func() { close(release) })
	if r := <-leader; r.body != "the object" {
		t.Fatalf("leader: %d %q", r.status, r.body)
	}
	testutil.WaitFor(t, "the object stored", func() bool { return strings.Contains(e.get("/hot").cs(), "hit") })
	close(lh.resume)
	r := <-late
	if r.body != "the object" || !strings.Contains(r.cs(), "hit") || e.count.Load() != 1 {
		t.Fatalf("the late request: %q (Cache-Status %q), %d origin requests; want a hit and one origin request", r.body, r.cs(), e.count.Load())
	}
}

// TestLookupStaleRevalidatedJoinAfter is TestLookupBeforeFillJoinAfter for
// a stale object: a request that found it stale before a revalidation
// refreshed it, and reaches the collapsing table after that revalidation
// left, is answered from the refreshed object instead of asking the origin
// once more.
func TestLookupStaleRevalidatedJoinAfter(t *testing.T) {
	release := make(chan struct{})
	var releaseOnce sync.Once
	lh := newLookupHold()
	var revalidations atomic.Int64
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("ETag", `"v1"`)
		if r.Header.Get("If-None-Match") == "" {
			io.WriteString(w, "the object")
			return
		}
		revalidations.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		w.WriteHeader(http.StatusNotModified)
	}, lh.opt(envOpt{}))
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
	if r := e.get("/hot"); r.body != "the object" {
		t.Fatalf("fill: %d %q", r.status, r.body)
	}
	e.clock.Advance(2 * time.Minute) // stale
	leader := make(chan reply, 1)
	go func() {
		r, _ := e.fetch("/hot")
		leader <- r
	}()
	testutil.WaitFor(t, "the revalidation at the origin", func() bool { return revalidations.Load() == 1 })
	late := lh.get(e, "/hot")
	<-lh.held // looked up: stale, the revalidation still at the origin
	releaseOnce.Do(func() { close(release) })
	if r := <-leader; r.body != "the object" {
		t.Fatalf("leader: %d %q", r.status, r.body)
	}
	testutil.WaitFor(t, "the object refreshed", func() bool { return strings.Contains(e.get("/hot").cs(), "hit") })
	close(lh.resume)
	r := <-late
	if r.body != "the object" || !strings.Contains(r.cs(), "hit") || revalidations.Load() != 1 {
		t.Fatalf("the late request: %q (Cache-Status %q), %d revalidations; want a hit and one revalidation", r.body, r.cs(), revalidations.Load())
	}
}
