package cache_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway/cache"
	"github.com/meridian-edge/meridian/gateway/cache/cachetest"
	"github.com/meridian-edge/meridian/gateway/headers"
	"github.com/meridian-edge/meridian/internal/testutil"
)

// TestResponseHeaders: a site's response header changes apply to every
// answer its clients get: a miss and a pass through net/http, a hit, a
// HEAD and a 304 on the fast path, the PoP's 502 page. The stored response
// keeps the origin's fields, so the same object served for a site with
// other changes (a reload) shows those, on the fast path too.
func TestResponseHeaders(t *testing.T) {
	pol, err := headers.ForResponses(map[string]string{"X-Frame-Options": "DENY", "strict-transport-security": "max-age=63072000"},
		[]string{"Server", "X-Powered-By"})
	if err != nil {
		t.Fatal(err)
	}
	origin := func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/broken" {
			conn, _, _ := http.NewResponseController(w).Hijack()
			conn.Close()
			return
		}
		w.Header().Set("Server", "origin/1.0")
		w.Header().Set("X-Powered-By", "PHP/5")
		w.Header().Set("X-Frame-Options", "SAMEORIGIN")
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("ETag", `"v1"`)
		if r.Header.Get("If-None-Match") == `"v1"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Write([]byte("hello"))
	}
	e := newEnv(t, origin, envOpt{site: cache.SitePolicy{SiteID: "site1", ResponseHeaders: pol}})
	changed := func(what string, r reply) {
		t.Helper()
		if got := r.header.Values("X-Frame-Options"); len(got) != 1 || got[0] != "DENY" ||
			r.header.Get("Strict-Transport-Security") != "max-age=63072000" || r.header.Get("Server") != "" || r.header.Get("X-Powered-By") != "" {
			t.Errorf("%s: X-Frame-Options %q, Strict-Transport-Security %q, Server %q, X-Powered-By %q; want the site's changes",
				what, got, r.header.Get("Strict-Transport-Security"), r.header.Get("Server"), r.header.Get("X-Powered-By"))
		}
	}
	changed("miss", e.get("/a"))
	served := fastCount(e, "served")
	changed("hit", e.get("/a"))
	changed("HEAD hit", e.do(http.MethodHead, "/a", nil, nil))
	r := e.get("/a", "If-None-Match", `"v1"`)
	if r.status != http.StatusNotModified {
		t.Fatalf("If-None-Match: %d, want 304", r.status)
	}
	changed("304", r)
	if n := fastCount(e, "served") - served; n != 3 {
		t.Fatalf("%d of the hit, the HEAD and the 304 served by the fast path, want 3", n)
	}
	changed("POST (passed)", e.do(http.MethodPost, "/form", nil, []byte("x")))
	if r := e.get("/broken"); r.status != http.StatusBadGateway {
		t.Fatalf("/broken: %d, want 502", r.status)
	} else {
		changed("the PoP's 502", r)
	}

	// The same cache, another site policy for the stored object (as after
	// a reload): its own changes, not the first one's memoised block.
	pol2, err := headers.ForResponses(nil, []string{"X-Frame-Options"})
	if err != nil {
		t.Fatal(err)
	}
	h2 := e.c.Handler(cache.SitePolicy{SiteID: "site1", ResponseHeaders: pol2}, cachetest.Transport(t, e.origin.URL, 0))
	front2 := e.frontFor(h2)
	// Same host as the first front, so that the cache key matches.
	req, _ := http.NewRequest(http.MethodGet, front2.URL+"/a", nil)
	req.Host = e.front.Listener.Addr().String()
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if v := resp.Header.Values("X-Frame-Options"); len(v) != 0 || resp.Header.Get("Server") != "origin/1.0" || !strings.Contains(resp.Header.Get("Cache-Status"), "hit") {
		t.Errorf("the stored object for the second policy: X-Frame-Options %q, Server %q; want none and the origin's, from the stored object (Cache-Status %q)", v, resp.Header.Get("Server"), resp.Header.Get("Cache-Status"))
	}
	changed("hit on the first front after the second", e.get("/a"))
}

// TestRuleResponseHeaders: a path rule's header changes apply on top of
// the site's for its paths only, on a miss and on a fast-path hit: a
// browser Cache-Control for /assets/* apart from what the cache keeps, a
// field the site sets removed for /embed/*.
func TestRuleResponseHeaders(t *testing.T) {
	site, _ := headers.ForResponses(map[string]string{"X-Frame-Options": "DENY"}, nil)
	assets, _ := headers.ForResponses(map[string]string{"Cache-Control": "public, max-age=31536000, immutable"}, nil)
	embed, _ := headers.ForResponses(nil, []string{"X-Frame-Options"})
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Write([]byte(r.URL.Path))
	}, envOpt{site: cache.SitePolicy{SiteID: "site1", ResponseHeaders: site, Rules: []cache.PathRule{
		{Path: "/assets/*", TTL: time.Hour, ResponseHeaders: assets},
		{Path: "/embed/*", ResponseHeaders: embed},
	}}})
	for _, c := range []struct{ path, cacheControl, frame string }{
		{"/assets/app.css", "public, max-age=31536000, immutable", "DENY"},
		{"/embed/widget", "max-age=60", ""},
		{"/page", "max-age=60", "DENY"},
	} {
		served := fastCount(e, "served")
		for _, what := range []string{"miss", "hit"} {
			r := e.get(c.path)
			if r.header.Get("Cache-Control") != c.cacheControl || r.header.Get("X-Frame-Options") != c.frame {
				t.Errorf("%s %s: Cache-Control %q, X-Frame-Options %q; want %q and %q", c.path, what,
					r.header.Get("Cache-Control"), r.header.Get("X-Frame-Options"), c.cacheControl, c.frame)
			}
		}
		if fastCount(e, "served") != served+1 {
			t.Errorf("%s: the hit was not served by the fast path", c.path)
		}
	}
	// The cache keeps its own freshness: the rule's hour, not the
	// browsers' year.
	if r := e.get("/assets/app.css"); testutil.CacheStatusTTL(r.cs()) > 3600 {
		t.Errorf("/assets/app.css: Cache-Status %q, want the rule's TTL of at most an hour", r.cs())
	}
}
