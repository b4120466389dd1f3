package gateway_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/meridian-edge/meridian/gateway"
	"github.com/meridian-edge/meridian/gateway/cache"
	mtestutil "github.com/meridian-edge/meridian/internal/testutil"
)

// TestClientCacheControlIgnoredByDefault: as in nginx's proxy_cache and
// the CDNs, a client's Cache-Control and Pragma do not reach the cache: a
// stored copy is served whatever the client asks (a loop of no-cache
// requests cannot reach the origin), except only-if-cached, which is kept
// (a miss answers 504 without asking the origin). A site that honours them
// revalidates. On the fast path and through net/http alike: with the fast
// path, such hits stay on it.
func TestClientCacheControlIgnoredByDefault(t *testing.T) {
	for _, noFast := range []bool{false, true} {
		for _, honor := range []bool{false, true} {
			t.Run(fmt.Sprintf("noFastPath=%v/honor=%v", noFast, honor), func(t *testing.T) {
				var fetches atomic.Int64
				o := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					fetches.Add(1)
					w.Header().Set("Cache-Control", "max-age=600")
					w.Header().Set("ETag", `"v1"`)
					if r.Header.Get("If-None-Match") == `"v1"` {
						w.WriteHeader(http.StatusNotModified)
						return
					}
					io.WriteString(w, "object "+r.URL.Path)
				}))
				t.Cleanup(o.Close)
				p := startPoP(t, gateway.Options{NoFastPath: noFast, Sites: []gateway.Site{
					{Name: "www", Hosts: []string{"www.test"}, Origin: pool(t, "www", o.URL, 0), Cache: cache.SitePolicy{IgnoreClientDirectives: !honor}},
				}})
				get := func(path, field string) *http.Response {
					t.Helper()
					raw := "GET " + path + " HTTP/1.1\r\nHost: www.test\r\n"
					if field != "" {
						raw += field + "\r\n"
					}
					resp := exchange(t, p.HTTPAddr(), raw+"\r\n")[0]
					io.Copy(io.Discard, resp.Body)
					return resp
				}
				get("/a", "")
				served := func() float64 {
					return mtestutil.MetricSum(t, p.Registry(), "meridian_cache_fast_requests_total", map[string]string{"outcome": "served"})
				}
				servedBefore := served()
				for _, field := range []string{"Cache-Control: no-cache", "Pragma: no-cache", "Cache-Control: max-age=0", "Cache-Control: no-store"} {
					before := fetches.Load()
					resp := get("/a", field)
					asked := fetches.Load() - before
					hit := strings.Contains(resp.Header.Get("Cache-Status"), "; hit")
					if !honor && (asked != 0 || !hit) {
						t.Errorf("%s: the origin was asked %d times (Cache-Status %q); the default ignores the client's directives", field, asked, resp.Header.Get("Cache-Status"))
					}
					if honor && asked != 1 && field != "Cache-Control: no-store" { // no-store may be served a stored copy
						t.Errorf("%s on a site that honours them: the origin was asked %d times, want 1", field, asked)
					}
				}
				// A browser's reload (max-age=0) is a plain hit: on the fast
				// path when the site ignores client directives.
				if n := served() - servedBefore; !noFast && !honor && n != 4 {
					t.Errorf("the fast path served %v of the 4 hits with client directives, want all", n)
				} else if (noFast || honor) && n != 0 {
					t.Errorf("the fast path served %v requests with client directives, want none here", n)
				}
				before := fetches.Load()
				if resp := get("/never-fetched", "Cache-Control: only-if-cached"); resp.StatusCode != http.StatusGatewayTimeout || fetches.Load() != before {
					t.Errorf("only-if-cached on a miss: %d, origin asked %d times; want 504 and none", resp.StatusCode, fetches.Load()-before)
				}
			})
		}
	}
}
