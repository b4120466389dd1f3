package plugin_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/meridian-edge/meridian/gateway/cache"
	"github.com/meridian-edge/meridian/gateway/cache/cachetest"
	"github.com/meridian-edge/meridian/middleware/plugin"
	"github.com/meridian-edge/meridian/plugins"
)

// cachedPoP is chi + the plugin middleware + the real cache (L1) in front
// of a real origin that counts its requests and answers with cacheControl.
type cachedPoP struct {
	srv   *httptest.Server
	host  *plugins.Host
	hits  atomic.Int64
	chain *plugins.Chain
}

func newCachedPoP(t *testing.T, cacheControl string, chain *plugins.Chain) *cachedPoP {
	t.Helper()
	p := &cachedPoP{chain: chain}
	originSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := p.hits.Add(1)
		w.Header().Set("Cache-Control", cacheControl)
		fmt.Fprintf(w, "origin answer %d for %s variant %s", n, r.URL.Path, r.Header.Get("X-Ab-Variant"))
	}))
	t.Cleanup(originSrv.Close)
	c, err := cache.New(cache.Options{L1Bytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	// Generous timeout: under -race a Go plugin's first call (runtime init)
	// can pass the 50ms default, and fail open would skip the plugin.
	h, err := plugins.NewHost(plugins.Options{Engine: engine, Limits: plugins.Limits{Timeout: 2 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close(context.Background()) })
	p.host = h
	r := chi.NewRouter()
	r.Use(plugin.New(plugin.Options{Host: h, PoP: "fra1", Chain: func(*http.Request) *plugins.Chain { return p.chain }}))
	r.Handle("/*", c.Handler(cache.SitePolicy{SiteID: "shop"}, cachetest.Transport(t, originSrv.URL, 0)))
	p.srv = httptest.NewServer(r)
	t.Cleanup(p.srv.Close)
	return p
}

func (p *cachedPoP) get(t *testing.T, path string, hdr ...string) (string, string) {
	t.Helper()
	res := fetch(t, p.srv.URL+path, hdr...)
	return res.body, res.header.Get("Cache-Status")
}

func deployTo(t *testing.T, h *plugins.Host, site, name, key string) {
	t.Helper()
	v, err := h.Add(context.Background(), site, name, wasm[key])
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Activate(context.Background(), site, name, v.Version); err != nil {
		t.Fatal(err)
	}
}

func TestPluginCacheKeySeparatesVariants(t *testing.T) {
	p := newCachedPoP(t, "public, max-age=3600", &plugins.Chain{Site: "shop", Entries: []plugins.Entry{{Plugin: "ab", RequestHeaders: []string{"cookie"}}}})
	deployTo(t, p.host, "shop", "ab", "absplit")
	b1, _ := p.get(t, "/page", "Cookie", "mrd_ab=b")
	b2, cs := p.get(t, "/page", "Cookie", "mrd_ab=b")
	if b1 != b2 || !strings.Contains(cs, "hit") || !strings.HasSuffix(b1, "variant b") {
		t.Fatalf("variant b must be cached: %q then %q (%s)", b1, b2, cs)
	}
	a1, _ := p.get(t, "/page", "Cookie", "mrd_ab=a")
	if !strings.HasSuffix(a1, "variant a") || p.hits.Load() != 2 {
		t.Fatalf("variant a must not get b's cached object: %q, %d origin hits", a1, p.hits.Load())
	}
}

func TestPluginCacheTTLAndNoStore(t *testing.T) {
	t.Run("ttl makes an uncacheable answer cacheable", func(t *testing.T) {
		p := newCachedPoP(t, "public, max-age=0", &plugins.Chain{Site: "shop", Entries: []plugins.Entry{{Plugin: "as", Config: map[string]string{"cache_ttl": "60"}}}})
		deployTo(t, p.host, "shop", "as", "as-headers")
		p.get(t, "/ttl")
		_, cs := p.get(t, "/ttl")
		if p.hits.Load() != 1 || !strings.Contains(cs, "hit") {
			t.Fatalf("with a 60s plugin TTL the second request must hit: %d origin hits, %q", p.hits.Load(), cs)
		}
	})
	t.Run("no-store keeps a cacheable answer out", func(t *testing.T) {
		p := newCachedPoP(t, "public, max-age=3600", &plugins.Chain{Site: "shop", Entries: []plugins.Entry{{Plugin: "as", Config: map[string]string{"no_store": "true"}}}})
		deployTo(t, p.host, "shop", "as", "as-headers")
		p.get(t, "/ns")
		p.get(t, "/ns")
		if p.hits.Load() != 2 {
			t.Fatalf("no-store: want 2 origin hits, got %d", p.hits.Load())
		}
	})
}
