package cache_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-edge/meridian/gateway/cache"
	"github.com/meridian-edge/meridian/gateway/cache/cachetest"
	"github.com/meridian-edge/meridian/internal/testutil"
)

// servedBytes is meridian_cache_served_bytes_total of site1's tier.
func servedBytes(t *testing.T, g prometheus.Gatherer, tier string) float64 {
	t.Helper()
	return testutil.MetricSum(t, g, "meridian_cache_served_bytes_total", map[string]string{"site": "site1", "tier": tier})
}

// TestServedBytesCountBodiesOnly: a HEAD hit sends no body, so it adds
// nothing to meridian_cache_served_bytes_total, while a GET hit adds the
// body's size; a 304 adds nothing and a Range request what its 206 carries.
// Both ways a hit is answered: the fast path and net/http.
func TestServedBytesCountBodiesOnly(t *testing.T) {
	const size = 307
	body := strings.Repeat("b", size)
	for _, plain := range []bool{false, true} {
		t.Run(fmt.Sprintf("plainFront=%v", plain), func(t *testing.T) {
			e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Cache-Control", "max-age=600")
				w.Header().Set("ETag", `"v1"`)
				w.Write([]byte(body))
			}, envOpt{plainFront: plain})
			if r := e.get("/obj"); r.body != body {
				t.Fatalf("fill: %d %q", r.status, r.body)
			}
			// A miss streams its body to the client and counts it when the
			// stream ends, which the client may see first: wait, boundedly.
			testutil.WaitFor(t, "the miss's bytes counted as served from origin", func() bool { return servedBytes(t, e.reg, "origin") == size })
			hits := func() float64 {
				return testutil.MetricSum(t, e.reg, "meridian_cache_requests_total", map[string]string{"site": "site1", "tier": "l1", "result": "hit"})
			}

			for i := range 3 {
				r := e.do(http.MethodHead, "/obj", nil, nil)
				if r.status != http.StatusOK || r.body != "" || !strings.Contains(r.cs(), "hit") || r.header.Get("Content-Length") != fmt.Sprint(size) {
					t.Fatalf("HEAD %d: %d %q Cache-Status %q Content-Length %q", i, r.status, r.body, r.cs(), r.header.Get("Content-Length"))
				}
			}
			if got := hits(); got != 3 {
				t.Fatalf("hits after 3 HEADs = %v, want 3", got)
			}
			if got := servedBytes(t, e.reg, "l1"); got != 0 {
				t.Errorf("3 HEAD hits added %v served bytes, want 0 (no body was sent)", got)
			}

			before := servedBytes(t, e.reg, "l1")
			for i := range 2 {
				if r := e.get("/obj"); r.body != body || !strings.Contains(r.cs(), "hit") {
					t.Fatalf("GET %d: %d %q", i, r.status, r.cs())
				}
			}
			if got := servedBytes(t, e.reg, "l1") - before; got != 2*size {
				t.Errorf("2 GET hits added %v served bytes, want %d", got, 2*size)
			}

			before = servedBytes(t, e.reg, "l1")
			if r := e.get("/obj", "If-None-Match", `"v1"`); r.status != http.StatusNotModified || r.body != "" {
				t.Fatalf("conditional GET: %d %q", r.status, r.body)
			}
			if got := servedBytes(t, e.reg, "l1") - before; got != 0 {
				t.Errorf("a 304 added %v served bytes, want 0", got)
			}

			if r := e.get("/obj", "Range", "bytes=0-9"); r.status != http.StatusPartialContent || r.body != body[:10] {
				t.Fatalf("Range: %d %q", r.status, r.body)
			}
			// net/http may finish writing this reply before the handler
			// has counted it: wait, boundedly.
			testutil.WaitFor(t, "the 206's 10 bytes counted, and no more", func() bool { return servedBytes(t, e.reg, "l1")-before == 10 })
			if got := servedBytes(t, e.reg, "origin"); got != size {
				t.Errorf("served bytes from origin = %v, want still %d", got, size)
			}
		})
	}
}

// TestPoPIDLabelsMetricsAndNamesVia: the pop label is the PoP's id, as in
// the DNS server's metrics and /admin/info, while Via says
// "meridian-<id>"; without an id there is no pop label and Via says
// "meridian".
func TestPoPIDLabelsMetricsAndNamesVia(t *testing.T) {
	for _, tc := range []struct {
		id, via string
	}{{"ap-northeast-1", "1.1 meridian-ap-northeast-1"}, {"", "1.1 meridian"}} {
		t.Run("id="+tc.id, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			c, err := cache.New(cache.Options{L1Bytes: 8 << 20, PoPID: tc.id, Registerer: reg})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			origin := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Cache-Control", "max-age=60")
				w.Write([]byte("hello"))
			}))
			front := newServer(t, c.Handler(cache.SitePolicy{SiteID: "site1"}, cachetest.Transport(t, origin.URL, 0)))
			for range 2 { // a miss and a hit
				resp, err := http.Get(front.URL + "/x")
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if got := resp.Header.Get("Via"); got != tc.via {
					t.Errorf("Via %q, want %q", got, tc.via)
				}
			}
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			seen := 0
			for _, mf := range mfs {
				if !strings.HasPrefix(mf.GetName(), "meridian_cache_") {
					continue
				}
				for _, m := range mf.GetMetric() {
					pop, has := "", false
					for _, l := range m.GetLabel() {
						if l.GetName() == "pop" {
							pop, has = l.GetValue(), true
						}
					}
					seen++
					if has != (tc.id != "") || pop != tc.id {
						t.Errorf("%s: pop label %q (present %v), want %q", mf.GetName(), pop, has, tc.id)
					}
				}
			}
			if seen == 0 {
				t.Fatal("no cache metrics gathered")
			}
		})
	}
}
