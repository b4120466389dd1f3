package plugin_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-edge/meridian/gateway"
	"github.com/meridian-edge/meridian/gateway/cache"
	gworigin "github.com/meridian-edge/meridian/gateway/origin"
	"github.com/meridian-edge/meridian/internal/testutil"
	"github.com/meridian-edge/meridian/middleware"
	"github.com/meridian-edge/meridian/middleware/plugin"
	"github.com/meridian-edge/meridian/plugins"
	"github.com/meridian-edge/meridian/plugins/native"
	"github.com/meridian-edge/meridian/plugins/plugintest"
)

// edge is a whole PoP (gateway.PoP, its cache and fast path) whose one site,
// shop.example, runs a plugin chain on the native engine, with the chain's
// hooks on the fast path (gateway.Options.PluginHooks).
type edge struct {
	pop     *gateway.PoP
	plugins *prometheus.Registry // the plugin host's metrics
	origin  atomic.Int64         // requests the origin received
}

// newEdge starts the PoP with chain for the site; the origin answers every
// path with a cacheable body that shows the request headers the plugins
// set, and varies on one of them.
func newEdge(t *testing.T, chain *plugins.Chain, wasmKeys map[string]string) *edge {
	t.Helper()
	return newEdgeWithPage(t, chain, wasmKeys, nil)
}

// newEdgeWithPage is newEdge for a site with its own HTML error page.
func newEdgeWithPage(t *testing.T, chain *plugins.Chain, wasmKeys map[string]string, page []byte) *edge {
	t.Helper()
	e := &edge{plugins: prometheus.NewRegistry()}
	o := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.origin.Add(1)
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("Last-Modified", "Fri, 27 Nov 2026 08:00:00 GMT")
		w.Header().Set("Vary", "X-Meridian-Pop")
		fmt.Fprintf(w, "%s pop=%s tenant=%s auth=%s/%s", r.URL.Path, r.Header.Get("X-Meridian-Pop"),
			r.Header.Get("X-Tenant"), r.Header.Get("X-Authenticated"), r.Header.Get("Authorization"))
	}))
	t.Cleanup(o.Close)
	h := activeNativeHost(t, plugins.Options{Registerer: e.plugins}, chain.Site, wasmKeys)
	ctx := context.Background()
	u, _ := url.Parse(o.URL)
	pool, err := gworigin.New(gworigin.Options{Site: chain.Site, Servers: []gworigin.Server{{URL: u}}})
	if err != nil {
		t.Fatal(err)
	}
	rn := plugin.NewRunner(plugin.Options{Host: h, PoP: "fra1", PoPRegion: "eu-central",
		Chain:     func(*http.Request) *plugins.Chain { return chain },
		ErrorPage: func(r *http.Request) []byte { return gateway.SiteErrorPage(r.Context()) }})
	e.pop, err = gateway.New(gateway.Options{
		ID: "fra1", HTTPAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		Sites:       []gateway.Site{{Name: chain.Site, Hosts: []string{"shop.example"}, Origin: pool, Cache: cache.SitePolicy{ErrorPage: page}}},
		Plugins:     rn.Middleware,
		PluginHooks: func(string) cache.FastHooks { return rn.FastHooks(func() *plugins.Chain { return chain }) },
		PluginSites: func(site string) bool { return site == chain.Site },
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.pop.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = e.pop.Shutdown(ctx)
	})
	return e
}

