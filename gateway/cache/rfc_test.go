package cache_test

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway/cache"
	"github.com/meridian-edge/meridian/internal/testutil"
)

// step is one client request in a scenario, after advancing the cache clock.
type step struct {
	advance    time.Duration
	method     string
	header     http.Header
	wantStatus int
	wantOrigin int64  // origin requests made so far, cumulative
	wantCS     string // substring of Cache-Status
	wantBody   *string
	wantHeader map[string]string // "" means absent
}

type scenario struct {
	name   string
	origin func(n int64, w http.ResponseWriter, r *http.Request)
	steps  []step
}

func str(s string) *string { return &s }

func httpDate(t time.Time) string { return t.UTC().Format(http.TimeFormat) }

// cc answers with the given Cache-Control and a body naming the request number.
func cc(v string, extra ...string) func(int64, http.ResponseWriter, *http.Request) {
	return func(n int64, w http.ResponseWriter, r *http.Request) {
		if v != "" {
			w.Header().Set("Cache-Control", v)
		}
		for i := 0; i+1 < len(extra); i += 2 {
			w.Header().Add(extra[i], extra[i+1])
		}
		fmt.Fprintf(w, "body %d", n)
	}
}

func runScenarios(t *testing.T, cases []scenario) {
	for _, sc := range cases {
		t.Run(sc.name, func(t *testing.T) {
			var e *env
			e = newEnv(t, func(w http.ResponseWriter, r *http.Request) {
				sc.origin(e.count.Load(), w, r)
			}, envOpt{timeout: 2 * time.Second})
			for i, s := range sc.steps {
				e.clock.Advance(s.advance)
				m := s.method
				if m == "" {
					m = http.MethodGet
				}
				rep := e.do(m, "/obj", s.header, nil)
				want := s.wantStatus
				if want == 0 {
					want = 200
				}
				if rep.status != want {
					t.Fatalf("step %d: status %d, want %d (body %q, Cache-Status %q)", i, rep.status, want, rep.body, rep.cs())
				}
				if got := e.count.Load(); got != s.wantOrigin {
					t.Fatalf("step %d: origin saw %d requests, want %d (Cache-Status %q)", i, got, s.wantOrigin, rep.cs())
				}
				if s.wantCS != "" && !strings.Contains(rep.cs(), s.wantCS) {
					t.Fatalf("step %d: Cache-Status %q does not contain %q", i, rep.cs(), s.wantCS)
				}
				if s.wantBody != nil && rep.body != *s.wantBody {
					t.Fatalf("step %d: body %q, want %q", i, rep.body, *s.wantBody)
				}
				for k, v := range s.wantHeader {
					if got := rep.header.Get(k); got != v {
						t.Fatalf("step %d: %s = %q, want %q", i, k, got, v)
					}
				}
			}
		})
	}
}

