package gateway_test

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway"
	"github.com/meridian-edge/meridian/gateway/cache"
	"github.com/meridian-edge/meridian/gateway/headers"
	"github.com/meridian-edge/meridian/gateway/tlsedge"
	"github.com/meridian-edge/meridian/gateway/tlsedge/devca"
	mtestutil "github.com/meridian-edge/meridian/internal/testutil"
)

// cacheableOrigin serves every path as cacheable for ten minutes.
func cacheableOrigin(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		io.WriteString(w, "object "+r.URL.Path)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// exchange sends raw requests on one keep-alive connection and reads the
// responses.
func exchange(t *testing.T, addr string, reqs ...string) []*http.Response {
	t.Helper()
	return mtestutil.Exchange(t, addr, reqs...)
}

// TestFastHitsKeepThePoPsObservability: hits the fast path answers still
// carry a request ID, and reach the PoP's request metrics and access log as
// the middleware chain's would.
func TestFastHitsKeepThePoPsObservability(t *testing.T) {
	o := cacheableOrigin(t)
	logs := &mtestutil.SyncBuffer{}
	p := startPoP(t, gateway.Options{
		Logger: slog.New(slog.NewJSONHandler(logs, nil)),
		Sites:  []gateway.Site{{Name: "a", Hosts: []string{"a.test"}, Origin: pool(t, "a", o.URL, 0)}},
	})
	got := exchange(t, p.HTTPAddr(),
		"GET /x HTTP/1.1\r\nHost: a.test\r\n\r\n",
		"GET /x HTTP/1.1\r\nHost: a.test\r\nX-Request-Id: trace-42\r\n\r\n",
		"GET /x HTTP/1.1\r\nHost: a.test\r\n\r\n",
	)
	for i, r := range got[1:] {
		if !strings.Contains(r.Header.Get("Cache-Status"), "hit") {
			t.Fatalf("response %d: Cache-Status %q, want a hit", i+1, r.Header.Get("Cache-Status"))
		}
	}
	if id := got[1].Header.Get("X-Request-Id"); id != "trace-42" {
		t.Errorf("fast hit X-Request-Id %q, want the client's trace-42", id)
	}
	if id := got[2].Header.Get("X-Request-Id"); len(id) != 24 {
		t.Errorf("fast hit X-Request-Id %q, want a new 24-digit ID", id)
	}
	reg := p.Registry()
	if n := mtestutil.CounterSum(t, reg, "meridian_cache_fast_requests_total", "outcome", "served"); n != 2 {
		t.Fatalf("fast path served %v hits, want 2 (the first request was a miss)", n)
	}
	// Observers run after the reply has left.
	mtestutil.WaitFor(t, "meridian_http_requests_total{site=a} = 3", func() bool {
		return mtestutil.CounterSum(t, reg, "meridian_http_requests_total", "site", "a") == 3
	})
	mtestutil.WaitFor(t, "three access log lines", func() bool { return strings.Count(logs.String(), `"msg":"request"`) == 3 })
	if !strings.Contains(logs.String(), `"request_id":"trace-42"`) {
		t.Errorf("access log lacks the fast hit's request ID:\n%s", logs.String())
	}
}

// TestFastPathLeavesPluginSitesToTheirPlugins: hits of a site that runs
// plugins go through them; hits of a site without go the fast path.
func TestFastPathLeavesPluginSitesToTheirPlugins(t *testing.T) {
	o := cacheableOrigin(t)
	p := startPoP(t, gateway.Options{
		Sites: []gateway.Site{
			{Name: "plugged", Hosts: []string{"plugged.test"}, Origin: pool(t, "plugged", o.URL, 0)},
			{Name: "bare", Hosts: []string{"bare.test"}, Origin: pool(t, "bare", o.URL, 0)},
		},
		Plugins: func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if gateway.SiteFromContext(r.Context()) == "plugged" {
					w.Header().Set("X-Plugin", "ran")
				}
				next.ServeHTTP(w, r)
			})
		},
		PluginSites: func(site string) bool { return site == "plugged" },
	})
	for _, host := range []string{"plugged.test", "bare.test"} {
		req := "GET /y HTTP/1.1\r\nHost: " + host + "\r\n\r\n"
		got := exchange(t, p.HTTPAddr(), req, req)
		hit := got[1]
		if !strings.Contains(hit.Header.Get("Cache-Status"), "hit") {
			t.Fatalf("%s: second request %q, want a hit", host, hit.Header.Get("Cache-Status"))
		}
		if want := host == "plugged.test"; (hit.Header.Get("X-Plugin") == "ran") != want {
			t.Errorf("%s: plugin ran on the hit: %v, want %v", host, !want, want)
		}
	}
	if n := mtestutil.CounterSum(t, p.Registry(), "meridian_cache_fast_requests_total", "outcome", "served"); n != 1 {
		t.Errorf("fast path served %v hits, want 1 (bare.test's)", n)
	}
	// Only bare.test's connection came back from net/http after its miss;
	// plugged.test's stays there (it would be handed off again at once).
	mtestutil.WaitFor(t, "a connection taken back", func() bool {
		return mtestutil.CounterSum(t, p.Registry(), "meridian_cache_fast_requests_total", "outcome", "reclaimed") >= 1
	})
	if n := mtestutil.CounterSum(t, p.Registry(), "meridian_cache_fast_requests_total", "outcome", "reclaimed"); n != 1 {
		t.Errorf("connections taken back from net/http: %v, want 1", n)
	}
}