// activeNativeHost is a plugin host on the native engine (o's engine and
// timeout set here), closed when t ends, with the plugins of deploy (name:
// key in wasm) active for site.
func activeNativeHost(t testing.TB, o plugins.Options, site string, deploy map[string]string) *plugins.Host {
	t.Helper()
	nativeOnce.Do(func() { nativeEng, nativeErr = native.New(native.Options{CacheDir: plugintest.CacheDir()}) })
	if nativeErr != nil {
		t.Fatal(nativeErr)
	}
	o.Engine, o.Limits = nativeEng, plugins.Limits{Timeout: 2 * time.Second}
	h, err := plugins.NewHost(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close(context.Background()) })
	ctx := context.Background()
	for name, key := range deploy {
		v, err := h.Add(ctx, site, name, wasm[key])
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Activate(ctx, site, name, v.Version); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

// send writes raw requests on one keep-alive connection and reads the
// responses, bodies included.
func (e *edge) send(t *testing.T, reqs ...string) []result {
	t.Helper()
	var out []result
	for _, resp := range testutil.Exchange(t, e.pop.HTTPAddr(), reqs...) {
		b, _ := io.ReadAll(resp.Body)
		out = append(out, result{resp.StatusCode, resp.Header, string(b)})
	}
	return out
}

func (e *edge) fast(t *testing.T, outcome string) float64 {
	return testutil.CounterSum(t, e.pop.Registry(), "meridian_cache_fast_requests_total", "outcome", outcome)
}

func (e *edge) calls(t *testing.T, phase string) float64 {
	return testutil.CounterSum(t, e.plugins, "meridian_plugin_calls_total", "phase", phase)
}

func shopGET(path string, hdr ...string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: shop.example\r\n" + strings.Join(hdr, "") + "\r\n"
}

// TestFastPathRunsPluginsOnHits: a site with a header-injecting plugin keeps
// the fast path for its hits. Each request runs the plugin exactly once,
// whichever path answers; the hit is the variant the plugin's request
// header selects (the origin varies on it); the plugin's response headers
// reach the client on the miss and on the hits alike; and a plugin can not
// change the message's framing.
func TestFastPathRunsPluginsOnHits(t *testing.T) {
	chain := &plugins.Chain{Site: "shop", Entries: []plugins.Entry{{Plugin: "hdr", Config: map[string]string{
		"request":  "x-tenant: blue",
		"response": "x-served-by: meridian\ncontent-length: 1",
	}}}}
	e := newEdge(t, chain, map[string]string{"hdr": "headers"})
	got := e.send(t, shopGET("/p"), shopGET("/p"), shopGET("/p"))
	for i, r := range got {
		if r.status != http.StatusOK || r.body != "/p pop=fra1 tenant=blue auth=/" {
			t.Fatalf("response %d: %d %q, want 200 with the plugin's request headers seen by the origin", i, r.status, r.body)
		}
		if v := r.header.Get("X-Served-By"); v != "meridian" {
			t.Errorf("response %d: X-Served-By %q, want the plugin's meridian", i, v)
		}
		if cl := r.header.Get("Content-Length"); cl != "" && cl != strconv.Itoa(len(r.body)) {
			t.Errorf("response %d: Content-Length %s for a %d-byte body: the plugin changed the framing", i, cl, len(r.body))
		}
		if hit := strings.Contains(r.header.Get("Cache-Status"), "hit"); hit != (i > 0) {
			t.Errorf("response %d: Cache-Status %q", i, r.header.Get("Cache-Status"))
		}
	}
	if n := e.fast(t, "served"); n != 2 {
		t.Errorf("fast path served %v hits, want 2: a plugin site's hits stay on the fast path", n)
	}
	if n := e.calls(t, "request"); n != 3 {
		t.Errorf("on_request ran %v times for 3 requests, want exactly once each", n)
	}
	if n := e.origin.Load(); n != 1 {
		t.Errorf("origin saw %d requests, want 1", n)
	}
}

// TestFastPathPluginRevalidationAndHEAD: a browser revalidating its copy
// (If-Modified-Since) gets the fast path's 304, and a HEAD the stored
// head, each with the plugin's response header and one plugin run.
func TestFastPathPluginRevalidationAndHEAD(t *testing.T) {
	chain := &plugins.Chain{Site: "shop", Entries: []plugins.Entry{{Plugin: "hdr", Config: map[string]string{
		"response": "x-served-by: meridian",
	}}}}
	e := newEdge(t, chain, map[string]string{"hdr": "headers"})
	got := e.send(t, shopGET("/r"),
		shopGET("/r", "If-Modified-Since: Fri, 27 Nov 2026 09:00:00 GMT\r\n"),
		"HEAD /r HTTP/1.1\r\nHost: shop.example\r\n\r\n")
	if r := got[1]; r.status != http.StatusNotModified || r.body != "" || r.header.Get("X-Served-By") != "meridian" {
		t.Errorf("revalidation: %d %q X-Served-By %q, want a 304 with the plugin's header", r.status, r.body, r.header.Get("X-Served-By"))
	}
	if r := got[2]; r.status != http.StatusOK || r.body != "" || r.header.Get("X-Served-By") != "meridian" ||
		r.header.Get("Content-Length") != strconv.Itoa(len(got[0].body)) {
		t.Errorf("HEAD: %d %q X-Served-By %q Content-Length %q, want the stored head with the plugin's header",
			r.status, r.body, r.header.Get("X-Served-By"), r.header.Get("Content-Length"))
	}
	if n := e.fast(t, "served"); n != 2 {
		t.Errorf("fast path answered %v, want 2 (the 304 and the HEAD)", n)
	}
	if n := e.calls(t, "request"); n != 3 {
		t.Errorf("on_request ran %v times for 3 requests, want 3", n)
	}
}

// TestPluginsSeeTheResponsesRequestID: a plugin that reads X-Request-Id
// sees the ID the response carries, whether the fast path answers (a hit)
// or hands the request on after the plugin ran (the miss), when the
// client sent none and when it sent one.
func TestPluginsSeeTheResponsesRequestID(t *testing.T) {
	// By name, and with every header ("*": the fast path's view of all the
	// request's fields).
	for _, asked := range []string{"x-request-id", "*"} {
		t.Run(asked, func(t *testing.T) { testPluginsSeeTheResponsesRequestID(t, asked) })
	}
}

func testPluginsSeeTheResponsesRequestID(t *testing.T, asked string) {
	chain := &plugins.Chain{Site: "shop", Entries: []plugins.Entry{{Plugin: "probe",
		Config: map[string]string{"echo": "x-request-id"}, RequestHeaders: []string{asked}}}}
	e := newEdge(t, chain, map[string]string{"probe": "kitprobe"})
	got := e.send(t, shopGET("/id"), shopGET("/id"), shopGET("/id", "X-Request-Id: trace-7\r\n"))
	for i, r := range got {
		id := r.header.Get("X-Request-Id")
		if id == "" || r.header.Get("X-Echo") != id {
			t.Errorf("response %d (%s): X-Request-Id %q, the plugin saw %q", i, r.header.Get("Cache-Status"), id, r.header.Get("X-Echo"))
		}
	}
	if id := got[2].header.Get("X-Request-Id"); id != "trace-7" {
		t.Errorf("the client's ID came back as %q", id)
	}
	if n := e.fast(t, "served"); n != 2 {
		t.Errorf("fast path served %v, want 2", n)
	}
}

// TestFastPathHandsPluginAnswersOn: a plugin's direct answer (bearer auth's
// 401), given on the fast path, is delivered by the server's chain without
// running the plugin again; a request the plugin lets through, with the
// Authorization it removes, is a fast hit once stored.
func TestFastPathHandsPluginAnswersOn(t *testing.T) {
	chain := &plugins.Chain{Site: "shop", Entries: []plugins.Entry{{Plugin: "auth",
		Config: map[string]string{"tokens": "t1"}, RequestHeaders: []string{"authorization"}}}}
	e := newEdge(t, chain, map[string]string{"auth": "bearerauth"})
	token := "Authorization: Bearer t1\r\n"
	got := e.send(t, shopGET("/a"), shopGET("/a", token), shopGET("/a", token), shopGET("/a", "Authorization: Bearer nope\r\n"))
	if r := got[0]; r.status != http.StatusUnauthorized || r.header.Get("Www-Authenticate") == "" {
		t.Errorf("no token: %d %v, want the plugin's 401 with WWW-Authenticate", r.status, r.header)
	}
	for i, r := range got[1:3] {
		if r.status != http.StatusOK || r.body != "/a pop= tenant= auth=bearer/" {
			t.Fatalf("token request %d: %d %q, want 200 with the token removed before the origin", i, r.status, r.body)
		}
	}
	if !strings.Contains(got[2].header.Get("Cache-Status"), "hit") {
		t.Errorf("second token request: Cache-Status %q, want a hit", got[2].header.Get("Cache-Status"))
	}
	if r := got[3]; r.status != http.StatusUnauthorized {
		t.Errorf("bad token: %d, want 401", r.status)
	}
	if n := e.fast(t, "served"); n != 1 {
		t.Errorf("fast path served %v, want 1 (the stored object, once the plugin removed Authorization)", n)
	}
	if n := e.calls(t, "request"); n != 4 {
		t.Errorf("on_request ran %v times for 4 requests, want exactly once each", n)
	}
}

// TestFastPathRunsChainsInOrder: a chain of two plugins on the fast path
// runs as through net/http: the first one's response header reaches the
// second one's direct answer (handed on) and the hits; the second sees the
// request as the first left it, and a hit is answered fast once the token
// it removes is gone.
func TestFastPathRunsChainsInOrder(t *testing.T) {
	chain := &plugins.Chain{Site: "shop", Entries: []plugins.Entry{
		{Plugin: "h", Config: map[string]string{"request": "x-tenant: blue", "response": "X-Frame-Options: DENY"}},
		{Plugin: "auth", Config: map[string]string{"tokens": "t1"}, RequestHeaders: []string{"authorization", "x-tenant"}},
	}}
	e := newEdge(t, chain, map[string]string{"h": "headers", "auth": "bearerauth"})
	token := "Authorization: Bearer t1\r\n"
	got := e.send(t, shopGET("/c"), shopGET("/c", token), shopGET("/c", token))
	if r := got[0]; r.status != http.StatusUnauthorized || r.header.Get("X-Frame-Options") != "DENY" {
		t.Errorf("no token: %d %v, want the second plugin's 401 with the first one's header", r.status, r.header)
	}
	for i, r := range got[1:] {
		if r.status != http.StatusOK || r.body != "/c pop=fra1 tenant=blue auth=bearer/" || r.header.Get("X-Frame-Options") != "DENY" {
			t.Errorf("token request %d: %d %q %v", i, r.status, r.body, r.header)
		}
	}
	if n := e.fast(t, "served"); n != 1 {
		t.Errorf("fast path served %v, want 1 (the last request)", n)
	}
	if n := e.calls(t, "request"); n != 6 {
		t.Errorf("on_request ran %v times, want 6 (two plugins, three requests, each once)", n)
	}
}

// TestFastPathLeavesPluginDirectivesToTheServer: a plugin that adds a
// request directive (Cache-Control: no-cache) has every request revalidated
// by the server, not answered from the fast path, the plugin still running
// once per request.
func TestFastPathLeavesPluginDirectivesToTheServer(t *testing.T) {
	t.Run("no-cache", func(t *testing.T) {
		chain := &plugins.Chain{Site: "shop", Entries: []plugins.Entry{{Plugin: "hdr",
			Config: map[string]string{"request": "cache-control: no-cache"}}}}
		e := newEdge(t, chain, map[string]string{"hdr": "headers"})
		for i, r := range e.send(t, shopGET("/n"), shopGET("/n"), shopGET("/n")) {
			if r.status != http.StatusOK {
				t.Fatalf("response %d: %d", i, r.status)
			}
		}
		if n := e.origin.Load(); n != 3 {
			t.Errorf("origin saw %d requests, want 3: the plugin's no-cache makes each go there", n)
		}
		// The connection comes back to the fast path after the first
		// hand-off, and stays with the server longer after the next
		// (reclaimAfter): the hooks hand on at least those two.
		if n, h := e.fast(t, "served"), e.fast(t, "hooks"); n != 0 || h < 2 {
			t.Errorf("fast path served %v and handed on %v after hooks, want 0 and 2 or more", n, h)
		}
		if n := e.calls(t, "request"); n != 3 {
			t.Errorf("on_request ran %v times for 3 requests, want 3", n)
		}
	})
}

// TestFastPathServesPluginCacheKeys: a plugin that picks the cache key and
// the origin (the A/B split with a sticky cookie) has its variants' hits
// answered by the fast path under its key, with its on_response; the miss
// before them goes to the server with the plugin's decisions, the plugin
// running once per request.
func TestFastPathServesPluginCacheKeys(t *testing.T) {
	chain := &plugins.Chain{Site: "shop", Entries: []plugins.Entry{{Plugin: "ab",
		Config: map[string]string{"percent_b": "100"}, RequestHeaders: []string{"cookie"}}}}
	e := newEdge(t, chain, map[string]string{"ab": "absplit"})
	got := e.send(t, shopGET("/ab"), shopGET("/ab", "Cookie: mrd_ab=b\r\n"), shopGET("/ab", "Cookie: mrd_ab=b\r\n"))
	for i, r := range got {
		if r.status != http.StatusOK || r.header.Get("Vary") != "Cookie" {
			t.Errorf("response %d: %d Vary %q, want 200 with the plugin's on_response Vary: Cookie", i, r.status, r.header.Get("Vary"))
		}
		if hit := strings.Contains(r.header.Get("Cache-Status"), "hit"); hit != (i > 0) {
			t.Errorf("response %d: Cache-Status %q", i, r.header.Get("Cache-Status"))
		}
	}
	if !strings.HasPrefix(got[0].header.Get("Set-Cookie"), "mrd_ab=b") || got[1].header.Get("Set-Cookie") != "" {
		t.Errorf("Set-Cookie %q then %q, want the assignment once", got[0].header.Get("Set-Cookie"), got[1].header.Get("Set-Cookie"))
	}
	if n := e.fast(t, "served"); n != 2 {
		t.Errorf("fast path served %v, want 2 (the hits under the plugin's key)", n)
	}
	if n := e.origin.Load(); n != 1 {
		t.Errorf("origin saw %d requests, want 1", n)
	}
	if q, r := e.calls(t, "request"), e.calls(t, "response"); q != 3 || r != 3 {
		t.Errorf("on_request ran %v and on_response %v times for 3 requests, want 3 and 3", q, r)
	}
}

// TestFastHitFailsClosedOnResponse: on a fail-closed site, a plugin that
// traps in on_response turns a fast hit into the chain's 503, as the server
// path does for the miss before it.
func TestFastHitFailsClosedOnResponse(t *testing.T) {
	chain := &plugins.Chain{Site: "shop", FailClosed: true, Entries: []plugins.Entry{{Plugin: "trap"}}}
	e := newEdge(t, chain, map[string]string{"trap": "wat/resptrap"})
	// One connection: the server's 503 (the miss) has its length, so the
	// connection comes back to the fast path for the hits.
	got := e.send(t, shopGET("/f"), shopGET("/f"), shopGET("/f"))
	for i, r := range got {
		if r.status != http.StatusServiceUnavailable || !strings.Contains(r.body, `a plugin of site "shop" failed`) ||
			r.header.Get("Cache-Control") != "no-store" || r.header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("response %d: %d %q %v, want the fail-closed 503", i, r.status, r.body, r.header)
		}
		// The page of the PoP's other own answers, on either path: the PoP
		// and the request id the client can quote, the same in the header.
		id := r.header.Get("X-Request-Id")
		if id == "" || !strings.HasPrefix(r.body, "503 Service Unavailable from PoP meridian-") || !strings.Contains(r.body, "Request id: "+id+" ") {
			t.Errorf("response %d: body %q, X-Request-Id %q: want the PoP's page naming the PoP and that id", i, r.body, id)
		}
		if strings.Contains(r.body, "pop=") {
			t.Errorf("response %d leaks the stored body: %q", i, r.body)
		}
	}
	if n := e.fast(t, "served"); n != 2 {
		t.Errorf("fast path answered %v, want 2 (the hits, as 503s)", n)
	}
	if n := e.calls(t, "response"); n != 3 {
		t.Errorf("on_response ran %v times, want 3", n)
	}
	// All three are the PoP's own answers, on either path (each counted
	// once it is sent: wait, boundedly).
	generated := func() float64 {
		return testutil.MetricSum(t, e.pop.Registry(), "meridian_http_responses_generated_total", map[string]string{"site": "shop", "code": "503", "reason": "plugin-failure"})
	}
	testutil.WaitFor(t, "three 503s counted as the PoP's own (plugin-failure)", func() bool { return generated() >= 3 })
	if n := generated(); n != 3 {
		t.Errorf("responses counted as the PoP's own (plugin-failure): %v, want 3", n)
	}
}