func TestFreshness(t *testing.T) {
	runScenarios(t, []scenario{
		{name: "max-age fresh then stale", origin: cc("max-age=60"), steps: []step{
			{wantOrigin: 1, wantCS: "fwd=uri-miss", wantBody: str("body 1")},
			{advance: 10 * time.Second, wantOrigin: 1, wantCS: "meridian; hit", wantBody: str("body 1")},
			{advance: 60 * time.Second, wantOrigin: 2, wantBody: str("body 2")},
		}},
		{name: "s-maxage over max-age", origin: cc("max-age=0, s-maxage=60"), steps: []step{
			{wantOrigin: 1}, {advance: 10 * time.Second, wantOrigin: 1, wantCS: "hit"},
		}},
		{name: "max-age over Expires", origin: cc("max-age=60", "Expires", httpDate(time.Now().Add(-time.Hour))), steps: []step{
			{wantOrigin: 1}, {advance: 10 * time.Second, wantOrigin: 1, wantCS: "hit"},
		}},
		{name: "CDN-Cache-Control over Cache-Control", origin: cc("no-cache", "CDN-Cache-Control", "max-age=60"), steps: []step{
			{wantOrigin: 1, wantHeader: map[string]string{"Cache-Control": "no-cache", "CDN-Cache-Control": "max-age=60"}},
			{advance: 10 * time.Second, wantOrigin: 1, wantCS: "hit"},
		}},
		{name: "CDN-Cache-Control no-store beats Cache-Control max-age", origin: cc("max-age=60", "CDN-Cache-Control", "no-store"), steps: []step{
			{wantOrigin: 1}, {wantOrigin: 2},
		}},
		{name: "Surrogate-Control over Cache-Control and not passed on", origin: cc("max-age=0", "Surrogate-Control", "max-age=60"), steps: []step{
			{wantOrigin: 1, wantHeader: map[string]string{"Surrogate-Control": ""}},
			{advance: 10 * time.Second, wantOrigin: 1, wantCS: "hit", wantHeader: map[string]string{"Surrogate-Control": ""}},
		}},
		{name: "received Age reduces lifetime", origin: cc("max-age=60", "Age", "50"), steps: []step{
			{wantOrigin: 1},
			{advance: 2 * time.Second, wantOrigin: 1, wantCS: "hit"},
			{advance: 12 * time.Second, wantOrigin: 2},
		}},
		{name: "Expires measured against Date not the local clock", origin: func(n int64, w http.ResponseWriter, r *http.Request) {
			// The origin's clock is an hour ahead: Expires - Date is 120 s,
			// Expires - now would be an hour.
			d := time.Now().Add(time.Hour)
			w.Header().Set("Date", httpDate(d))
			w.Header().Set("Expires", httpDate(d.Add(120*time.Second)))
			fmt.Fprintf(w, "body %d", n)
		}, steps: []step{
			{wantOrigin: 1},
			{advance: 60 * time.Second, wantOrigin: 1, wantCS: "hit"},
			{advance: 80 * time.Second, wantOrigin: 2},
		}},
		{name: "invalid Expires is already expired", origin: cc("", "Expires", "0"), steps: []step{
			{wantOrigin: 1}, {wantOrigin: 2},
		}},
		{name: "heuristic freshness from Last-Modified", origin: cc("", "Last-Modified", httpDate(time.Now().Add(-100*time.Hour))), steps: []step{
			{wantOrigin: 1}, {advance: time.Hour, wantOrigin: 1, wantCS: "hit"},
		}},
		{name: "no freshness information is revalidated before use", origin: func(n int64, w http.ResponseWriter, r *http.Request) {
			w.Header().Set("ETag", `"e1"`)
			if r.Header.Get("If-None-Match") == `"e1"` {
				w.WriteHeader(http.StatusNotModified)
				return
			}
			fmt.Fprintf(w, "body %d", n)
		}, steps: []step{
			{wantOrigin: 1},
			{wantOrigin: 2, wantCS: "fwd=stale; fwd-status=304", wantBody: str("body 1")},
		}},
		{name: "Age generated and Date kept", origin: func(n int64, w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Date", "Sun, 06 Nov 1994 08:49:37 GMT")
			w.Header().Set("Cache-Control", "max-age=60")
			w.Header().Set("Age", "0")
			fmt.Fprint(w, "old")
		}, steps: []step{
			// Date is far in the past: apparent age makes it stale at once,
			// so every request goes to the origin, and Date passes unchanged.
			{wantOrigin: 1, wantHeader: map[string]string{"Date": "Sun, 06 Nov 1994 08:49:37 GMT"}},
			{wantOrigin: 2, wantHeader: map[string]string{"Date": "Sun, 06 Nov 1994 08:49:37 GMT"}},
		}},
		{name: "Age header on hits counts resident time", origin: cc("max-age=600"), steps: []step{
			{wantOrigin: 1, wantHeader: map[string]string{"Age": ""}},
			{advance: 100 * time.Second, wantOrigin: 1, wantCS: "hit; ttl=49"},
		}},
	})
}

