package cache_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meridian-edge/meridian/gateway/cache"
	mtestutil "github.com/meridian-edge/meridian/internal/testutil"
)

func metricText(t *testing.T, e *env) string {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			b.WriteString(mf.GetName())
			b.WriteString("{")
			for i, l := range m.GetLabel() {
				if i > 0 {
					b.WriteString(",")
				}
				fmt.Fprintf(&b, "%s=%q", l.GetName(), l.GetValue())
			}
			b.WriteString("} ")
			switch {
			case m.Counter != nil:
				fmt.Fprint(&b, m.Counter.GetValue())
			case m.Gauge != nil:
				fmt.Fprint(&b, m.Gauge.GetValue())
			case m.Histogram != nil:
				fmt.Fprint(&b, m.Histogram.GetSampleCount())
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

func TestStreamingLargeBodyBoundedMemory(t *testing.T) {
	const size = 100 << 20
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Cache-Control", "max-age=60")
				if !chunked {
					w.Header().Set("Content-Length", fmt.Sprint(size))
				}
				buf := make([]byte, 64<<10)
				for i := range buf {
					buf[i] = byte(i)
				}
				for n := 0; n < size; n += len(buf) {
					if _, err := w.Write(buf); err != nil {
						return
					}
				}
			}, envOpt{})
			runtime.GC()
			var base runtime.MemStats
			runtime.ReadMemStats(&base)
			var peak atomic.Uint64
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				var ms runtime.MemStats
				for {
					select {
					case <-stop:
						return
					case <-time.After(20 * time.Millisecond):
					}
					runtime.ReadMemStats(&ms)
					if ms.HeapInuse > peak.Load() {
						peak.Store(ms.HeapInuse)
					}
				}
			}()
			resp, err := e.client.Get(e.front.URL + "/big")
			if err != nil {
				t.Fatal(err)
			}
			n, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			close(stop)
			<-done
			if err != nil || n != size {
				t.Fatalf("read %d bytes, err %v; want %d", n, err, size)
			}
			grow := int64(peak.Load()) - int64(base.HeapInuse)
			if grow > 32<<20 {
				t.Fatalf("heap grew by %d MiB while streaming 100 MiB; want it bounded (< 32 MiB)", grow>>20)
			}
			if r := e.get("/big"); e.count.Load() != 2 || strings.Contains(r.cs(), "hit") {
				t.Fatalf("an object over the L1 limit must not be stored: origin requests %d, %q", e.count.Load(), r.cs())
			}
		})
	}
}

