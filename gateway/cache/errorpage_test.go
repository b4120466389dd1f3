package cache_test

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meridian-edge/meridian/gateway/cache"
	"github.com/meridian-edge/meridian/gateway/cache/cachetest"
	"github.com/meridian-edge/meridian/gateway/origin"
	"github.com/meridian-edge/meridian/internal/testutil"
	"github.com/meridian-edge/meridian/middleware"
)

// TestPoPMadeErrorsCarryRequestIDViaAndCacheStatus: the 502 and 504 the PoP
// makes when the origin refuses or does not answer carry what every other
// response carries (the request's X-Request-Id, our Via, a Cache-Status
// entry), their body names the PoP and the request id, the WARN log line
// has the request id and the origin server, and the request metrics count
// them as made by the PoP.
func TestPoPMadeErrorsCarryRequestIDViaAndCacheStatus(t *testing.T) {
	hang := make(chan struct{})
	defer close(hang)
	refused := func() string { // a loopback port nothing listens on
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		return "http://" + addr
	}()
	tests := []struct {
		name       string
		origin     string
		wantCode   int
		wantDetail string
		wantServer bool // the log names the origin server
	}{
		{"refused", refused, 502, "detail=origin-unreachable", true},
		{"hang", rawOrigin(t, func(net.Conn) { <-hang }), 504, "detail=origin-timeout", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			logs := &testutil.SyncBuffer{}
			c, err := cache.New(cache.Options{L1Bytes: 8 << 20, PoPID: "eu-test-1", Logger: slog.New(slog.NewTextHandler(logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			reg := prometheus.NewRegistry()
			m := middleware.NewPoPRequestMetrics(reg, "eu-test-1", func(*http.Request) string { return "shop" })
			observed := make(chan struct{}, 1)
			h := c.Handler(cache.SitePolicy{SiteID: "shop"}, cachetest.Transport(t, tc.origin, 300*time.Millisecond))
			front := newServer(t, middleware.RequestID(middleware.Observe(m.Observer(),
				func(*http.Request, int, int64, time.Duration) { observed <- struct{}{} })(h)))

			req, _ := http.NewRequest("GET", front.URL+"/x", nil)
			req.Header.Set("X-Request-Id", "sre-check-42")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.wantCode {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tc.wantCode, body)
			}
			if got := resp.Header.Get("X-Request-Id"); got != "sre-check-42" {
				t.Errorf("X-Request-Id %q, want the request's sre-check-42", got)
			}
			if got := resp.Header.Get("Via"); got != "1.1 meridian-eu-test-1" {
				t.Errorf("Via %q, want 1.1 meridian-eu-test-1", got)
			}
			if cs := resp.Header.Get("Cache-Status"); !strings.HasPrefix(cs, "meridian; fwd=uri-miss") || !strings.Contains(cs, tc.wantDetail) {
				t.Errorf("Cache-Status %q, want meridian; fwd=uri-miss ... %s", cs, tc.wantDetail)
			}
			if !strings.Contains(string(body), "meridian-eu-test-1") || !strings.Contains(string(body), "sre-check-42") || !strings.Contains(string(body), `"shop"`) {
				t.Errorf("body %q does not name the PoP, the request id and the site", body)
			}
			select {
			case <-observed:
			case <-time.After(5 * time.Second):
				t.Fatal("the request was never observed")
			}
			line := ""
			for _, l := range strings.Split(logs.String(), "\n") {
				if strings.Contains(l, `msg="origin failed"`) {
					line = l
				}
			}
			if !strings.Contains(line, "level=WARN") || !strings.Contains(line, "request_id=sre-check-42") {
				t.Errorf("WARN log line lacks the request id: %q", line)
			}
			if want := "server=" + strings.TrimPrefix(tc.origin, "http://"); tc.wantServer && !strings.Contains(line, want) {
				t.Errorf("log line %q does not name the origin server (%s)", line, want)
			}
			reason := strings.TrimPrefix(tc.wantDetail, "detail=")
			gen := promtest.ToFloat64(m.GeneratedCounter("shop", tc.wantCode, reason))
			if gen != 1 {
				t.Errorf("meridian_http_responses_generated_total{site=shop,code=%d,reason=%s} = %v, want 1", tc.wantCode, reason, gen)
			}
		})
	}
}

// TestOriginErrorPassedOnIsNotCountedAsGenerated: an origin's own 503 is the
// origin's answer, not the PoP's.
func TestOriginErrorPassedOnIsNotCountedAsGenerated(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := middleware.NewPoPRequestMetrics(reg, "eu-test-1", func(*http.Request) string { return "site1" })
	observed := make(chan struct{}, 1)
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(503)
		io.WriteString(w, "origin says no")
	}, envOpt{plainFront: true, wrapFront: func(h http.Handler) http.Handler {
		return middleware.RequestID(middleware.Observe(m.Observer(), func(*http.Request, int, int64, time.Duration) { observed <- struct{}{} })(h))
	}})
	r := e.get("/busy")
	if r.status != 503 || r.body != "origin says no" || r.header.Get("X-Request-Id") == "" {
		t.Fatalf("got %d %q id %q, want the origin's 503 with a request id", r.status, r.body, r.header.Get("X-Request-Id"))
	}
	<-observed
	if n := promtest.CollectAndCount(reg, "meridian_http_responses_generated_total"); n != 0 {
		t.Errorf("an origin's 503 made %d generated-response series, want none", n)
	}
}

