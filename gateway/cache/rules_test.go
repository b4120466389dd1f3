package cache_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway/cache"
	"github.com/meridian-edge/meridian/gateway/cache/cachetest"
	"github.com/meridian-edge/meridian/internal/testutil"
)

// rulesSite is a site with the three kinds of path rule.
var rulesSite = cache.SitePolicy{SiteID: "site1", Rules: []cache.PathRule{
	{Path: "/api/*", Bypass: true},
	{Path: "/static/*", TTL: 720 * time.Hour},
	{Path: "*.html", DefaultTTL: time.Minute},
}}

// TestPathRules: a site's cache rules, first match first: a bypassed path
// goes to the origin every time, query or not; a rule's TTL keeps
// successes fresh whatever the origin said (errors keep their own, private
// answers stay unstored), and a plugin's TTL wins over it; a rule's
// default TTL applies where the origin states no freshness.
func TestPathRules(t *testing.T) {
	var mu sync.Mutex
	hits := map[string]int{}
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits[r.URL.Path]++
		mu.Unlock()
		switch r.URL.Path {
		case "/api/data":
			w.Header().Set("Cache-Control", "max-age=600")
		case "/static/app.css":
			w.Header().Set("Cache-Control", "max-age=1")
		case "/static/bare.js": // no freshness, no validator
		case "/static/missing":
			w.Header().Set("Cache-Control", "max-age=5")
			w.WriteHeader(http.StatusNotFound)
		case "/static/private":
			w.Header().Set("Cache-Control", "private, max-age=600")
		case "/page.html":
			w.Header().Set("Last-Modified", "Mon, 02 Jan 2006 15:04:05 GMT")
		}
		io.WriteString(w, r.URL.Path)
	}, envOpt{site: rulesSite, wrapFront: func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if d, err := time.ParseDuration(r.Header.Get("X-Plugin-TTL")); err == nil {
				r = r.WithContext(cache.WithTTL(r.Context(), d)) // as a plugin's TTL
			}
			h.ServeHTTP(w, r)
		})
	}})
	origin := func(path string) int {
		mu.Lock()
		defer mu.Unlock()
		return hits[path]
	}

	for _, p := range []string{"/api/data", "/api/data?x=1", "/api/data"} {
		if r := e.get(p); r.body != "/api/data" || !strings.Contains(r.cs(), "fwd=bypass; detail=path-rule") {
			t.Fatalf("GET %s: %q (Cache-Status %q), want the origin's answer, bypassed by the rule", p, r.body, r.cs())
		}
	}
	if n := origin("/api/data"); n != 3 {
		t.Fatalf("bypassed path: %d origin requests for 3 GETs", n)
	}

	for _, p := range []string{"/static/app.css", "/static/bare.js", "/static/missing", "/static/private", "/page.html"} {
		e.get(p)
	}
	if r := e.get("/page.html"); !strings.Contains(r.cs(), "hit") || testutil.CacheStatusTTL(r.cs()) > 60 || testutil.CacheStatusTTL(r.cs()) < 50 {
		t.Fatalf("/page.html: Cache-Status %q, want a hit with the rule's default TTL of 60s", r.cs())
	}
	if r := e.get("/static/app.css?p=1", "X-Plugin-TTL", "30s"); testutil.CacheStatusTTL(r.cs()) > 30 {
		t.Fatalf("a plugin's TTL: Cache-Status %q, want at most 30s, not the rule's", r.cs())
	}
	e.clock.Advance(10 * time.Minute)
	for _, c := range []struct {
		path    string
		hit     bool
		origins int
	}{
		{"/static/app.css", true, 2}, // max-age=1, kept by the rule's 720h (2: with ?p=1)
		{"/static/bare.js", true, 1}, // stored at all only thanks to the rule
		{"/static/missing", false, 2},
		{"/static/private", false, 2},
		{"/page.html", false, 2},
	} {
		r := e.get(c.path)
		if strings.Contains(r.cs(), "hit") != c.hit || origin(c.path) != c.origins {
			t.Errorf("%s ten minutes on: Cache-Status %q, %d origin requests; want hit %v and %d", c.path, r.cs(), origin(c.path), c.hit, c.origins)
		}
		if c.path == "/static/app.css" && testutil.CacheStatusTTL(r.cs()) < 719*3600 {
			t.Errorf("%s: Cache-Status %q, want the rule's 720h TTL", c.path, r.cs())
		}
	}

}