// TestFailClosedSitePage: a fail-closed chain's 503 is the site's own
// HTML page for a browser, on the server's path (a plugin that fails in
// on_request; one that fails in on_response on a miss) and on the fast
// path (on_response on a hit), with the request id the header carries; a
// client that does not take HTML keeps the PoP's plain text.
func TestFailClosedSitePage(t *testing.T) {
	page := []byte("<h1>{{status}}</h1><p>{{request_id}}</p>")
	const browser = "Accept: text/html,*/*;q=0.8\r\n"
	for _, c := range []struct{ name, plugin, wasm string }{
		{"on_request", "trap", "wat/trap"},
		{"on_response", "trap", "wat/resptrap"},
	} {
		t.Run(c.name, func(t *testing.T) {
			chain := &plugins.Chain{Site: "shop", FailClosed: true, Entries: []plugins.Entry{{Plugin: c.plugin}}}
			e := newEdgeWithPage(t, chain, map[string]string{c.plugin: c.wasm}, page)
			got := e.send(t, shopGET("/f", browser), shopGET("/f", browser), shopGET("/f"))
			for i, r := range got[:2] {
				want := "<h1>503</h1><p>" + r.header.Get("X-Request-Id") + "</p>"
				if r.status != http.StatusServiceUnavailable || r.body != want || r.header.Get("Content-Type") != "text/html; charset=utf-8" ||
					r.header.Get("Cache-Control") != "no-store" || r.header.Get("X-Request-Id") == "" {
					t.Errorf("browser %d: %d %q %v, want the site's page %q", i, r.status, r.body, r.header, want)
				}
			}
			if r := got[2]; r.status != http.StatusServiceUnavailable || !strings.HasPrefix(r.body, "503 Service Unavailable from PoP meridian-") ||
				r.header.Get("Content-Type") != "text/plain; charset=utf-8" {
				t.Errorf("plain client: %d %q %q, want the PoP's plain text", r.status, r.header.Get("Content-Type"), r.body)
			}
			if c.name == "on_response" {
				if n := e.fast(t, "served"); n != 2 {
					t.Errorf("fast path answered %v, want 2 (the hits, as 503s)", n)
				}
			}
		})
	}
}

