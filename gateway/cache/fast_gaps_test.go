package cache_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-edge/meridian/gateway/cache"
	"github.com/meridian-edge/meridian/gateway/cache/cachetest"
	"github.com/meridian-edge/meridian/gateway/cache/l2"
	"github.com/meridian-edge/meridian/internal/testutil"
	"github.com/meridian-edge/meridian/middleware"
)

// Tests of fast-path features that had none: the request ID it puts on a
// fast hit, FastListener.Drain's deadline, and its refusal of soft-purged
// objects.

// ridFront is a PoP-like front: the cache handler behind the RequestID
// middleware for net/http, and the fast path answering hits with the same
// request ID rules (as gateway/pop.go wires it). observed collects the
// IDs the fast path reports to Observe.
type ridFront struct {
	addr     string
	reg      *prometheus.Registry
	mu       sync.Mutex
	observed []string
}

func newRIDFront(t *testing.T) *ridFront {
	t.Helper()
	origin := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		io.WriteString(w, "body of "+r.URL.Path)
	}))
	f := &ridFront{reg: prometheus.NewRegistry()}
	c, err := cache.New(cache.Options{L1Bytes: 8 << 20, Registerer: f.reg})
	if err != nil {
		t.Fatal(err)
	}
	h := c.Handler(cache.SitePolicy{SiteID: "s"}, cachetest.Transport(t, origin.URL, 0))
	srv := &http.Server{Handler: middleware.RequestID(h)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := c.Fast(srv, ln, cache.FastOptions{
		Route:           func(string) http.Handler { return h },
		RequestIDHeader: middleware.RequestIDHeader,
		NewRequestID:    middleware.NewRequestID,
		Observe: func(o *cache.FastObservation) {
			f.mu.Lock()
			f.observed = append(f.observed, o.RequestID)
			f.mu.Unlock()
		},
	})
	go srv.Serve(fl)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		if err := fl.Drain(ctx); err != nil {
			t.Errorf("fast path connections still open after the server closed: %v", err)
		}
		c.Close()
	})
	f.addr = ln.Addr().String()
	return f
}

// get sends raw (a request head) on a new connection and returns the reply's
// request ID header values and body.
func (f *ridFront) get(t *testing.T, raw string) ([]string, string) {
	t.Helper()
	conn, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	r := readReply(t, bufio.NewReader(conn), http.MethodGet)
	return r.header.Values(middleware.RequestIDHeader), r.body
}

func (f *ridFront) served(t *testing.T) int {
	t.Helper()
	return int(testutil.CounterSum(t, f.reg, "meridian_cache_fast_requests_total", "outcome", "served"))
}

var freshID = regexp.MustCompile(`^[0-9a-f]{24}$`)

