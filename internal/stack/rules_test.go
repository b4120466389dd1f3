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
// what the origin would have let go stale.
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
	next.Sites[0].Cache.Rules = []config.CacheRule{{Path: "/api/*", Bypass: true}, {Path: "/assets/*", TTL: 720 * time.Hour}}
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
	cs("/assets/app.css")
	if got := cs("/assets/app.css"); !strings.Contains(got, "hit") || testutil.CacheStatusTTL(got) < 719*3600 {
		t.Fatalf("/assets/app.css: Cache-Status %q, want a hit with the rule's 720h", got)
	}
}