func TestPurge(t *testing.T) {
	newPurgeEnv := func(t *testing.T) *env {
		var e *env
		e = newEnv(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "max-age=600, stale-if-error=600")
			w.Header().Set("ETag", `"e"`)
			switch {
			case strings.HasPrefix(r.URL.Path, "/img/"):
				w.Header().Set("Surrogate-Key", "images all")
			case strings.HasPrefix(r.URL.Path, "/css/"):
				w.Header().Set("Cache-Tag", "styles, all")
			}
			if r.URL.Query().Get("down") != "" {
				http.Error(w, "down", 503)
				return
			}
			fmt.Fprintf(w, "%s #%d", r.URL.Path, e.count.Load())
		}, envOpt{})
		for _, p := range []string{"/img/a.png", "/img/b.png", "/css/s.css", "/index.html", "/imgx"} {
			e.get(p)
		}
		// A fill is stored once its body has gone out, which a loaded
		// machine can delay past the client's next request: the purges
		// below must find all five stored.
		mtestutil.WaitFor(t, "the five fills to be stored", func() bool {
			return mtestutil.CounterSum(t, e.reg, "meridian_cache_stores_total", "outcome", "stored") == 5
		})
		return e
	}
	cachedAfter := func(e *env) map[string]bool {
		m := map[string]bool{}
		for _, p := range []string{"/img/a.png", "/img/b.png", "/css/s.css", "/index.html", "/imgx"} {
			m[p] = strings.Contains(e.get(p).cs(), "; hit")
		}
		return m
	}
	tests := []struct {
		name    string
		sel     func(e *env) cache.Selector
		want    int
		removed []string
	}{
		{"url", func(e *env) cache.Selector {
			return cache.Selector{Site: "site1", Kind: cache.ByURL, Value: e.front.URL + "/img/a.png"}
		}, 1, []string{"/img/a.png"}},
		{"url with upper-case host", func(e *env) cache.Selector {
			return cache.Selector{Site: "site1", Kind: cache.ByURL, Value: strings.ToUpper(e.front.URL[:4]) + e.front.URL[4:] + "/index.html"}
		}, 1, []string{"/index.html"}},
		{"prefix", func(e *env) cache.Selector {
			return cache.Selector{Site: "site1", Kind: cache.ByPrefix, Value: e.front.URL + "/img/"}
		}, 2, []string{"/img/a.png", "/img/b.png"}},
		{"surrogate key", func(e *env) cache.Selector {
			return cache.Selector{Site: "site1", Kind: cache.BySurrogateKey, Value: "images"}
		}, 2, []string{"/img/a.png", "/img/b.png"}},
		{"cache tag", func(e *env) cache.Selector {
			return cache.Selector{Site: "site1", Kind: cache.BySurrogateKey, Value: "styles"}
		}, 1, []string{"/css/s.css"}},
		{"key in both headers", func(e *env) cache.Selector {
			return cache.Selector{Site: "site1", Kind: cache.BySurrogateKey, Value: "all"}
		}, 3, []string{"/img/a.png", "/img/b.png", "/css/s.css"}},
		{"site", func(e *env) cache.Selector { return cache.Selector{Site: "site1", Kind: cache.BySite} },
			5, []string{"/img/a.png", "/img/b.png", "/css/s.css", "/index.html", "/imgx"}},
		{"other site", func(e *env) cache.Selector { return cache.Selector{Site: "site2", Kind: cache.BySite} }, 0, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newPurgeEnv(t)
			n, err := e.c.Purge(context.Background(), tc.sel(e))
			if err != nil || n != tc.want {
				t.Fatalf("Purge = %d, %v; want %d", n, err, tc.want)
			}
			got := cachedAfter(e)
			for p, hit := range got {
				removed := false
				for _, r := range tc.removed {
					removed = removed || r == p
				}
				if hit == removed {
					t.Errorf("%s: served from cache = %v after purge, want %v", p, hit, !removed)
				}
			}
		})
	}
	t.Run("soft", func(t *testing.T) {
		e := newPurgeEnv(t)
		n, err := e.c.Purge(context.Background(), cache.Selector{Site: "site1", Kind: cache.ByPrefix, Value: e.front.URL + "/img/", Soft: true})
		if err != nil || n != 2 {
			t.Fatalf("soft purge = %d, %v", n, err)
		}
		before := e.count.Load()
		r := e.get("/img/a.png")
		if e.count.Load() != before+1 || !strings.Contains(r.cs(), "fwd=stale") {
			t.Fatalf("soft-purged object not revalidated: %q", r.cs())
		}
		if r := e.get("/img/a.png"); !strings.Contains(r.cs(), "; hit") {
			t.Fatalf("revalidated object not fresh again: %q", r.cs())
		}
		// Soft-purged and the origin failing: the stale copy answers.
		e.c.Purge(context.Background(), cache.Selector{Site: "site1", Kind: cache.ByURL, Value: e.front.URL + "/img/b.png", Soft: true})
		e.origin.Close()
		if r := e.get("/img/b.png"); r.status != 200 || !strings.Contains(r.cs(), "stale-if-error") {
			t.Fatalf("soft-purged object with origin down: %d %q", r.status, r.cs())
		}
	})
}