// TestPanickingHandlerReturnsInstances: a handler after the plugins that
// panics (the PoP's Recover answers 500) still ends the plugin exchange, so
// the instances go back to the pool: with two instances allowed, requests
// after many panics are answered, not left waiting for an instance.
func TestPanickingHandlerReturnsInstances(t *testing.T) {
	// The A/B split has an on_response, so an exchange holds its instance
	// until it ends.
	h := activeNativeHost(t, plugins.Options{MaxInstances: 2}, "shop", map[string]string{"ab": "absplit"})
	chain := &plugins.Chain{Site: "shop", Entries: []plugins.Entry{{Plugin: "ab", RequestHeaders: []string{"cookie"}}}}
	mw := plugin.New(plugin.Options{Host: h, PoP: "fra1", Chain: func(*http.Request) *plugins.Chain { return chain }})
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/panic" {
			panic("handler bug")
		}
		io.WriteString(w, "ok")
	})
	srv := httptest.NewServer(middleware.Recover(slog.New(slog.DiscardHandler))(mw(inner)))
	t.Cleanup(srv.Close)
	client := &http.Client{Timeout: 5 * time.Second}
	for i := range 6 {
		resp, err := client.Get(srv.URL + "/panic")
		if err != nil {
			t.Fatalf("panicking request %d: %v", i, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusInternalServerError {
			t.Fatalf("panicking request %d: %d, want 500", i, resp.StatusCode)
		}
	}
	resp, err := client.Get(srv.URL + "/fine")
	if err != nil {
		t.Fatalf("request after the panics: %v (instances not returned to the pool?)", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Vary"), "Cookie") {
		t.Errorf("request after the panics: %d Vary %q, want 200 with the plugin's on_response Vary", resp.StatusCode, resp.Header.Get("Vary"))
	}
}

// TestFastPathPluginsUnderConcurrentLoad: clients on their own keep-alive
// connections mix fast hits, misses (new paths, handed on with the run)
// and the plugin's direct answers at once; every answer is right and the
// chain runs exactly once per request (under -race in make test).
func TestFastPathPluginsUnderConcurrentLoad(t *testing.T) {
	chain := &plugins.Chain{Site: "shop", Entries: []plugins.Entry{
		{Plugin: "h", Config: map[string]string{"request": "x-tenant: blue", "response": "X-Frame-Options: DENY"}},
		{Plugin: "auth", Config: map[string]string{"tokens": "t1"}, RequestHeaders: []string{"authorization"}},
	}}
	e := newEdge(t, chain, map[string]string{"h": "headers", "auth": "bearerauth"})
	const clients, rounds = 6, 30
	token := "Authorization: Bearer t1\r\n"
	var wg sync.WaitGroup
	errs := make(chan string, clients*rounds*3)
	for c := range clients {
		wg.Go(func() {
			// A third of the clients send no token: their connections
			// bounce to the server at each answer (see cache's
			// reclaimAfter), the others' come back after each miss.
			var reqs, want []string
			for i := range rounds {
				hot, fresh := "/hot", "/c"+strconv.Itoa(c)+"-"+strconv.Itoa(i)
				if c%3 == 2 {
					reqs, want = append(reqs, shopGET(hot), shopGET(fresh), shopGET(hot)), append(want, "", "", "")
					continue
				}
				reqs = append(reqs, shopGET(hot, token), shopGET(fresh, token), shopGET(hot, token))
				want = append(want, hot, fresh, hot)
			}
			for i, r := range e.send(t, reqs...) {
				switch {
				case want[i] == "" && r.status != http.StatusUnauthorized:
					errs <- "no token: " + strconv.Itoa(r.status)
				case want[i] != "" && (r.status != http.StatusOK || r.body != want[i]+" pop=fra1 tenant=blue auth=bearer/"):
					errs <- "token request: " + strconv.Itoa(r.status) + " " + r.body
				case r.header.Get("X-Frame-Options") != "DENY":
					errs <- "no X-Frame-Options on " + strconv.Itoa(r.status)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for msg := range errs {
		t.Error(msg)
	}
	if t.Failed() {
		return
	}
	n := float64(clients * rounds * 3)
	if q := e.calls(t, "request"); q != 2*n {
		t.Errorf("on_request ran %v times for %v requests of a two-plugin chain, want %v", q, n, 2*n)
	}
	// The token clients' hot requests are hits (all but the first few).
	if hot, s := float64(clients*2/3*rounds*2), e.fast(t, "served"); s < hot/2 {
		t.Errorf("fast path served %v of the %v hot requests with a token", s, hot)
	}
}
