package cache_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway/cache"
	"github.com/meridian-edge/meridian/gateway/cache/l1"
	"github.com/meridian-edge/meridian/gateway/cache/l2"
	"github.com/meridian-edge/meridian/gateway/cache/tier"
	"github.com/meridian-edge/meridian/gateway/cache/tiered"
	"github.com/meridian-edge/meridian/internal/testutil"
)

// fastOrigin serves the objects the fast path tests use.
func fastOrigin(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	switch r.URL.Path {
	case "/vary":
		h.Set("Cache-Control", "max-age=600")
		h.Set("Vary", "Accept-Encoding")
		h.Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "encoded for %q", r.Header.Get("Accept-Encoding"))
		return
	case "/no-type":
		h.Set("Cache-Control", "max-age=600")
		h["Content-Type"] = nil
		io.WriteString(w, "<html>sniff me not</html>")
		return
	case "/many":
		h.Set("Cache-Control", "public, max-age=600")
		h.Add("X-Multi", "one")
		h.Add("X-Multi", "two")
		h.Set("Via", "1.1 upstream")
		h.Set("Cache-Status", "upstream; hit")
		h.Set("Surrogate-Control", "max-age=900")
		h.Set("Surrogate-Key", "k1 k2")
		h.Set("Age", "7")
		h.Set("ETag", `"v1"`)
		h.Set("Content-Type", "application/octet-stream")
		io.WriteString(w, strings.Repeat("m", 20<<10))
		return
	case "/lm":
		h.Set("Cache-Control", "max-age=600")
		h.Set("Last-Modified", "Tue, 03 Nov 2026 10:00:00 GMT")
		io.WriteString(w, "dated")
		return
	case "/empty":
		h.Set("Cache-Control", "max-age=600")
		return
	case "/stale":
		h.Set("Cache-Control", "max-age=1")
		io.WriteString(w, "short-lived")
		return
	case "/nocache":
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", `"n"`)
		io.WriteString(w, "always validated")
		return
	}
	h.Set("Cache-Control", "max-age=600")
	h.Set("Content-Type", "text/plain")
	fmt.Fprintf(w, "body of %s", r.URL.RequestURI())
}

var (
	ageRE = regexp.MustCompile(`ttl=(\d+)`)
)

// comparable reduces a reply to what must be equal between the fast path
// and net/http: Age, Date and Cache-Status's ttl may differ by the second
// that can pass between two requests. Without full, only the status, body
// and content fields count (how a miss went to origin, collapsed or not,
// depends on the timing of the fill before it).
func comparable(t *testing.T, r reply, full bool) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "%d\n", r.status)
	keys := make([]string, 0, len(r.header))
	for k := range r.header {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !full && !strings.HasPrefix(k, "Content-") {
			continue
		}
		for _, v := range r.header[k] {
			switch k {
			case "Date":
				if _, err := http.ParseTime(v); err != nil {
					t.Errorf("Date %q: %v", v, err)
				}
				v = "D"
			case "Age":
				if _, err := strconv.Atoi(v); err != nil {
					t.Errorf("Age %q is not a number", v)
				}
				v = "N"
			case "Cache-Status":
				v = ageRE.ReplaceAllString(v, "ttl=N")
			}
			fmt.Fprintf(&b, "%s: %s\n", k, v)
		}
	}
	b.WriteString(r.body)
	return b.String()
}

// fastCount reads meridian_cache_fast_requests_total{outcome} from the
// env's registry.
func fastCount(e *env, outcome string) int {
	e.t.Helper()
	return int(testutil.CounterSum(e.t, e.reg, "meridian_cache_fast_requests_total", "outcome", outcome))
}