// TestFastPathWithHTTPSKeepsRedirects: with HTTPS configured, a site whose
// plain HTTP redirects keeps redirecting (the fast path leaves it to the
// policy), while another site's plain-HTTP hits take the fast path.
func TestFastPathWithHTTPSKeepsRedirects(t *testing.T) {
	o := cacheableOrigin(t)
	files, err := devca.Ensure(t.TempDir(), "test", []string{"secure.test", "open.test"})
	if err != nil {
		t.Fatal(err)
	}
	certs, err := tlsedge.New(tlsedge.Options{PoP: "test-pop", Sites: []tlsedge.SiteCert{
		{Site: "secure", Names: []string{"secure.test"}, CertFile: files.Cert, KeyFile: files.Key},
		{Site: "open", Names: []string{"open.test"}, CertFile: files.Cert, KeyFile: files.Key},
	}})
	if err != nil {
		t.Fatal(err)
	}
	p := startPoP(t, gateway.Options{
		Sites: []gateway.Site{
			{Name: "secure", Hosts: []string{"secure.test"}, Origin: pool(t, "secure", o.URL, 0)},
			{Name: "open", Hosts: []string{"open.test"}, Origin: pool(t, "open", o.URL, 0)},
		},
		TLS: gateway.TLS{Addr: "127.0.0.1:0", Certs: certs, Policies: []tlsedge.SitePolicy{
			{Names: []string{"secure.test"}, RedirectHTTP: true},
		}},
	})
	req := func(host string) string { return "GET /z HTTP/1.1\r\nHost: " + host + "\r\n\r\n" }
	for i, r := range exchange(t, p.HTTPAddr(), req("secure.test"), req("secure.test")) {
		if r.StatusCode != http.StatusMovedPermanently || !strings.HasPrefix(r.Header.Get("Location"), "https://secure.test") {
			t.Errorf("secure.test request %d over plain HTTP: %d Location %q, want a redirect to HTTPS", i, r.StatusCode, r.Header.Get("Location"))
		}
	}
	got := exchange(t, p.HTTPAddr(), req("open.test"), req("open.test"))
	if !strings.Contains(got[1].Header.Get("Cache-Status"), "hit") {
		t.Fatalf("open.test second request: %q, want a hit", got[1].Header.Get("Cache-Status"))
	}
	if n := mtestutil.CounterSum(t, p.Registry(), "meridian_cache_fast_requests_total", "outcome", "served"); n != 1 {
		t.Errorf("fast path served %v, want 1 (open.test's hit)", n)
	}
}

// TestWebSocketThroughThePoP: an upgrade reaches the origin through the
// whole PoP (middleware, cache, origin pool) and tunnels both ways, on a
// connection that began on the fast path (a hit first) and without it.
// A site with response header changes tunnels too: their writer lets
// the proxy reach the connection.
func TestWebSocketThroughThePoP(t *testing.T) {
	for _, noFast := range []bool{false, true} {
		t.Run(fmt.Sprintf("NoFastPath=%v", noFast), func(t *testing.T) { testWebSocket(t, noFast, nil) })
	}
	pol, err := headers.ForResponses(map[string]string{"X-Frame-Options": "DENY"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("ResponseHeaders", func(t *testing.T) { testWebSocket(t, false, pol) })
}

func testWebSocket(t *testing.T, noFast bool, pol *headers.Policy) {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			w.Header().Set("Cache-Control", "max-age=600")
			io.WriteString(w, "page")
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n")
		brw.Flush()
		line, _ := brw.ReadString('\n')
		brw.WriteString("echo:" + line)
		brw.Flush()
	}))
	t.Cleanup(origin.Close)
	p := startPoP(t, gateway.Options{NoFastPath: noFast, Sites: []gateway.Site{{Name: "a", Hosts: []string{"a.test"}, Origin: pool(t, "a", origin.URL, 0),
		Cache: cache.SitePolicy{ResponseHeaders: pol}}}})
	exchange(t, p.HTTPAddr(), "GET /page HTTP/1.1\r\nHost: a.test\r\n\r\n") // stored
	conn, err := net.Dial("tcp", p.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	io.WriteString(conn, "GET /page HTTP/1.1\r\nHost: a.test\r\n\r\n")
	hit, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, hit.Body)
	if !strings.Contains(hit.Header.Get("Cache-Status"), "hit") {
		t.Fatalf("first request: %q, want a hit", hit.Header.Get("Cache-Status"))
	}
	if pol != nil && hit.Header.Get("X-Frame-Options") != "DENY" {
		t.Fatalf("the hit of a site with response header changes: X-Frame-Options %q", hit.Header.Get("X-Frame-Options"))
	}
	io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: status %d", resp.StatusCode)
	}
	io.WriteString(conn, "hello\n")
	if line, err := br.ReadString('\n'); err != nil || line != "echo:hello\n" {
		t.Fatalf("tunnel answered %q, %v", line, err)
	}
}