func TestStorability(t *testing.T) {
	auth := hdr("Authorization", "Bearer x")
	runScenarios(t, []scenario{
		{name: "no-store", origin: cc("no-store, max-age=60"), steps: []step{{wantOrigin: 1}, {wantOrigin: 2}}},
		{name: "private", origin: cc("private, max-age=60"), steps: []step{{wantOrigin: 1}, {wantOrigin: 2}}},
		{name: "private with field names", origin: cc(`private="Set-Cookie", max-age=60`), steps: []step{{wantOrigin: 1}, {wantOrigin: 2}}},
		{name: "request no-store", origin: cc("max-age=60"), steps: []step{
			{header: hdr("Cache-Control", "no-store"), wantOrigin: 1}, {wantOrigin: 2}, {wantOrigin: 2, wantCS: "hit"},
		}},
		{name: "Authorization without public is not stored", origin: cc("max-age=60"), steps: []step{
			{header: auth, wantOrigin: 1}, {header: auth, wantOrigin: 2}, {wantOrigin: 3},
		}},
		{name: "Authorization with public is stored", origin: cc("public, max-age=60"), steps: []step{
			{header: auth, wantOrigin: 1}, {header: auth, wantOrigin: 1, wantCS: "hit"},
		}},
		{name: "Authorization with s-maxage is stored", origin: cc("s-maxage=60"), steps: []step{
			{header: auth, wantOrigin: 1}, {header: auth, wantOrigin: 1, wantCS: "hit"},
		}},
		{name: "stored without Authorization is not served to Authorization", origin: cc("max-age=60"), steps: []step{
			{wantOrigin: 1}, {wantOrigin: 1, wantCS: "hit"}, {header: auth, wantOrigin: 2},
		}},
		{name: "Set-Cookie is not shared", origin: cc("max-age=60", "Set-Cookie", "sid=1"), steps: []step{{wantOrigin: 1}, {wantOrigin: 2}}},
		{name: "Set-Cookie with public is shared", origin: cc("public, max-age=60", "Set-Cookie", "theme=dark"), steps: []step{
			{wantOrigin: 1}, {wantOrigin: 1, wantCS: "hit", wantHeader: map[string]string{"Set-Cookie": "theme=dark"}},
		}},
		{name: "Vary star is not stored", origin: cc("max-age=60", "Vary", "Accept-Language, *"), steps: []step{
			{wantOrigin: 1}, {wantOrigin: 2},
		}},
		{name: "Vary star on a second line", origin: cc("max-age=60", "Vary", "Accept", "Vary", "*"), steps: []step{
			{wantOrigin: 1}, {wantOrigin: 2},
		}},
		{name: "404 with max-age is cached", origin: func(n int64, w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "max-age=60")
			w.WriteHeader(404)
			fmt.Fprint(w, "nope")
		}, steps: []step{{wantStatus: 404, wantOrigin: 1}, {wantStatus: 404, wantOrigin: 1, wantCS: "hit", wantBody: str("nope")}}},
		{name: "302 without freshness is not cached", origin: func(n int64, w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Location", "/x")
			w.WriteHeader(302)
		}, steps: []step{{wantStatus: 302, wantOrigin: 1}, {wantStatus: 302, wantOrigin: 2}}},
		{name: "500 is not cached by default", origin: func(n int64, w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(500)
		}, steps: []step{{wantStatus: 500, wantOrigin: 1}, {wantStatus: 500, wantOrigin: 2}}},
	})
}

func TestRequestDirectives(t *testing.T) {
	runScenarios(t, []scenario{
		{name: "unknown request directives and Pragma do not bypass", origin: cc("max-age=60"), steps: []step{
			{wantOrigin: 1},
			{header: hdr("Cache-Control", "foo-bar, x=\"y,z\""), wantOrigin: 1, wantCS: "hit"},
			{header: hdr("Pragma", "x-something"), wantOrigin: 1, wantCS: "hit"},
		}},
		{name: "no-cache revalidates", origin: cc("max-age=60"), steps: []step{
			{wantOrigin: 1}, {header: hdr("Cache-Control", "no-cache"), wantOrigin: 2, wantCS: "fwd=request"},
		}},
		{name: "Pragma no-cache without Cache-Control revalidates", origin: cc("max-age=60"), steps: []step{
			{wantOrigin: 1}, {header: hdr("Pragma", "no-cache"), wantOrigin: 2},
			{header: hdr("Pragma", "no-cache", "Cache-Control", "max-stale"), wantOrigin: 2, wantCS: "hit"},
		}},
		{name: "max-age smaller than age revalidates", origin: cc("max-age=600"), steps: []step{
			{wantOrigin: 1}, {advance: 30 * time.Second, header: hdr("Cache-Control", "max-age=10"), wantOrigin: 2},
		}},
		{name: "min-fresh", origin: cc("max-age=60"), steps: []step{
			{wantOrigin: 1}, {advance: 30 * time.Second, header: hdr("Cache-Control", "min-fresh=40"), wantOrigin: 2},
		}},
		{name: "max-stale allows stale", origin: cc("max-age=10"), steps: []step{
			{wantOrigin: 1}, {advance: 30 * time.Second, header: hdr("Cache-Control", "max-stale=60"), wantOrigin: 1, wantCS: "ttl=-"},
		}},
		{name: "max-stale refused by must-revalidate", origin: cc("max-age=10, must-revalidate"), steps: []step{
			{wantOrigin: 1}, {advance: 30 * time.Second, header: hdr("Cache-Control", "max-stale=60"), wantOrigin: 2},
		}},
		{name: "only-if-cached miss is 504", origin: cc("max-age=60"), steps: []step{
			{header: hdr("Cache-Control", "only-if-cached"), wantStatus: 504, wantOrigin: 0},
			{wantOrigin: 1},
			{header: hdr("Cache-Control", "only-if-cached"), wantOrigin: 1, wantCS: "hit"},
		}},
	})
}