// TestFastPathAnswersHitsAsNetHTTPDoes sends the same requests to a front
// with the fast path and to one without, and requires the same replies (but
// for header order, which HTTP does not fix), with the hits answered by the
// fast path and the other requests by net/http.
func TestFastPathAnswersHitsAsNetHTTPDoes(t *testing.T) {
	site := cache.SitePolicy{SortQuery: true, IgnoreQuery: []string{"utm_source"}}
	fast := newEnv(t, fastOrigin, envOpt{site: site})
	plain := newEnv(t, fastOrigin, envOpt{site: site, plainFront: true})
	// A connection per request (Connection: close): which responses let
	// net/http give a connection back to the fast path is another test's
	// subject.
	for _, e := range []*env{fast, plain} {
		e.client.Transport.(*http.Transport).DisableKeepAlives = true
	}
	type step struct {
		method, path string
		hdr          []string
		fastServed   bool // the fast path answers it on the fast env
	}
	steps := []step{
		{"GET", "/a", nil, false}, // miss
		{"GET", "/a", nil, true},
		{"HEAD", "/a", nil, true},
		{"GET", "/a", []string{"Connection", "keep-alive", "User-Agent", "curl/8", "Accept", "*/*"}, true},
		{"GET", "/q?b=2&a=1&utm_source=x", nil, false},
		{"GET", "/q?a=1&b=2", nil, true}, // the same key once normalised
		{"GET", "/vary", []string{"Accept-Encoding", "gzip"}, false},
		{"GET", "/vary", []string{"Accept-Encoding", "gzip"}, true},
		{"GET", "/vary", []string{"Accept-Encoding", "br"}, false}, // another variant: miss
		{"GET", "/vary", []string{"Accept-Encoding", "br"}, true},
		{"GET", "/vary", nil, false},
		{"GET", "/no-type", nil, false},
		{"GET", "/no-type", nil, true},
		{"GET", "/many", nil, false},
		{"GET", "/many", nil, true},
		{"GET", "/empty", nil, false},
		{"GET", "/empty", nil, true},
		{"GET", "/nocache", nil, false},
		{"GET", "/nocache", nil, false}, // stored, but must be validated
		{"GET", "/a", []string{"If-None-Match", `"x"`}, false},
		{"GET", "/a", []string{"Range", "bytes=0-3"}, false},
		{"GET", "/a", []string{"Cache-Control", "max-age=0"}, false},
		{"GET", "/p(a)th:@!$&'*+,;=/%41%2f~", nil, false},
		{"GET", "/p(a)th:@!$&'*+,;=/%41%2f~", nil, true},
		// Revalidations of a fresh stored response: 304s from the fast path,
		// full answers from ServeContent behind it.
		{"GET", "/many", []string{"If-None-Match", `"v1"`}, true},
		{"GET", "/many", []string{"If-None-Match", `W/"v1"`}, true},
		{"HEAD", "/many", []string{"If-None-Match", `"x", "v1"`}, true},
		{"GET", "/many", []string{"If-None-Match", `*`}, true},
		{"GET", "/many", []string{"If-None-Match", `"nope"`}, false},
		{"GET", "/many", []string{"If-None-Match", `"nope"`, "If-Modified-Since", "Tue, 03 Nov 2099 10:00:00 GMT"}, false},
		{"GET", "/lm", nil, false},
		{"GET", "/lm", []string{"If-Modified-Since", "Tue, 03 Nov 2026 10:00:00 GMT"}, true},
		{"GET", "/lm", []string{"If-Modified-Since", "Wed, 04 Nov 2026 10:00:00 GMT"}, true},
		{"GET", "/lm", []string{"If-Modified-Since", "Mon, 02 Nov 2026 10:00:00 GMT"}, false},
		{"GET", "/lm", []string{"If-Modified-Since", "yesterday"}, false},
		{"GET", "/a", []string{"If-Modified-Since", "Wed, 04 Nov 2026 10:00:00 GMT"}, false}, // no Last-Modified stored
	}
	served := 0
	for i, s := range steps {
		got := fast.do(s.method, s.path, hdr(s.hdr...), nil)
		want := plain.do(s.method, s.path, hdr(s.hdr...), nil)
		if g, w := comparable(t, got, s.fastServed), comparable(t, want, s.fastServed); g != w {
			t.Errorf("step %d %s %s: the fast path's reply differs from net/http's\n--- fast\n%s\n--- net/http\n%s", i, s.method, s.path, g, w)
		}
		if s.fastServed {
			served++
		}
		settle(t, fast)
		settle(t, plain)
		if n := fastCount(fast, "served"); n != served {
			t.Fatalf("step %d %s %s: fast path served %d requests, want %d\n%s", i, s.method, s.path, n, served, metricText(t, fast))
		}
	}
	if n := fastCount(fast, "request"); n != 8 {
		t.Errorf("requests with Range, Cache-Control or validators that do not match handed to net/http: %d, want 8", n)
	}
}

// waitStored waits until the env's cache has stored n responses (a fill
// finishes after its client got the last byte).
func waitStored(t *testing.T, e *env, n int) {
	t.Helper()
	testutil.WaitFor(t, fmt.Sprintf("%d stored responses", n), func() bool {
		return int(testutil.CounterSum(t, e.reg, "meridian_cache_stores_total", "outcome", "stored")) >= n
	})
}