// TestPathRulesOnRevalidation: when a 304 refreshes a stored object, the
// path's rule applies as it did when the object was stored: a rule's TTL
// keeps it fresh again for the rule's time (not the 304's max-age=1), a
// rule's default TTL gives one that states no freshness its minute again
// (not the site's default of none, which would revalidate every time).
func TestPathRulesOnRevalidation(t *testing.T) {
	var mu sync.Mutex
	asked := map[string]int{}
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		asked[r.URL.Path]++
		mu.Unlock()
		w.Header().Set("ETag", `"v1"`)
		if r.URL.Path == "/static/app.css" {
			w.Header().Set("Cache-Control", "max-age=1")
		}
		if r.Header.Get("If-None-Match") == `"v1"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		io.WriteString(w, r.URL.Path)
	}, envOpt{site: rulesSite})
	count := func(path string) int {
		mu.Lock()
		defer mu.Unlock()
		return asked[path]
	}
	e.get("/static/app.css")
	e.get("/page.html")
	// A soft purge makes the rule-kept object stale; the default TTL
	// runs out by itself.
	if _, err := e.c.Purge(context.Background(), cache.Selector{Site: "site1", Kind: cache.ByURL, Value: e.front.URL + "/static/app.css", Soft: true}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(2 * time.Minute)
	for _, c := range []struct {
		path     string
		min, max int // the refreshed object's TTL in Cache-Status
	}{
		{"/static/app.css", 719 * 3600, 720 * 3600},
		{"/page.html", 50, 60},
	} {
		if r := e.get(c.path); r.body != c.path || count(c.path) != 2 {
			t.Fatalf("%s stale: %q after %d origin requests, want it revalidated once", c.path, r.body, count(c.path))
		}
		r := e.get(c.path)
		if ttl := testutil.CacheStatusTTL(r.cs()); !strings.Contains(r.cs(), "hit") || ttl < c.min || ttl > c.max || count(c.path) != 2 {
			t.Errorf("%s after its 304: Cache-Status %q, %d origin requests; want a hit with a TTL in [%d,%d] from the rule", c.path, r.cs(), count(c.path), c.min, c.max)
		}
	}
}

// TestPathRuleOnFastPath: a bypass rule holds on the fast path too. A
// reload that adds one gives the site a new handler on the same cache,
// which may still hold the path's objects: they are not served.
func TestPathRuleOnFastPath(t *testing.T) {
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		io.WriteString(w, "api")
	}, envOpt{})
	e.get("/api/data")
	if r := e.get("/api/data"); !strings.Contains(r.cs(), "hit") || e.count.Load() != 1 {
		t.Fatalf("before the rule: Cache-Status %q, want a hit", r.cs())
	}
	h := e.c.Handler(rulesSite, cachetest.Transport(t, e.origin.URL, 0))
	srv := e.frontFor(h)
	resp, err := http.Get(srv.URL + "/api/data")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if cs := resp.Header.Get("Cache-Status"); !strings.Contains(cs, "fwd=bypass; detail=path-rule") || e.count.Load() != 2 {
		t.Fatalf("after the rule: Cache-Status %q, %d origin requests; want the rule's bypass", cs, e.count.Load())
	}
}

// TestPathRuleStaleWindows: a rule's stale windows replace the site's for
// its paths only: /api/* is served stale while the origin fails, where
// the site serves its 503; /news/* is served stale while one background
// request revalidates it, where the site's other paths wait for theirs.
func TestPathRuleStaleWindows(t *testing.T) {
	var failing atomic.Bool
	var e *env
	e = newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Cache-Control", "max-age=5")
		fmt.Fprintf(w, "v%d", e.count.Load())
	}, envOpt{site: cache.SitePolicy{SiteID: "site1", Rules: []cache.PathRule{
		{Path: "/api/*", StaleIfError: time.Hour},
		{Path: "/news/*", StaleWhileRevalidate: time.Minute},
	}}})
	for _, p := range []string{"/api/orders", "/page", "/news/today"} {
		e.get(p)
	}
	e.clock.Advance(15 * time.Second) // 10s stale
	failing.Store(true)
	if r := e.get("/api/orders"); r.status != http.StatusOK || r.body != "v1" {
		t.Errorf("/api/orders with the origin failing: %d %q (Cache-Status %q), want the stored v1 (the rule's stale_if_error)", r.status, r.body, r.cs())
	}
	if r := e.get("/page"); r.status != http.StatusServiceUnavailable {
		t.Errorf("/page with the origin failing: %d %q, want the origin's 503 (the site has no stale_if_error)", r.status, r.body)
	}
	failing.Store(false)
	if r := e.get("/news/today"); r.body != "v3" || !strings.Contains(r.cs(), "stale-while-revalidate") {
		t.Errorf("/news/today 10s stale: %q (Cache-Status %q), want v3 served stale while revalidated (the rule's window)", r.body, r.cs())
	}
	if r := e.get("/page"); strings.Contains(r.cs(), "stale-while-revalidate") || !strings.Contains(r.cs(), "fwd=stale") {
		t.Errorf("/page 10s stale: Cache-Status %q, want a revalidation in line", r.cs())
	}
}

// TestPathRuleRedirect: a redirect rule answers at the PoP, on every
// request (the fast path hands it on rather than serving a stored
// object), with its stars' matches put in the target and the query kept
// unless the target has one; the origin is never asked.
func TestPathRuleRedirect(t *testing.T) {
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		io.WriteString(w, "origin")
	}, envOpt{site: cache.SitePolicy{SiteID: "site1", Rules: []cache.PathRule{
		{Path: "/old/*", Redirect: "/new/$1"},
		{Path: "/go", Redirect: "https://example.org/landing?src=cdn", RedirectStatus: http.StatusFound},
		{Path: "/blog/*/*", Redirect: "/posts/$2/$1", RedirectStatus: http.StatusPermanentRedirect},
		{Path: "/keep/*", Redirect: "/kept//$1"},
	}}})
	for _, c := range []struct {
		path, location string
		status         int
	}{
		{"/old/a/b.html?x=1", "/new/a/b.html?x=1", http.StatusMovedPermanently},
		{"/go?y=2", "https://example.org/landing?src=cdn", http.StatusFound},
		{"/blog/2026/hello", "/posts/hello/2026", http.StatusPermanentRedirect},
		{"/keep/a/../b", "/kept//a/../b", http.StatusMovedPermanently}, // as configured: not cleaned
	} {
		for range 2 {
			r := e.get(c.path)
			if r.status != c.status || r.header.Get("Location") != c.location || r.cs() != "meridian; detail=path-redirect" {
				t.Errorf("%s: %d Location %q Cache-Status %q; want %d to %q", c.path, r.status, r.header.Get("Location"), r.cs(), c.status, c.location)
			}
		}
	}
	if n := e.count.Load(); n != 0 {
		t.Errorf("the origin was asked %d times", n)
	}
	if r := e.get("/other"); r.status != http.StatusOK || r.body != "origin" {
		t.Errorf("/other: %d %q, want the origin's page", r.status, r.body)
	}
}