func TestRevalidation(t *testing.T) {
	runScenarios(t, []scenario{
		{name: "ETag 304 updates stored headers", origin: func(n int64, w http.ResponseWriter, r *http.Request) {
			w.Header().Set("ETag", `"v1"`)
			w.Header().Set("X-Version", fmt.Sprint(n))
			if r.Header.Get("If-None-Match") == `"v1"` {
				w.Header().Set("Cache-Control", "max-age=600")
				w.WriteHeader(http.StatusNotModified)
				return
			}
			w.Header().Set("Cache-Control", "max-age=5")
			fmt.Fprint(w, "payload")
		}, steps: []step{
			{wantOrigin: 1, wantHeader: map[string]string{"X-Version": "1"}},
			{advance: 10 * time.Second, wantOrigin: 2, wantCS: "fwd-status=304", wantBody: str("payload"), wantHeader: map[string]string{"X-Version": "2", "Cache-Control": "max-age=600"}},
			{advance: 100 * time.Second, wantOrigin: 2, wantCS: "hit", wantBody: str("payload"), wantHeader: map[string]string{"X-Version": "2"}},
		}},
		{name: "Last-Modified revalidation", origin: func(n int64, w http.ResponseWriter, r *http.Request) {
			lm := "Sun, 06 Nov 1994 08:49:37 GMT"
			w.Header().Set("Cache-Control", "max-age=5")
			w.Header().Set("Last-Modified", lm)
			if r.Header.Get("If-Modified-Since") == lm {
				w.WriteHeader(http.StatusNotModified)
				return
			}
			fmt.Fprint(w, "lm body")
		}, steps: []step{
			{wantOrigin: 1}, {advance: 10 * time.Second, wantOrigin: 2, wantCS: "fwd-status=304", wantBody: str("lm body")},
		}},
		{name: "no-cache response always revalidated", origin: func(n int64, w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "no-cache, max-age=600")
			w.Header().Set("ETag", `"a"`)
			if r.Header.Get("If-None-Match") == `"a"` {
				w.WriteHeader(http.StatusNotModified)
				return
			}
			fmt.Fprint(w, "nc")
		}, steps: []step{
			{wantOrigin: 1}, {wantOrigin: 2, wantBody: str("nc")}, {wantOrigin: 3, wantBody: str("nc")},
		}},
		{name: "changed response replaces stored", origin: func(n int64, w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "max-age=5")
			w.Header().Set("ETag", fmt.Sprintf(`"%d"`, n))
			fmt.Fprintf(w, "version %d", n)
		}, steps: []step{
			{wantOrigin: 1}, {advance: 10 * time.Second, wantOrigin: 2, wantBody: str("version 2")},
			{wantOrigin: 2, wantCS: "hit", wantBody: str("version 2")},
		}},
	})
}

func TestClientConditionals(t *testing.T) {
	lm := "Sun, 06 Nov 1994 08:49:37 GMT"
	later := "Mon, 07 Nov 1994 08:49:37 GMT"
	runScenarios(t, []scenario{
		{name: "If-None-Match takes precedence over If-Modified-Since", origin: cc("max-age=60", "ETag", `"a"`, "Last-Modified", lm), steps: []step{
			{wantOrigin: 1},
			{header: hdr("If-None-Match", `"b"`, "If-Modified-Since", later), wantStatus: 200, wantOrigin: 1, wantBody: str("body 1")},
			{header: hdr("If-None-Match", `"a"`, "If-Modified-Since", "Sat, 01 Jan 1994 00:00:00 GMT"), wantStatus: 304, wantOrigin: 1},
			{header: hdr("If-Modified-Since", later), wantStatus: 304, wantOrigin: 1},
		}},
		{name: "conditional miss answered from the fetched response", origin: cc("max-age=60", "ETag", `"a"`), steps: []step{
			{header: hdr("If-None-Match", `"a"`), wantStatus: 200, wantOrigin: 1},
			{header: hdr("If-None-Match", `W/"a"`), wantStatus: 304, wantOrigin: 1},
		}},
	})
}

