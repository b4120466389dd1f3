package cache_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway/cache"
)

// TestSiteStaleIfError: a site's stale_if_error serves the stored copy when
// the origin fails, for responses that set no stale-if-error of their own;
// the origin's own window and must-revalidate still decide for theirs, and
// past the site's window the failure passes on.
func TestSiteStaleIfError(t *testing.T) {
	// first answers with cacheControl, every later request fails as broken
	// says: "500" answers 500, "abort" cuts the connection (no response).
	origin := func(cacheControl, broken string) func(e *env) http.HandlerFunc {
		return func(e *env) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				if e.count.Load() == 1 {
					w.Header().Set("Cache-Control", cacheControl)
					fmt.Fprint(w, "good")
					return
				}
				if broken == "abort" {
					panic(http.ErrAbortHandler)
				}
				http.Error(w, "origin broken", http.StatusInternalServerError)
			}
		}
	}
	for _, c := range []struct {
		name       string
		site       time.Duration
		origin     func(e *env) http.HandlerFunc
		advance    time.Duration
		wantStatus int
	}{
		{"site window serves stale on 500", time.Hour, origin("max-age=1", "500"), 10 * time.Second, 200},
		{"site window serves stale when the origin is unreachable", time.Hour, origin("max-age=1", "abort"), 10 * time.Second, 200},
		{"no site window: the 500 passes on", 0, origin("max-age=1", "500"), 10 * time.Second, 500},
		{"past the site window: the 500 passes on", 30 * time.Second, origin("max-age=1", "500"), time.Minute, 500},
		{"the origin's own window wins", time.Hour, origin("max-age=1, stale-if-error=5", "500"), time.Minute, 500},
		{"must-revalidate forbids it", time.Hour, origin("max-age=1, must-revalidate", "500"), 10 * time.Second, 500},
	} {
		t.Run(c.name, func(t *testing.T) {
			var e *env
			var h http.HandlerFunc
			e = newEnv(t, func(w http.ResponseWriter, r *http.Request) { h(w, r) },
				envOpt{site: cache.SitePolicy{SiteID: "site1", StaleIfError: c.site}, timeout: 2 * time.Second})
			h = c.origin(e)
			if r := e.get("/obj"); r.status != 200 || r.body != "good" {
				t.Fatalf("first: %d %q", r.status, r.body)
			}
			e.clock.Advance(c.advance)
			r := e.get("/obj")
			// The fill and the failed revalidation (net/http's transport
			// retries a GET once on a connection cut before any answer).
			if n := e.count.Load(); n < 2 || n > 3 {
				t.Fatalf("origin saw %d requests, want 2 or 3", n)
			}
			switch {
			case r.status != c.wantStatus:
				t.Fatalf("after %v: %d %q (Cache-Status %q), want %d", c.advance, r.status, r.body, r.cs(), c.wantStatus)
			case c.wantStatus == 200 && (r.body != "good" || !strings.Contains(r.cs(), "stale-if-error")):
				t.Fatalf("stale answer: %q, Cache-Status %q", r.body, r.cs())
			}
		})
	}
}