// TestFastPathRequestIDFollowsMiddlewareRules: on a hit the fast path
// answers itself, the client's X-Request-Id is echoed when
// middleware.RequestID would keep it (short and printable) and replaced by
// a fresh one otherwise, and Observe sees the ID the client got, as for a
// request net/http answers through the middleware.
func TestFastPathRequestIDFollowsMiddlewareRules(t *testing.T) {
	f := newRIDFront(t)
	// The miss goes through net/http and the middleware.
	ids, body := f.get(t, "GET /a HTTP/1.1\r\nHost: x\r\nX-Request-Id: warm-1\r\nConnection: close\r\n\r\n")
	if body != "body of /a" || len(ids) != 1 || ids[0] != "warm-1" {
		t.Fatalf("miss through net/http: body %q, IDs %q; want the body and warm-1 echoed", body, ids)
	}
	testutil.WaitFor(t, "the fill to be stored", func() bool {
		return testutil.CounterSum(t, f.reg, "meridian_cache_stores_total", "outcome", "stored") == 1
	})
	cases := []struct {
		name, field string // field: the request's ID header line, "" for none
		keep        string // the ID echoed, "" when a fresh one is due
	}{
		{"valid", "X-Request-Id: abc-123", "abc-123"},
		{"valid, lower-case name", "x-request-id: Trace.42_z", "Trace.42_z"},
		{"valid, padded", "X-Request-Id:   pad   ", "pad"},
		{"valid, 128 characters", "X-Request-Id: " + strings.Repeat("k", 128), strings.Repeat("k", 128)},
		{"valid, punctuation", `X-Request-Id: !"#$%&'()*+,-./:;<=>?@[\]^_{|}~`, `!"#$%&'()*+,-./:;<=>?@[\]^_{|}~`},
		{"none", "", ""},
		{"empty", "X-Request-Id: ", ""},
		{"inner space", "X-Request-Id: bad id", ""},
		{"tab", "X-Request-Id: bad\tid", ""},
		{"129 characters", "X-Request-Id: " + strings.Repeat("k", 129), ""},
		{"non-ASCII", "X-Request-Id: caf\xc3\xa9", ""},
		{"byte 0xff", "X-Request-Id: a\xffb", ""},
	}
	seen := map[string]bool{}
	for i, tc := range cases {
		before := f.served(t)
		head := "GET /a HTTP/1.1\r\nHost: x\r\n"
		if tc.field != "" {
			head += tc.field + "\r\n"
		}
		ids, body := f.get(t, head+"Connection: close\r\n\r\n")
		if body != "body of /a" {
			t.Fatalf("%s: body %q", tc.name, body)
		}
		if n := f.served(t); n != before+1 {
			t.Fatalf("%s: the fast path served %d requests, want %d: this case did not test it", tc.name, n-before, 1)
		}
		if len(ids) != 1 {
			t.Errorf("%s: %d X-Request-Id fields %q, want one", tc.name, len(ids), ids)
			continue
		}
		id := ids[0]
		// The rule the fast path must apply is the middleware's.
		if sent := strings.TrimSpace(strings.TrimPrefix(strings.TrimPrefix(tc.field, "X-Request-Id:"), "x-request-id:")); (middleware.NewRequestID(sent) == sent) != (tc.keep != "") {
			t.Fatalf("%s: the case's expectation disagrees with middleware.NewRequestID", tc.name)
		}
		switch {
		case tc.keep != "" && id != tc.keep:
			t.Errorf("%s: ID %q, want the client's %q echoed", tc.name, id, tc.keep)
		case tc.keep == "" && !freshID.MatchString(id):
			t.Errorf("%s: ID %q, want a fresh 24-hex ID in place of the client's", tc.name, id)
		case tc.keep == "" && seen[id]:
			t.Errorf("%s: fresh ID %q given twice", tc.name, id)
		}
		seen[id] = true
		// Observe runs after the reply is written.
		testutil.WaitFor(t, "Observe to see the request", func() bool {
			f.mu.Lock()
			defer f.mu.Unlock()
			return len(f.observed) == i+1
		})
		f.mu.Lock()
		obs := f.observed[i]
		f.mu.Unlock()
		if obs != id {
			t.Errorf("%s: Observe saw ID %q, want the client's %q", tc.name, obs, id)
		}
	}
}

// dialSmallRcvBuf dials addr with a 4 KiB receive buffer, so a server
// sending a large body to it blocks until it reads.
func dialSmallRcvBuf(t *testing.T, addr string) net.Conn {
	t.Helper()
	d := &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = testutil.SetReceiveBuffer(fd, 4096)
		}); err != nil {
			return err
		}
		return serr
	}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestFastListenerDrainClosesConnectionsAtDeadline: a fast connection in
// the middle of a response (a large hit to a client that stopped reading)
// stays open through Shutdown, as documented, and Drain, when its context
// ends, closes it and returns the context's error: the client sees the
// connection end before the body's Content-Length. Both for a body sent
// from memory (L1) and one sent from a file (L2).
func TestFastListenerDrainClosesConnectionsAtDeadline(t *testing.T) {
	for _, store := range []string{"l1", "l2"} {
		t.Run(store, func(t *testing.T) {
			opts := cache.Options{L1Bytes: 64 << 20}
			if store == "l2" {
				t2, err := l2.Open(l2.Options{Dir: t.TempDir(), Bytes: 64 << 20})
				if err != nil {
					t.Fatal(err)
				}
				defer t2.Close()
				opts.Store = t2
			}
			testDrainDeadline(t, opts)
		})
	}
}