func TestRangeAndHead(t *testing.T) {
	body := "0123456789abcdefghij"
	origin := func(n int64, w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			http.Error(w, "origin expected GET, got "+r.Method, 500)
			return
		}
		if r.Header.Get("Range") != "" {
			http.Error(w, "origin must not see Range on a fill", 500)
			return
		}
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("ETag", `"r"`)
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(w, body)
	}
	runScenarios(t, []scenario{
		{name: "range from stored", origin: origin, steps: []step{
			{wantOrigin: 1, wantBody: str(body)},
			{header: hdr("Range", "bytes=2-5"), wantStatus: 206, wantOrigin: 1, wantBody: str("2345"), wantHeader: map[string]string{"Content-Range": "bytes 2-5/20"}},
			{header: hdr("Range", "bytes=-3"), wantStatus: 206, wantOrigin: 1, wantBody: str("hij")},
			{header: hdr("Range", "bytes=50-"), wantStatus: 416, wantOrigin: 1, wantHeader: map[string]string{"Content-Range": "bytes */20"}},
			{header: hdr("Range", "bytes=0-1", "If-Range", `"other"`), wantStatus: 200, wantOrigin: 1, wantBody: str(body)},
		}},
		{name: "range on a miss gets its range and stores the whole", origin: origin, steps: []step{
			{header: hdr("Range", "bytes=0-1"), wantStatus: 206, wantOrigin: 1, wantBody: str("01")},
			{header: hdr("Range", "bytes=0-1"), wantStatus: 206, wantOrigin: 1, wantBody: str("01")},
		}},
		{name: "HEAD served from stored GET", origin: origin, steps: []step{
			{wantOrigin: 1},
			{method: http.MethodHead, wantOrigin: 1, wantCS: "hit", wantBody: str(""), wantHeader: map[string]string{"Content-Length": "20", "Etag": `"r"`}},
		}},
		{name: "HEAD miss fills with GET", origin: origin, steps: []step{
			{method: http.MethodHead, wantOrigin: 1, wantBody: str("")},
			// The HEAD answer can leave before the fill ends: the GET then
			// joins the fill or hits; either way the origin is not asked again.
			{wantOrigin: 1, wantBody: str(body)},
		}},
	})
}

func TestVary(t *testing.T) {
	origin := func(n int64, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Vary", "Accept-Encoding")
		fmt.Fprintf(w, "enc=%s n=%d", r.Header.Get("Accept-Encoding"), n)
	}
	runScenarios(t, []scenario{
		{name: "variants stored apart and normalised", origin: origin, steps: []step{
			{header: hdr("Accept-Encoding", "gzip, br"), wantOrigin: 1, wantBody: str("enc=br, gzip n=1")},
			{header: hdr("Accept-Encoding", "gzip,br"), wantOrigin: 1, wantCS: "hit", wantBody: str("enc=br, gzip n=1")},
			{header: hdr("Accept-Encoding", "identity"), wantOrigin: 2, wantCS: "fwd=vary-miss", wantBody: str("enc=identity n=2")},
			{wantOrigin: 3, wantBody: str("enc= n=3")},
			{header: hdr("Accept-Encoding", "gzip, br"), wantOrigin: 3, wantCS: "hit", wantBody: str("enc=br, gzip n=1")},
			{header: hdr("Accept-Encoding", "identity"), wantOrigin: 3, wantCS: "hit", wantBody: str("enc=identity n=2")},
		}},
	})
}