// settle waits until every origin fetch the env made for the cache has
// been stored (a fill commits after its client got the last byte, and a
// request arriving before that joins the fill instead of hitting).
func settle(t *testing.T, e *env) {
	t.Helper()
	testutil.WaitFor(t, "the fills to be stored", func() bool {
		return testutil.CounterSum(t, e.reg, "meridian_cache_stores_total", "outcome", "stored") >=
			testutil.CounterSum(t, e.reg, "meridian_cache_requests_total", "result", "miss")
	})
}

// rawConn opens a TCP connection to the env's front.
func rawConn(t *testing.T, e *env) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(e.front.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, bufio.NewReader(c)
}

func readReply(t *testing.T, br *bufio.Reader, method string) reply {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

// TestFastPathPipelinedThenHandedOff pipelines hits, a miss and a hit on one
// connection: the fast path answers the first ones, hands the connection to
// net/http at the miss, and net/http answers the rest, in order.
func TestFastPathPipelinedThenHandedOff(t *testing.T) {
	e := newEnv(t, fastOrigin, envOpt{})
	e.get("/a", "Host", "x")
	waitStored(t, e, 1)
	c, br := rawConn(t, e)
	req := "GET /a HTTP/1.1\r\nHost: x\r\n\r\n" +
		"HEAD /a HTTP/1.1\r\nHost: x\r\n\r\n" +
		"GET /b HTTP/1.1\r\nHost: x\r\n\r\n" +
		"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	for i, w := range []struct{ method, body, cs string }{
		{"GET", "body of /a", "hit"}, {"HEAD", "", "hit"}, {"GET", "body of /b", "fwd=uri-miss"}, {"GET", "body of /a", "hit"},
	} {
		r := readReply(t, br, w.method)
		if r.status != 200 || r.body != w.body || !strings.Contains(r.cs(), w.cs) {
			t.Errorf("reply %d: %d %q Cache-Status %q, want 200 %q with %q", i, r.status, r.body, r.cs(), w.body, w.cs)
		}
	}
	// The miss goes to net/http with the connection, which comes back to
	// the fast path after the response, with the pipelined request that
	// net/http had read ahead.
	if n := fastCount(e, "served"); n != 3 {
		t.Errorf("fast path served %d, want 3", n)
	}
	// After the warm-up's miss and after /b (the warm-up's connection is
	// taken back after its reply reached the client: wait for it).
	testutil.WaitFor(t, "two connections taken back from net/http", func() bool { return fastCount(e, "reclaimed") == 2 })
	if n := fastCount(e, "miss"); n != 2 { // the warm-up and /b
		t.Errorf("fast path misses handed off: %d, want 2", n)
	}
}

// TestFastPathConnectionClose answers with Connection: close and closes.
func TestFastPathConnectionClose(t *testing.T) {
	e := newEnv(t, fastOrigin, envOpt{})
	e.get("/a", "Host", "x")
	waitStored(t, e, 1)
	c, br := rawConn(t, e)
	io.WriteString(c, "GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if string(b) != "body of /a" || !resp.Close {
		t.Errorf("got %q, close %v; want the body and Connection: close", b, resp.Close)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after Connection: close the server must close; read gave %v", err)
	}
	if n := fastCount(e, "served"); n != 1 {
		t.Errorf("fast path served %d, want 1", n)
	}
}