func testDrainDeadline(t *testing.T, opts cache.Options) {
	const size = 900 << 10
	origin := newServer(t, http.HandlerFunc(sizedOrigin))
	reg := prometheus.NewRegistry()
	opts.Registerer = reg
	c, err := cache.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	h := c.Handler(cache.SitePolicy{SiteID: "s"}, cachetest.Transport(t, origin.URL, 0))
	srv := &http.Server{Handler: h}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := c.Fast(srv, smallSendBuffers{ln}, cache.FastOptions{Route: func(string) http.Handler { return h }})
	go srv.Serve(fl)
	served := func() float64 {
		return testutil.CounterSum(t, reg, "meridian_cache_fast_requests_total", "outcome", "served")
	}
	path := "/big?size=" + strconv.Itoa(size)
	req := "GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n"

	warm, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_ = warm.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(warm, "GET "+path+" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if r := readReply(t, bufio.NewReader(warm), http.MethodGet); len(r.body) != size {
		t.Fatalf("warm-up: %d bytes, want %d", len(r.body), size)
	}
	warm.Close()
	testutil.WaitFor(t, "the fill to be stored", func() bool {
		return testutil.CounterSum(t, reg, "meridian_cache_stores_total", "outcome", "stored") == 1
	})

	conn := dialSmallRcvBuf(t, ln.Addr().String())
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(conn, req)
	br := bufio.NewReaderSize(conn, 16)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.ContentLength != size || served() != 1 {
		t.Fatalf("slow client's GET: Content-Length %d, fast path served %v; want %d from the fast path", resp.ContentLength, served(), size)
	}
	got, err := io.ReadFull(resp.Body, make([]byte, 1024))
	if err != nil {
		t.Fatal(err)
	}

	// Shutdown closes the listener and idle connections; this one is sending.
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	if err := srv.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	n, err := io.ReadFull(resp.Body, make([]byte, 1024))
	got += n
	if err != nil {
		t.Fatalf("the response in progress was cut at Shutdown (%d bytes read): %v; it must go on until Drain's deadline", got, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	drained := make(chan error, 1)
	go func() { drained <- fl.Drain(ctx) }()
	cancel() // the deadline: whatever is still open must be closed now
	select {
	case err := <-drained:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Drain after its context ended = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		conn.Close() // let the stuck writer go
		t.Fatal("Drain did not return after its context ended: it must close the connections still open")
	}
	rest, err := io.Copy(io.Discard, resp.Body)
	got += int(rest)
	if err == nil || got >= size {
		t.Errorf("client read %d of %d bytes (err %v) after Drain's deadline; want the connection closed mid-body", got, size, err)
	}
}

// softOrigin serves version v of every object (v changes when the test
// says), with an ETag per version and validation by If-None-Match.
type softOrigin struct {
	version atomic.Int64
	down    atomic.Bool
	asked   atomic.Int64
	inm     atomic.Int64 // conditional requests
}

func (o *softOrigin) serve(w http.ResponseWriter, r *http.Request) {
	o.asked.Add(1)
	if o.down.Load() {
		http.Error(w, "origin down", http.StatusServiceUnavailable)
		return
	}
	v := o.version.Load()
	etag := fmt.Sprintf(`"v%d"`, v)
	cc := "max-age=600, stale-if-error=600"
	if strings.HasPrefix(r.URL.Path, "/swr") {
		cc = "max-age=600, stale-while-revalidate=600, stale-if-error=600"
	}
	w.Header().Set("Cache-Control", cc)
	w.Header().Set("ETag", etag)
	if inm := r.Header.Get("If-None-Match"); inm != "" {
		o.inm.Add(1)
		if inm == etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
	}
	fmt.Fprintf(w, "%s v%d", r.URL.Path, v)
}

// TestFastPathRefusesSoftPurgedObjects: a soft-purged object, fresh by its
// own headers, is not answered by the fast path (counted as "stale") but by
// net/http under the soft-purge rules: revalidated with the origin before
// use (no stale-while-revalidate), and served stale only when the origin
// fails (stale-if-error). Both soft purges count: Cache.Purge with Soft,
// and a replicated purge log's "stale" answer (Options.PurgeCheck).
func TestFastPathRefusesSoftPurgedObjects(t *testing.T) {
	for _, how := range []string{"Purge", "PurgeCheck"} {
		t.Run(how, func(t *testing.T) {
			o := &softOrigin{}
			var staleAfter atomic.Int64 // PurgeCheck: stored before this (unix ns) is stale
			opts := cache.Options{}
			if how == "PurgeCheck" {
				opts.PurgeCheck = func(_, _ string, _ []string, storedAt time.Time) (bool, bool) {
					s := staleAfter.Load()
					return false, s != 0 && storedAt.UnixNano() < s
				}
			}
			e := newEnv(t, o.serve, envOpt{opts: opts})
			softPurge := func(path string) {
				t.Helper()
				if how == "PurgeCheck" {
					staleAfter.Store(e.clock.Now().Add(time.Second).UnixNano())
					e.clock.Advance(2 * time.Second) // later stores are after the purge
					return
				}
				n, err := e.c.Purge(context.Background(), cache.Selector{Site: "site1", Kind: cache.ByURL, Value: e.front.URL + path, Soft: true})
				if err != nil || n != 1 {
					t.Fatalf("soft purge of %s = %d, %v; want 1", path, n, err)
				}
			}
			check := func(step string, r reply, body, cs string, served, stale int) {
				t.Helper()
				if r.status != 200 || r.body != body || !strings.Contains(r.cs(), cs) {
					t.Errorf("%s: %d %q Cache-Status %q; want 200 %q with %q", step, r.status, r.body, r.cs(), body, cs)
				}
				settle(t, e)
				if s, st := fastCount(e, "served"), fastCount(e, "stale"); s != served || st != stale {
					t.Errorf("%s: fast path served %d and refused as stale %d, want %d and %d", step, s, st, served, stale)
				}
			}

			// A fresh object the fast path answers.
			check("miss", e.get("/obj"), "/obj v0", "fwd=uri-miss", 0, 0)
			check("fresh hit", e.get("/obj"), "/obj v0", "hit", 1, 0)

			// Soft-purged, origin unchanged: revalidated (a 304), then fresh
			// again and the fast path's once more.
			softPurge("/obj")
			inm := o.inm.Load()
			check("soft-purged, origin unchanged", e.get("/obj"), "/obj v0", "fwd=stale", 1, 1)
			if o.inm.Load() != inm+1 {
				t.Errorf("soft-purged object not revalidated with a conditional request")
			}
			check("revalidated", e.get("/obj"), "/obj v0", "hit", 2, 1)

			// Soft-purged, origin changed: the new version, never the old one.
			o.version.Store(1)
			softPurge("/obj")
			check("soft-purged, origin changed", e.get("/obj"), "/obj v1", "fwd=stale", 2, 2)
			check("new version", e.get("/obj"), "/obj v1", "hit", 3, 2)

			// stale-while-revalidate does not apply after a soft purge: the
			// client waits for the origin's new version.
			check("swr miss", e.get("/swr"), "/swr v1", "fwd=uri-miss", 3, 2)
			check("swr hit", e.get("/swr"), "/swr v1", "hit", 4, 2)
			o.version.Store(2)
			softPurge("/swr")
			check("soft-purged swr object", e.get("/swr"), "/swr v2", "fwd=stale", 4, 3)

			// The origin failing: the soft-purged copy answers as
			// stale-if-error, from net/http.
			softPurge("/obj")
			o.down.Store(true)
			check("soft-purged, origin down", e.get("/obj"), "/obj v1", "stale-if-error", 4, 4)
		})
	}
}

// TestFastPathDuplicateRequestIDAsMiddleware: a client sending X-Request-Id
// twice gets the ID middleware.RequestID would give it (Header.Get: the
// first field), whether net/http or the fast path answers.
func TestFastPathDuplicateRequestIDAsMiddleware(t *testing.T) {
	f := newRIDFront(t)
	ids, _ := f.get(t, "GET /a HTTP/1.1\r\nHost: x\r\nX-Request-Id: first\r\nX-Request-Id: second\r\nConnection: close\r\n\r\n")
	if len(ids) != 1 || ids[0] != "first" {
		t.Fatalf("net/http (miss): IDs %q, want [first]", ids)
	}
	testutil.WaitFor(t, "the fill to be stored", func() bool {
		return testutil.CounterSum(t, f.reg, "meridian_cache_stores_total", "outcome", "stored") == 1
	})
	ids, _ = f.get(t, "GET /a HTTP/1.1\r\nHost: x\r\nX-Request-Id: first\r\nX-Request-Id: second\r\nConnection: close\r\n\r\n")
	if f.served(t) != 1 {
		t.Fatalf("the fast path did not answer the hit")
	}
	if len(ids) != 1 || ids[0] != "first" {
		t.Fatalf("fast path (hit): IDs %q, want [first] as middleware.RequestID gives", ids)
	}
}