func TestPurgeRejectsBadSelectors(t *testing.T) {
	c, err := cache.New(cache.Options{L1Bytes: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tests := []struct {
		sel  cache.Selector
		want string
	}{
		{cache.Selector{Kind: cache.BySite}, "site is required"},
		{cache.Selector{Site: "s", Kind: cache.ByURL, Value: "/relative"}, "must be an absolute http(s) URL"},
		{cache.Selector{Site: "s", Kind: cache.ByPrefix, Value: "ftp://x/"}, "must be an absolute http(s) URL"},
		{cache.Selector{Site: "s", Kind: cache.BySurrogateKey, Value: "a b"}, "without spaces or commas"},
		{cache.Selector{Site: "s", Kind: cache.BySurrogateKey}, "one non-empty key"},
		{cache.Selector{Site: "s", Kind: cache.BySite, Value: "x"}, "takes no value"},
		{cache.Selector{Site: "s"}, "unknown selector kind 0"},
	}
	for _, tc := range tests {
		if _, err := c.Purge(context.Background(), tc.sel); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Purge(%+v) err = %v, want %q", tc.sel, err, tc.want)
		}
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	tests := []struct {
		opts cache.Options
		want string
	}{
		{cache.Options{L1Bytes: 1000}, "below the 1 MiB minimum"},
		{cache.Options{L1MaxObject: -1}, "must not be negative"},
		{cache.Options{L1Admission: "lru"}, `unknown admission policy "lru"`},
	}
	for _, tc := range tests {
		if _, err := cache.New(tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) err = %v, want %q", tc.opts, err, tc.want)
		}
	}
}

func TestPoisoning(t *testing.T) {
	reflect := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		fmt.Fprintf(w, "host=%s url=%s method=%s fwdhost=%s evil=%s",
			r.Host, r.Header.Get("X-Original-URL"), r.Method, r.Header.Get("X-Forwarded-Host"), r.Header.Get("X-Evil"))
	}
	t.Run("override headers are not forwarded on fills", func(t *testing.T) {
		e := newEnv(t, reflect, envOpt{})
		a := e.get("/p", "X-Forwarded-Host", "evil.test", "X-Original-URL", "/admin", "X-HTTP-Method-Override", "DELETE")
		b := e.get("/p")
		for _, r := range []reply{a, b} {
			if strings.Contains(r.body, "evil.test") || strings.Contains(r.body, "/admin") {
				t.Fatalf("poisoned: %q", r.body)
			}
		}
	})
	t.Run("Host is part of the key", func(t *testing.T) {
		e := newEnv(t, reflect, envOpt{})
		e.get("/p", "Host", "a.test")
		if r := e.get("/p", "Host", "b.test"); !strings.Contains(r.body, "host=b.test") {
			t.Fatalf("b.test got %q", r.body)
		}
	})
	t.Run("unkeyed header reflected without Vary is kept from other clients only by Vary", func(t *testing.T) {
		var e *env
		e = newEnv(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "max-age=600")
			w.Header().Set("Vary", "X-Evil")
			fmt.Fprintf(w, "evil=%s", r.Header.Get("X-Evil"))
		}, envOpt{})
		e.get("/v", "X-Evil", "<script>")
		if r := e.get("/v"); r.body != "evil=" {
			t.Fatalf("clean client got %q", r.body)
		}
	})
	t.Run("GET with a body is not cached", func(t *testing.T) {
		e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			w.Header().Set("Cache-Control", "max-age=600")
			fmt.Fprintf(w, "body=%s", b)
		}, envOpt{})
		if r := e.do("GET", "/g", nil, []byte("payload")); r.body != "body=payload" {
			t.Fatalf("origin did not get the body: %q", r.body)
		}
		if r := e.get("/g"); r.body != "body=" {
			t.Fatalf("clean GET got %q", r.body)
		}
	})
}

func TestCacheKeyOptions(t *testing.T) {
	var e *env
	origin := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		fmt.Fprintf(w, "n=%d", e.count.Load())
	}
	e = newEnv(t, origin, envOpt{site: cache.SitePolicy{SiteID: "s", IgnoreQuery: []string{"utm_source"}, SortQuery: true}})
	steps := []struct {
		path string
		want string
	}{
		{"/k?a=1&b=2", "n=1"},
		{"/k?b=2&a=1", "n=1"},
		{"/k?a=1&utm_source=x&b=2", "n=1"},
		{"/k?a=1&b=3", "n=2"},
		{"/k", "n=3"},
		{"/k?", "n=3"},
	}
	for _, s := range steps {
		if r := e.get(s.path); r.body != s.want {
			t.Errorf("%s: %q, want %q", s.path, r.body, s.want)
		}
	}

	t.Run("plugin key and TTL", func(t *testing.T) {
		var e *env
		e = newEnv(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "max-age=0") // the plugin's TTL overrides
			fmt.Fprintf(w, "n=%d", e.count.Load())
		}, envOpt{wrapFront: func(h http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				ctx := cache.WithKey(r.Context(), "device="+r.Header.Get("X-Device"))
				ctx = cache.WithTTL(ctx, time.Minute)
				h.ServeHTTP(w, r.WithContext(ctx))
			})
		}})
		if r := e.get("/one", "X-Device", "phone"); r.body != "n=1" {
			t.Fatal(r.body)
		}
		if r := e.get("/two", "X-Device", "phone"); r.body != "n=1" || !strings.Contains(r.cs(), "hit") {
			t.Fatalf("same plugin key, other URL: %q %q", r.body, r.cs())
		}
		if r := e.get("/one", "X-Device", "desktop"); r.body != "n=2" {
			t.Fatalf("other plugin key: %q", r.body)
		}
		e.clock.Advance(2 * time.Minute)
		if r := e.get("/one", "X-Device", "phone"); r.body != "n=3" {
			t.Fatalf("after the plugin TTL: %q", r.body)
		}
	})
}