// TestFastPathLeavesOddRequestsToServer sends requests the fast path must
// not interpret to a front with it and one without: net/http must see the
// same bytes and answer the same way, however malformed they are.
func TestFastPathLeavesOddRequestsToServer(t *testing.T) {
	fast := newEnv(t, fastOrigin, envOpt{})
	plain := newEnv(t, fastOrigin, envOpt{plainFront: true})
	fast.get("/a", "Host", "x")
	plain.get("/a", "Host", "x")
	waitStored(t, fast, 1)
	waitStored(t, plain, 1)
	cases := map[string]string{
		"bare LF":            "GET /a HTTP/1.1\nHost: x\n\n",
		"obs-fold":           "GET /a HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  2\r\n\r\n",
		"duplicate Host":     "GET /a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
		"no Host":            "GET /a HTTP/1.1\r\n\r\n",
		"GET with a body":    "GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
		"chunked GET":        "GET /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"CL and TE":          "GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"HTTP/1.0":           "GET /a HTTP/1.0\r\nHost: x\r\n\r\n",
		"absolute form":      "GET http://x/a HTTP/1.1\r\nHost: x\r\n\r\n",
		"dot segments":       "GET /b/../a HTTP/1.1\r\nHost: x\r\n\r\n",
		"bad escape":         "GET /a%zz HTTP/1.1\r\nHost: x\r\n\r\n",
		"space in name":      "GET /a HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n",
		"NUL in value":       "GET /a HTTP/1.1\r\nHost: x\r\nX-A: 1\x002\r\n\r\n",
		"bad host":           "GET /a HTTP/1.1\r\nHost: x y\r\n\r\n",
		"lower-case method":  "get /a HTTP/1.1\r\nHost: x\r\n\r\n",
		"Expect":             "GET /a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
		"Connection options": "GET /a HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\n\r\n",
		"long head":          "GET /a HTTP/1.1\r\nHost: x\r\nX-Long: " + strings.Repeat("v", 6000) + "\r\n\r\n",
		"POST":               "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi",
	}
	for name, raw := range cases {
		t.Run(name, func(t *testing.T) {
			var got [2]string
			for i, e := range []*env{fast, plain} {
				c, br := rawConn(t, e)
				io.WriteString(c, raw)
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					got[i] = "no response: " + err.Error()
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				got[i] = fmt.Sprintf("%d %s", resp.StatusCode, b)
			}
			if got[0] != got[1] {
				t.Errorf("with the fast path: %q\nwithout: %q", got[0], got[1])
			}
		})
	}
	if n := fastCount(fast, "served"); n != 0 {
		t.Errorf("the fast path answered %d of these requests itself; it must answer none", n)
	}
}

// TestFastPathHandsItsLookupToTheServer: a request the fast path looks up
// but does not answer is counted once by the tiers (their admission and
// promotion count accesses), and is answered from the tier the fast path
// found it in. The object lives in L2 only (a new L1 over the same disk).
func TestFastPathHandsItsLookupToTheServer(t *testing.T) {
	dir := t.TempDir()
	storeOver := func() *tiered.Tiered {
		t1, err := l1.New(l1.Options{Bytes: 8 << 20})
		if err != nil {
			t.Fatal(err)
		}
		t2, err := l2.Open(l2.Options{Dir: dir, Bytes: 64 << 20, Sync: true})
		if err != nil {
			t.Fatal(err)
		}
		all, err := tiered.New(tiered.Options{Tiers: []tier.Tier{t1, t2}, PromoteAfter: 15})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { all.Close(); t2.Close(); t1.Close() })
		return all
	}
	first := storeOver()
	e1 := newEnv(t, fastOrigin, envOpt{opts: cache.Options{Store: first}})
	e1.get("/l2", "Host", "x")
	waitStored(t, e1, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := first.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	all := storeOver()
	e2 := newEnv(t, fastOrigin, envOpt{opts: cache.Options{Store: all}})
	r := e2.get("/l2", "Host", "x", "Range", "bytes=0-3")
	if r.status != http.StatusPartialContent || r.body != "body" || !strings.Contains(r.cs(), "detail=l2") {
		t.Fatalf("Range from L2: %d %q %q, want 206 \"body\" from l2", r.status, r.body, r.cs())
	}
	if h := all.Counters().Hits["l2"]; h != 1 {
		t.Errorf("L2 counted %d hits for one request; the server must reuse the fast path's lookup", h)
	}
	r = e2.get("/l2", "Host", "x")
	if r.body != "body of /l2" || !strings.Contains(r.cs(), "detail=l2") {
		t.Errorf("plain GET from L2: %q %q", r.body, r.cs())
	}
	if n := fastCount(e2, "served"); n != 1 {
		t.Errorf("fast path served %d L2 hits, want 1", n)
	}
	if e2.count.Load() != 0 {
		t.Errorf("origin asked %d times; L2 held the object", e2.count.Load())
	}
}

