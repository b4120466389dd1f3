package plugin_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/meridian-edge/meridian/gateway/cache"
	"github.com/meridian-edge/meridian/gateway/cache/cachetest"
	"github.com/meridian-edge/meridian/middleware/plugin"
	"github.com/meridian-edge/meridian/plugins"
)

// BenchmarkL1Hit measures one request answered from the cache's L1 tier,
// through chi and the plugin middleware, with no plugin, the no-op plugin
// and the header-injection plugin, on the go-sdk host. ns/op is the CPU per
// request on one core; req/s is its inverse.
//
//	go test -run '^$' -bench L1Hit -benchmem -cpuprofile cpu.out ./middleware/plugin/
func BenchmarkL1Hit(b *testing.B) {
	originSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(w, "hello from the origin, a small cached object")
	}))
	defer originSrv.Close()
	c, err := cache.New(cache.Options{L1Bytes: 64 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	site := c.Handler(cache.SitePolicy{SiteID: "shop"}, cachetest.Transport(b, originSrv.URL, 0))

	h, err := plugins.NewHost(plugins.Options{Engine: engine, Limits: plugins.Limits{Timeout: time.Second}})
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close(context.Background())
	for _, name := range []string{"noop", "headers"} {
		v, err := h.Add(context.Background(), "shop", name, wasm[name])
		if err != nil {
			b.Fatal(err)
		}
		if err := h.Activate(context.Background(), "shop", name, v.Version); err != nil {
			b.Fatal(err)
		}
	}
	chains := map[string]*plugins.Chain{
		"none": nil,
		"noop": {Site: "shop", Entries: []plugins.Entry{{Plugin: "noop"}}},
		"headers": {Site: "shop", Entries: []plugins.Entry{{Plugin: "headers", Config: map[string]string{
			"request": "X-Site: shop", "response": "X-Frame-Options: DENY"}}}},
	}
	for _, name := range []string{"none", "noop", "headers"} {
		chain := chains[name]
		r := chi.NewRouter()
		r.Use(plugin.New(plugin.Options{Host: h, PoP: "fra1", Chain: func(*http.Request) *plugins.Chain { return chain }}))
		r.Handle("/*", site)
		req := httptest.NewRequest("GET", "http://shop.example/object", nil)
		req.RemoteAddr = "192.0.2.1:1234"
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req) // fill L1
		if w.Code != 200 {
			b.Fatalf("%s: warm-up got %d", name, w.Code)
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				w := httptest.NewRecorder()
				r.ServeHTTP(w, req)
				if w.Code != 200 || !strings.Contains(w.Header().Get("Cache-Status"), "; hit;") {
					b.Fatalf("not a hit: %d %v", w.Code, w.Header())
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
		})
	}
}