func TestMetrics(t *testing.T) {
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, "12345")
	}, envOpt{})
	e.get("/m")
	e.get("/m")
	e.get("/m")
	e.do("POST", "/m", nil, []byte("x"))
	txt := metricText(t, e)
	for _, want := range []string{
		`meridian_cache_requests_total{pop="test-pop",result="hit",site="site1",tier="l1"} 2`,
		`meridian_cache_requests_total{pop="test-pop",result="miss",site="site1",tier="origin"} 1`,
		`meridian_cache_requests_total{pop="test-pop",result="pass",site="site1",tier="origin"} 1`,
		`meridian_cache_served_bytes_total{pop="test-pop",site="site1",tier="l1"} 10`,
		`meridian_cache_origin_seconds{outcome="ok",pop="test-pop",site="site1"} 1`,
		`meridian_cache_stores_total{outcome="stored",pop="test-pop",site="site1",tier="l1"} 1`,
		`meridian_cache_purged_total{mode="invalidate",pop="test-pop",site="site1"} 1`,
		`meridian_cache_store_objects{pop="test-pop",store="l1"} 0`, // invalidated by the POST
		// The hits took the fast path once net/http gave the connection back.
		`meridian_cache_fast_requests_total{outcome="served",pop="test-pop"} 2`,
		// A 64 MiB L1 gives half to large bodies, from 16 KiB until the
		// traffic moves the line.
		`meridian_cache_l1_pool_budget_bytes{pop="test-pop"} 3.3554432e+07`,
		`meridian_cache_l1_pool_threshold_bytes{pop="test-pop"} 16384`,
	} {
		if !strings.Contains(txt, want) {
			t.Errorf("metrics lack %s\n%s", want, txt)
		}
	}
	if n := testutil.CollectAndCount(e.reg); n == 0 {
		t.Fatal("nothing registered")
	}
}

func TestSitePolicyValidate(t *testing.T) {
	tests := []struct {
		p    cache.SitePolicy
		want string
	}{
		{cache.SitePolicy{SiteID: "shop"}, ""},
		{cache.SitePolicy{}, "SiteID is required"},
		{cache.SitePolicy{SiteID: "a b"}, "must not contain spaces or NUL"},
		{cache.SitePolicy{SiteID: "a", MaxObject: -1}, "MaxObject -1 must not be negative"},
		{cache.SitePolicy{SiteID: "a", IgnoreQuery: []string{"utm", ""}}, "IgnoreQuery[1] is empty"},
	}
	for _, tc := range tests {
		err := tc.p.Validate()
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Validate(%+v) = %v, want %q", tc.p, err, tc.want)
		}
	}
}

func TestParseSelectorKind(t *testing.T) {
	for in, want := range map[string]cache.SelectorKind{"url": cache.ByURL, "Prefix": cache.ByPrefix, "tag": cache.BySurrogateKey, "surrogate-key": cache.BySurrogateKey, "site": cache.BySite} {
		if got, err := cache.ParseSelectorKind(in); err != nil || got != want {
			t.Errorf("ParseSelectorKind(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := cache.ParseSelectorKind("everything"); err == nil || !strings.Contains(err.Error(), `unknown selector kind "everything"`) {
		t.Errorf("bad kind: %v", err)
	}
}
