package stack_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/internal/config"
	"github.com/meridian-edge/meridian/internal/stack"
	"github.com/meridian-edge/meridian/internal/testutil"
)

// TestCacheRulesReload: a site's cache.rules reach its PoPs, and a reload
// changes them live: a bypass rule added by a reload sends the path to the
// origin at once, though the PoP still holds its object; a ttl rule keeps
// what the origin would have let go stale; a redirect rule answers.
func TestCacheRulesReload(t *testing.T) {
	var fetched atomic.Int64
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetched.Add(1)
		w.Header().Set("Cache-Control", "max-age=600")
		io.WriteString(w, r.URL.Path)
	}))
	defer origin.Close()
	cfg := devConfig(t, origin.URL)
	const pop = "us-east-1"
	st := runStack(t, cfg, stack.Roles{PoPs: []string{pop}}, nil)
	cs := func(path string) string {
		resp, body := siteGet(t, st, pop, path)
		if resp.StatusCode != 200 || body != path {
			t.Fatalf("GET %s: %d %q", path, resp.StatusCode, body)
		}
		return resp.Header.Get("Cache-Status")
	}
	cs("/api/orders")
	if got := cs("/api/orders"); !strings.Contains(got, "hit") || fetched.Load() != 1 {
		t.Fatalf("before the rule: Cache-Status %q, %d origin requests; want a hit", got, fetched.Load())
	}

	next := reloadConfig(t, cfg, origin.URL)
	next.Sites[0].Cache.Rules = []config.CacheRule{{Path: "/api/*", Bypass: true}, {Path: "/assets/*", TTL: 720 * time.Hour},
		{Path: "/old/*", Redirect: "/new/$1", RedirectStatus: 308}}
	if err := st.Reload(next); err != nil {
		t.Fatalf("reload adding cache rules: %v", err)
	}
	for range 2 {
		if got := cs("/api/orders"); !strings.Contains(got, "fwd=bypass; detail=path-rule") {
			t.Fatalf("after the reload: Cache-Status %q, want the rule's bypass", got)
		}
	}
	if n := fetched.Load(); n != 3 {
		t.Fatalf("%d origin requests, want 3 (two bypassed)", n)
	}
	req, _ := http.NewRequest("GET", "http://"+st.PoP(pop).HTTPAddr()+"/old/a.html", nil)
	req.Host = "www.example.test"
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != "/new/a.html" {
		t.Fatalf("/old/a.html after the reload: %d to %q, want the rule's 308 to /new/a.html", resp.StatusCode, resp.Header.Get("Location"))
	}
	cs("/assets/app.css")
	if got := cs("/assets/app.css"); !strings.Contains(got, "hit") || testutil.CacheStatusTTL(got) < 719*3600 {
		t.Fatalf("/assets/app.css: Cache-Status %q, want a hit with the rule's 720h", got)
	}
}

// TestOriginRoutesReload: a site's routes reach its PoPs' origin pools:
// /api/* is fetched from the API origin only, other paths from the web
// origin; a reload that drops the route sends /api/* to the web origin.
func TestOriginRoutesReload(t *testing.T) {
	named := func(name string) *httptest.Server {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "no-store")
			io.WriteString(w, name+" "+r.URL.Path)
		}))
		t.Cleanup(s.Close)
		return s
	}
	web, api := named("web"), named("api")
	withRoutes := func(cfg *config.Config, routes []config.Route) *config.Config {
		cfg.Sites[0].Origins = []config.Origin{{Name: "web", URL: web.URL}, {Name: "api", URL: api.URL}}
		cfg.Sites[0].Routes = routes
		return cfg
	}
	apiRoute := []config.Route{{Path: "/api/*", Origins: []string{"api"}}}
	cfg := withRoutes(devConfig(t, web.URL), apiRoute)
	const pop = "us-east-1"
	st := runStack(t, cfg, stack.Roles{PoPs: []string{pop}}, nil)
	body := func(path string) string {
		resp, body := siteGet(t, st, pop, path)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %q", path, resp.StatusCode, body)
		}
		return body
	}
	for range 3 {
		if got := body("/api/orders"); got != "api /api/orders" {
			t.Fatalf("/api/orders answered %q, want the api origin", got)
		}
		if got := body("/index.html"); got != "web /index.html" {
			t.Fatalf("/index.html answered %q, want the web origin (the only one no route names)", got)
		}
	}
	if err := st.Reload(withRoutes(reloadConfig(t, cfg, web.URL), []config.Route{{Path: "/*", Origins: []string{"web"}}})); err != nil {
		t.Fatalf("reload changing the routes: %v", err)
	}
	for range 3 {
		if got := body("/api/orders"); got != "web /api/orders" {
			t.Fatalf("after the reload /api/orders answered %q, want the web origin", got)
		}
	}
}