func TestStaleExtensions(t *testing.T) {
	failing := func(good string) func(int64, http.ResponseWriter, *http.Request) {
		return func(n int64, w http.ResponseWriter, r *http.Request) {
			if n > 1 {
				http.Error(w, "origin broken", http.StatusInternalServerError)
				return
			}
			w.Header().Set("Cache-Control", good)
			fmt.Fprint(w, "good")
		}
	}
	runScenarios(t, []scenario{
		{name: "stale-if-error serves stale on 500", origin: failing("max-age=1, stale-if-error=600"), steps: []step{
			{wantOrigin: 1}, {advance: 10 * time.Second, wantOrigin: 2, wantBody: str("good"), wantCS: "stale-if-error"},
		}},
		{name: "500 passes on without stale-if-error", origin: failing("max-age=1"), steps: []step{
			{wantOrigin: 1}, {advance: 10 * time.Second, wantStatus: 500, wantOrigin: 2},
		}},
		{name: "request stale-if-error", origin: failing("max-age=1"), steps: []step{
			{wantOrigin: 1}, {advance: 10 * time.Second, header: hdr("Cache-Control", "stale-if-error=60"), wantOrigin: 2, wantBody: str("good")},
		}},
		{name: "must-revalidate forbids stale-if-error", origin: failing("max-age=1, must-revalidate, stale-if-error=600"), steps: []step{
			{wantOrigin: 1}, {advance: 10 * time.Second, wantStatus: 500, wantOrigin: 2},
		}},
		{name: "stale-if-error window exceeded", origin: failing("max-age=1, stale-if-error=5"), steps: []step{
			{wantOrigin: 1}, {advance: 60 * time.Second, wantStatus: 500, wantOrigin: 2},
		}},
	})
}

func TestStaleWhileRevalidate(t *testing.T) {
	var e *env
	e = newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		// max-age well over a second: Date has whole seconds, so a copy
		// stored just before a second turns is up to a second old at once,
		// and with max-age=1 the revalidated copy was sometimes stale
		// already and revalidated again (1 run in 100).
		w.Header().Set("Cache-Control", "max-age=5, stale-while-revalidate=60")
		fmt.Fprintf(w, "v%d", e.count.Load())
	}, envOpt{})
	if r := e.get("/swr"); r.body != "v1" {
		t.Fatalf("first: %q", r.body)
	}
	e.clock.Advance(10 * time.Second)
	r := e.get("/swr")
	if r.body != "v1" || !strings.Contains(r.cs(), "stale-while-revalidate") {
		t.Fatalf("stale answer: body %q Cache-Status %q, want v1 served stale", r.body, r.cs())
	}
	// Wait for the revalidated copy to be stored, not just fetched: a
	// request between the two would still find v1 stale and could start a
	// second revalidation, which is the cache's right.
	testutil.WaitFor(t, "background revalidation to be stored", func() bool {
		for _, l := range strings.Split(metricText(t, e), "\n") {
			if strings.HasPrefix(l, "meridian_cache_stores_total{") && strings.Contains(l, `outcome="stored"`) && strings.HasSuffix(l, "} 2") {
				return true
			}
		}
		return false
	})
	if r := e.get("/swr"); r.body != "v2" {
		t.Fatalf("after the background revalidation: %q, want v2", r.body)
	}
	if n := e.count.Load(); n != 2 {
		t.Fatalf("origin requests %d, want 2", n)
	}
	e.clock.Advance(100 * time.Second) // beyond the window: revalidate in line
	if r := e.get("/swr"); r.body != "v3" {
		t.Fatalf("after window: %q, want v3", r.body)
	}
}

// TestStaleWhileRevalidateStampede: many clients hitting an object that has
// just gone stale (stale-while-revalidate) all get the stale copy at once,
// and the origin sees one revalidation, however many hits arrive while it
// runs.
func TestStaleWhileRevalidateStampede(t *testing.T) {
	var e *env
	release := make(chan struct{})
	e = newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		if e.count.Load() > 1 {
			<-release // the revalidation takes as long as the stampede
		}
		w.Header().Set("Cache-Control", "max-age=1, stale-while-revalidate=60")
		fmt.Fprintf(w, "v%d", e.count.Load())
	}, envOpt{})
	if r := e.get("/hot"); r.body != "v1" {
		t.Fatalf("first: %q", r.body)
	}
	e.clock.Advance(10 * time.Second)
	e.concurrently(20, 10, func() error {
		r, err := e.fetch("/hot")
		if err != nil {
			return err
		}
		if r.body != "v1" || !strings.Contains(r.cs(), "stale-while-revalidate") {
			return fmt.Errorf("stale hit: %q %q", r.body, r.cs())
		}
		return nil
	})
	close(release)
	testutil.WaitFor(t, "the revalidation to be stored", func() bool {
		return testutil.CounterSum(t, e.reg, "meridian_cache_stores_total", "outcome", "stored") >= 2
	})
	if n := e.count.Load(); n != 2 {
		t.Fatalf("origin requests %d for 200 stale hits, want 2 (the fill and one revalidation)", n)
	}
	if r := e.get("/hot"); r.body != "v2" {
		t.Fatalf("after the revalidation: %q, want v2", r.body)
	}
}