// TestEveryPathGetsTheSameErrorPage: a request the cache passes on to the
// origin (an unsafe method, a GET with a body, a bypassed site, a WebSocket
// upgrade) and a request that goes through the cache (a cacheable GET, a
// GET that says no-store) get the same 502 from the PoP when the origin is
// down: the same body (it names the PoP, the site and the request id), the
// same header fields, a Cache-Status saying why the origin was asked and
// why it failed, and they are counted as made by the PoP. Served as the PoP
// serves: the fast path's listener in front, the request id middleware,
// a real origin pool aimed at a port nothing listens on.
func TestEveryPathGetsTheSameErrorPage(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead, _ := url.Parse("http://" + ln.Addr().String())
	ln.Close()
	pool, err := origin.New(origin.Options{Site: "shop", Servers: []origin.Server{{URL: dead}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)

	logs := &testutil.SyncBuffer{}
	c, err := cache.New(cache.Options{L1Bytes: 8 << 20, PoPID: "eu-test-1", Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	cached := c.Handler(cache.SitePolicy{SiteID: "shop"}, pool)
	bypassed := c.Handler(cache.SitePolicy{SiteID: "shop", Bypass: true}, pool)
	noOrigin := c.Handler(cache.SitePolicy{SiteID: "shop"}, nil)
	route := func(host string) http.Handler {
		switch {
		case strings.HasPrefix(host, "bypass."):
			return bypassed
		case strings.HasPrefix(host, "noorigin."):
			return noOrigin
		}
		return cached
	}
	m := middleware.NewPoPRequestMetrics(prometheus.NewRegistry(), "eu-test-1", func(*http.Request) string { return "shop" })
	observed := make(chan struct{}, 16)
	front := httptest.NewUnstartedServer(middleware.RequestID(middleware.Observe(m.Observer(),
		func(*http.Request, int, int64, time.Duration) { observed <- struct{}{} })(
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { route(r.Host).ServeHTTP(w, r) }))))
	fast := c.Fast(front.Config, front.Listener, cache.FastOptions{Route: route,
		RequestIDHeader: middleware.RequestIDHeader, NewRequestID: middleware.NewRequestID})
	front.Listener = fast
	front.Start()
	t.Cleanup(front.Close)
	addr := strings.TrimPrefix(front.URL, "http://")

	// send writes one request on a new connection, as raw bytes (an
	// upgrade must not be touched by a client library), and reads the
	// answer.
	send := func(t *testing.T, raw string) (*http.Response, string) {
		t.Helper()
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(conn, raw); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("reading the answer to %q: %v", raw, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-observed:
		case <-time.After(5 * time.Second):
			t.Fatal("the request was never observed")
		}
		return resp, string(body)
	}
	const id = "X-Request-Id: sre-check-42\r\n"
	ref, refBody := send(t, "GET /page HTTP/1.1\r\nHost: www.shop.test\r\n"+id+"\r\n")
	if ref.StatusCode != 502 || ref.Header.Get("Cache-Status") != "meridian; fwd=uri-miss; detail=origin-unreachable" {
		t.Fatalf("cacheable GET: %d Cache-Status %q, want 502 meridian; fwd=uri-miss; detail=origin-unreachable", ref.StatusCode, ref.Header.Get("Cache-Status"))
	}
	for _, want := range []string{"502 Bad Gateway from PoP meridian-eu-test-1", `"shop"`, "sre-check-42"} {
		if !strings.Contains(refBody, want) {
			t.Fatalf("cacheable GET: body %q does not say %q", refBody, want)
		}
	}

	tests := []struct {
		name, raw, wantCacheStatus string
	}{
		{"site without an origin, GET", "GET /page HTTP/1.1\r\nHost: noorigin.shop.test\r\n" + id + "\r\n",
			"meridian; fwd=uri-miss; detail=origin-unreachable"},
		{"site without an origin, POST", "POST /order HTTP/1.1\r\nHost: noorigin.shop.test\r\nContent-Length: 9\r\n" + id + "\r\none order",
			"meridian; fwd=method; detail=origin-unreachable"},
		{"POST", "POST /order HTTP/1.1\r\nHost: www.shop.test\r\nContent-Length: 9\r\n" + id + "\r\none order",
			"meridian; fwd=method; detail=origin-unreachable"},
		{"GET with a body", "GET /page HTTP/1.1\r\nHost: www.shop.test\r\nContent-Length: 4\r\n" + id + "\r\nbody",
			"meridian; fwd=bypass; detail=origin-unreachable"},
		{"OPTIONS", "OPTIONS /page HTTP/1.1\r\nHost: www.shop.test\r\n" + id + "\r\n",
			"meridian; fwd=method; detail=origin-unreachable"},
		{"bypassed site", "GET /page HTTP/1.1\r\nHost: bypass.shop.test\r\n" + id + "\r\n",
			"meridian; fwd=bypass; detail=origin-unreachable"},
		{"WebSocket upgrade", "GET /page HTTP/1.1\r\nHost: www.shop.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + id + "\r\n",
			"meridian; fwd=bypass; detail=origin-unreachable"},
		{"no-store GET", "GET /page HTTP/1.1\r\nHost: www.shop.test\r\nCache-Control: no-store\r\n" + id + "\r\n",
			"meridian; fwd=uri-miss; detail=origin-unreachable"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := promtest.ToFloat64(m.GeneratedCounter("shop", 502, "origin-unreachable"))
			resp, body := send(t, tc.raw)
			if resp.StatusCode != 502 {
				t.Fatalf("status %d, want 502 (%q)", resp.StatusCode, body)
			}
			if body != refBody {
				t.Errorf("body\n%q\nwant the cacheable GET's\n%q", body, refBody)
			}
			if got := resp.Header.Get("Cache-Status"); got != tc.wantCacheStatus {
				t.Errorf("Cache-Status %q, want %q", got, tc.wantCacheStatus)
			}
			for k, v := range ref.Header {
				switch k {
				case "Date", "Cache-Status":
					continue
				}
				if got := resp.Header.Values(k); strings.Join(got, ", ") != strings.Join(v, ", ") {
					t.Errorf("%s: %q, want the cacheable GET's %q", k, got, v)
				}
			}
			for k, v := range resp.Header {
				if _, ok := ref.Header[k]; !ok && k != "Connection" {
					t.Errorf("%s: %q, which the cacheable GET's page does not have", k, v)
				}
			}
			if n := promtest.ToFloat64(m.GeneratedCounter("shop", 502, "origin-unreachable")) - before; n != 1 {
				t.Errorf("counted %v times as made by the PoP (origin-unreachable), want once", n)
			}
		})
	}
	// only-if-cached with nothing stored: the same page, as a 504 of its
	// own reason, and no origin asked (so no WARN line).
	t.Run("only-if-cached", func(t *testing.T) {
		resp, body := send(t, "GET /never-stored HTTP/1.1\r\nHost: www.shop.test\r\nCache-Control: only-if-cached\r\n"+id+"\r\n")
		if resp.StatusCode != 504 || resp.Header.Get("Cache-Status") != "meridian; fwd=miss; detail=only-if-cached" {
			t.Fatalf("%d Cache-Status %q, want 504 meridian; fwd=miss; detail=only-if-cached", resp.StatusCode, resp.Header.Get("Cache-Status"))
		}
		for _, want := range []string{"504 Gateway Timeout from PoP meridian-eu-test-1", "only-if-cached", "sre-check-42"} {
			if !strings.Contains(body, want) {
				t.Errorf("body %q does not say %q", body, want)
			}
		}
		for k, v := range ref.Header {
			if k != "Date" && k != "Cache-Status" && k != "Content-Length" && strings.Join(resp.Header.Values(k), ", ") != strings.Join(v, ", ") {
				t.Errorf("%s: %q, want the origin-failure page's %q", k, resp.Header.Values(k), v)
			}
		}
		if n := promtest.ToFloat64(m.GeneratedCounter("shop", 504, "only-if-cached")); n != 1 {
			t.Errorf("counted %v times as made by the PoP (only-if-cached), want once", n)
		}
	})
	if n := strings.Count(logs.String(), `level=WARN msg="origin failed" request_id=sre-check-42`); n != len(tests)+1 {
		t.Errorf("%d WARN origin failed lines with the request id, want one per request (%d):\n%s", n, len(tests)+1, logs.String())
	}
}