// TestOriginHealthChecks: a site's health_check reaches its PoPs' pools:
// an origin whose health page fails (its pages still answer) stops
// getting requests, and gets them again once its health page passes.
func TestOriginHealthChecks(t *testing.T) {
	var sick atomic.Bool
	var sickServed atomic.Int64
	healthy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		io.WriteString(w, "healthy")
	}))
	t.Cleanup(healthy.Close)
	flaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			if sick.Load() || r.Host != "www.example.test" {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
			return
		}
		sickServed.Add(1)
		w.Header().Set("Cache-Control", "no-store")
		io.WriteString(w, "flaky")
	}))
	t.Cleanup(flaky.Close)
	cfg := devConfig(t, healthy.URL)
	cfg.Sites[0].Origins = []config.Origin{{URL: healthy.URL}, {URL: flaky.URL}}
	cfg.Sites[0].HealthCheck = config.HealthCheck{Path: "/healthz", Interval: 100 * time.Millisecond, Timeout: 100 * time.Millisecond, Fails: 1, Passes: 1}
	const pop = "us-east-1"
	st := runStack(t, cfg, stack.Roles{PoPs: []string{pop}}, nil)
	// reaches reports whether any of ten requests reached the flaky origin.
	reaches := func() bool {
		before := sickServed.Load()
		for range 10 {
			if resp, body := siteGet(t, st, pop, "/page"); resp.StatusCode != 200 {
				t.Fatalf("GET /page: %d %q", resp.StatusCode, body)
			}
		}
		return sickServed.Load() > before
	}
	if !reaches() {
		t.Fatal("the flaky origin, healthy so far, got none of ten requests")
	}
	sick.Store(true)
	deadline := time.Now().Add(10 * time.Second)
	for reaches() {
		if time.Now().After(deadline) {
			t.Fatal("the origin failing its health checks still gets requests after 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	sick.Store(false)
	for !reaches() {
		if time.Now().After(deadline.Add(10 * time.Second)) {
			t.Fatal("the origin passing its health checks again gets no requests")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSiteHeadersReload: a site's headers reach its PoPs: its origin gets
// the request changes, its clients the response changes on a miss and on
// a hit; a reload that changes them applies to objects already stored.
func TestSiteHeadersReload(t *testing.T) {
	var secret atomic.Value
	secret.Store("")
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		secret.Store(r.Header.Get("X-Origin-Secret"))
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("Server", "origin/1.0")
		io.WriteString(w, "page")
	}))
	defer origin.Close()
	cfg := devConfig(t, origin.URL)
	cfg.Sites[0].Headers = config.SiteHeaders{
		Response: config.HeaderChanges{Set: map[string]string{"X-Frame-Options": "DENY"}, Remove: []string{"Server"}},
		Request:  config.HeaderChanges{Set: map[string]string{"X-Origin-Secret": "s3cret"}},
	}
	const pop = "us-east-1"
	st := runStack(t, cfg, stack.Roles{PoPs: []string{pop}}, nil)
	for _, what := range []string{"miss", "hit"} {
		resp, _ := siteGet(t, st, pop, "/h")
		if resp.Header.Get("X-Frame-Options") != "DENY" || resp.Header.Get("Server") != "" {
			t.Fatalf("%s: X-Frame-Options %q, Server %q; want DENY and none", what, resp.Header.Get("X-Frame-Options"), resp.Header.Get("Server"))
		}
	}
	if got := secret.Load(); got != "s3cret" {
		t.Fatalf("the origin got X-Origin-Secret %q", got)
	}
	next := reloadConfig(t, cfg, origin.URL)
	next.Sites[0].Headers.Response.Set = map[string]string{"X-Frame-Options": "SAMEORIGIN"}
	if err := st.Reload(next); err != nil {
		t.Fatal(err)
	}
	resp, _ := siteGet(t, st, pop, "/h")
	if !strings.Contains(resp.Header.Get("Cache-Status"), "hit") || resp.Header.Get("X-Frame-Options") != "SAMEORIGIN" || resp.Header.Get("Server") != "origin/1.0" {
		t.Fatalf("after the reload: Cache-Status %q, X-Frame-Options %q, Server %q; want a hit with SAMEORIGIN and the origin's Server",
			resp.Header.Get("Cache-Status"), resp.Header.Get("X-Frame-Options"), resp.Header.Get("Server"))
	}
}

// TestOriginMaxConns: an origin's max_conns reaches the PoP's pool: with
// its one slot taken by a request the origin holds, a second client gets
// the PoP's 503 (origin-busy) at once, and the origin is never sent it.
func TestOriginMaxConns(t *testing.T) {
	release := make(chan struct{})
	var asked atomic.Int32
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		<-release
		w.Header().Set("Cache-Control", "no-store")
		io.WriteString(w, "late")
	}))
	t.Cleanup(origin.Close)
	cfg := devConfig(t, origin.URL)
	cfg.Sites[0].Origins[0].MaxConns = 1
	const pop = "us-east-1"
	st := runStack(t, cfg, stack.Roles{PoPs: []string{pop}}, nil)
	held := make(chan struct{})
	go func() { // holds the slot until release
		defer close(held)
		req, _ := http.NewRequest("GET", "http://"+st.PoP(pop).HTTPAddr()+"/held", nil)
		req.Host = "www.example.test"
		if resp, err := http.DefaultClient.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	t.Cleanup(func() { close(release); <-held }) // before the stack's shutdown, which waits for it
	testutil.WaitFor(t, "the first request at the origin", func() bool { return asked.Load() == 1 })
	resp, body := siteGet(t, st, pop, "/second")
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(resp.Header.Get("Cache-Status"), "detail=origin-busy") {
		t.Fatalf("a second request with the origin's one slot taken: %d %q (Cache-Status %q), want 503 origin-busy",
			resp.StatusCode, body, resp.Header.Get("Cache-Status"))
	}
	if asked.Load() != 1 {
		t.Errorf("the origin was sent %d requests, want 1", asked.Load())
	}
}