// TestSiteStaleWhileRevalidate: a site's stale_while_revalidate serves a
// copy that went stale at once while the origin is asked in the
// background, for responses that set no window of their own; the origin's
// own window, must-revalidate and no-cache win over it.
func TestSiteStaleWhileRevalidate(t *testing.T) {
	var e *env
	e = newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		cc := "max-age=5"
		switch r.URL.Path {
		case "/own":
			cc = "max-age=5, stale-while-revalidate=2"
		case "/must":
			cc = "max-age=5, must-revalidate"
		}
		w.Header().Set("Cache-Control", cc)
		fmt.Fprintf(w, "v%d", e.count.Load())
	}, envOpt{site: cache.SitePolicy{SiteID: "site1", StaleWhileRevalidate: 30 * time.Second}})
	for _, p := range []string{"/plain", "/own", "/must"} {
		e.get(p)
	}
	e.clock.Advance(15 * time.Second) // 10s stale: in the site's window, past /own's
	if r := e.get("/plain"); r.body != "v1" || !strings.Contains(r.cs(), "stale-while-revalidate") {
		t.Fatalf("/plain 10s stale: %q (Cache-Status %q), want v1 served stale while revalidated", r.body, r.cs())
	}
	testutil.WaitFor(t, "the background revalidation of /plain", func() bool { return e.count.Load() == 4 })
	for _, p := range []string{"/own", "/must"} {
		if r := e.get(p); strings.Contains(r.cs(), "stale-while-revalidate") || !strings.Contains(r.cs(), "fwd=stale") {
			t.Errorf("%s 10s stale: Cache-Status %q, want a revalidation in line", p, r.cs())
		}
	}
	e.clock.Advance(60 * time.Second) // past the site's window too
	if r := e.get("/plain"); strings.Contains(r.cs(), "stale-while-revalidate") || !strings.Contains(r.cs(), "fwd=stale") {
		t.Fatalf("/plain past the window: Cache-Status %q, want a revalidation in line", r.cs())
	}
}

// TestBackgroundRevalidationLogged: a stale-while-revalidate refresh, an
// origin request no client's access log line covers, is logged with its
// site, URL, origin status or error and outcome; a failed one as a warning.
func TestBackgroundRevalidationLogged(t *testing.T) {
	for _, c := range []struct {
		name string
		want []string
	}{
		{"refreshed", []string{"level=INFO", "origin_status=304", "outcome=refreshed"}},
		{"5xx", []string{"level=WARN", "origin_status=502", "outcome=failed"}},
		{"reset", []string{"level=WARN", "origin_error=origin-error", "outcome=failed"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var logs testutil.SyncBuffer
			e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("If-None-Match") != "" {
					switch c.name {
					case "5xx":
						w.WriteHeader(http.StatusBadGateway)
					case "reset":
						conn, _, err := http.NewResponseController(w).Hijack()
						if err == nil {
							conn.Close()
						}
					default:
						w.WriteHeader(http.StatusNotModified)
					}
					return
				}
				w.Header().Set("Cache-Control", "max-age=5, stale-while-revalidate=60")
				w.Header().Set("ETag", `"v1"`)
				io.WriteString(w, "v1")
			}, envOpt{opts: cache.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))}})
			e.get("/swr")
			e.clock.Advance(10 * time.Second)
			if r := e.get("/swr"); !strings.Contains(r.cs(), "stale-while-revalidate") {
				t.Fatalf("Cache-Status %q, want a stale-while-revalidate answer", r.cs())
			}
			var line string
			testutil.WaitFor(t, "the background revalidation's log line", func() bool {
				for _, l := range strings.Split(logs.String(), "\n") {
					if strings.Contains(l, `msg="background revalidation"`) {
						line = l
						return true
					}
				}
				return false
			})
			for _, w := range append(c.want, "site=site1", "url=http://127.0.0.1/swr", "origin_time=") {
				if !strings.Contains(line, w) {
					t.Errorf("log line %q lacks %q", line, w)
				}
			}
		})
	}
}