// TestFastPathCloseClosesIdleConnections: closing the server closes the fast
// path's idle keep-alive connections, as net/http closes its own.
func TestFastPathCloseClosesIdleConnections(t *testing.T) {
	e := newEnv(t, fastOrigin, envOpt{})
	e.get("/a", "Host", "x")
	waitStored(t, e, 1)
	c, br := rawConn(t, e)
	io.WriteString(c, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
	readReply(t, br, "GET")
	if n := fastCount(e, "served"); n != 1 {
		t.Fatalf("fast path served %d, want 1", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.front.Config.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("idle fast connection after Shutdown: read gave %v, want EOF", err)
	}
}

// TestFastPathClosesSlowHeads: a client that starts a request head and
// never finishes it is disconnected after the server's ReadHeaderTimeout, as
// net/http would, and an idle keep-alive one after its IdleTimeout.
func TestFastPathClosesSlowHeads(t *testing.T) {
	c, err := cache.New(cache.Options{L1Bytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srv := &http.Server{ReadHeaderTimeout: 200 * time.Millisecond, IdleTimeout: 200 * time.Millisecond,
		Handler: http.NotFoundHandler()}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := c.Fast(srv, ln, cache.FastOptions{Route: func(string) http.Handler { return nil }})
	go srv.Serve(fl)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		fl.Drain(ctx)
	}()
	for name, send := range map[string]string{
		"half a head": "GET /a HTTP/1.1\r\nHost: x\r\n",
		"nothing":     "",
	} {
		// The clock starts before the dial: the server's header timeout runs
		// from the accept, which the dial's return may follow.
		start := time.Now()
		conn, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(conn, send)
		// Generous: this asserts that the server hangs up, and not before
		// its timeout (a server closing at once would pass the first check).
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		var b [1]byte
		if _, err := conn.Read(b[:]); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%s: the server kept the connection open (read: %v)", name, err)
		} else if waited := time.Since(start); waited < 200*time.Millisecond {
			t.Errorf("%s: the server hung up after %v, before its 200ms timeout", name, waited)
		}
		conn.Close()
	}
}

// TestFastPathUnderConcurrentLoad: keep-alive clients hit, miss and
// revalidate many keys at once while the site is purged over and over;
// every reply must carry its own URL's body (no reply crosses connections
// or keys), whichever path answered it. Run with -race, it also checks the
// fast path's shared memos and hand-offs.
func TestFastPathUnderConcurrentLoad(t *testing.T) {
	e := newEnv(t, fastOrigin, envOpt{})
	stop := make(chan struct{})
	purged := make(chan struct{})
	go func() {
		defer close(purged)
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			if _, err := e.c.Purge(context.Background(), cache.Selector{Site: "site1", Kind: cache.BySite}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	errs := make(chan error, 8)
	for w := range 8 {
		go func() {
			for i := range 150 {
				path := fmt.Sprintf("/k%d", (i*7+w)%20)
				h := http.Header{}
				if i%5 == 0 {
					h.Set("If-None-Match", `"nope"`)
				}
				req, _ := http.NewRequest(http.MethodGet, e.front.URL+path, nil)
				req.Header = h
				resp, err := e.client.Do(req)
				if err != nil {
					errs <- err
					return
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 || string(b) != "body of "+path {
					errs <- fmt.Errorf("%s: %d %q %v", path, resp.StatusCode, b, err)
					return
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	close(stop)
	<-purged
	if fastCount(e, "served") == 0 {
		t.Error("the fast path served nothing: the test did not exercise it")
	}
}

// TestFastPathLeavesServerPathsToTheServer: a stored, fresh response under
// one of FastOptions.ServerPaths (ACME challenges in a PoP) is never
// answered by the fast path; other paths are.
func TestFastPathLeavesServerPathsToTheServer(t *testing.T) {
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		io.WriteString(w, "origin "+r.URL.Path)
	}, envOpt{fast: func(o *cache.FastOptions) { o.ServerPaths = []string{"/.well-known/acme-challenge/"} }})
	// A connection per request, as a challenge's fetcher and a browser
	// would: a keep-alive connection handed on for the challenge would stay
	// with the server for a while (reclaimAfter).
	get := func(path string) string {
		r := testutil.Exchange(t, e.front.Listener.Addr().String(), "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n")[0]
		return r.Header.Get("Cache-Status")
	}
	served := func() int { return fastCount(e, "served") }
	get("/.well-known/acme-challenge/tok")
	get("/page")
	testutil.WaitFor(t, "both fills", func() bool {
		return testutil.CounterSum(t, e.reg, "meridian_cache_stores_total", "outcome", "stored") == 2
	})
	if cs := get("/.well-known/acme-challenge/tok"); !strings.Contains(cs, "hit") || served() != 0 {
		t.Errorf("challenge path: Cache-Status %q, fast path served %v; want a hit from the server, none from the fast path", cs, served())
	}
	if cs := get("/page"); !strings.Contains(cs, "hit") || served() != 1 {
		t.Errorf("other path: Cache-Status %q, fast path served %v; want it served by the fast path", cs, served())
	}
}
