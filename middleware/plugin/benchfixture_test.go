package plugin_test

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway/cache"
	"github.com/meridian-edge/meridian/gateway/cache/cachetest"
	"github.com/meridian-edge/meridian/plugins"
	"github.com/meridian-edge/meridian/plugins/native"
	"github.com/meridian-edge/meridian/plugins/plugintest"
)

// benchPlugins are the plugins every engine benchmark activates for site
// "shop": a raw-wasm no-op (the host's own cost), the header example's
// actions written by raw wasm (the host's cost of applying them), and the
// Go no-op and the header-injection examples in Go and AssemblyScript.
var benchPlugins = []string{"wat/continue", "wat/headers", "noop", "headers", "as-headers"}

// benchSite is site "shop" behind a real cache (L1 only) and a real origin
// serving one small cacheable object at every path.
func benchSite(b *testing.B) http.Handler {
	b.Helper()
	originSrv := benchOrigin(b)
	c, err := cache.New(cache.Options{L1Bytes: 64 << 20})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c.Handler(cache.SitePolicy{SiteID: "shop"}, cachetest.Transport(b, originSrv.URL, 0))
}

// benchOrigin is a real origin serving one small cacheable object at every
// path.
func benchOrigin(tb testing.TB) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(w, "hello from the origin, a small cached object")
	}))
	tb.Cleanup(srv.Close)
	return srv
}

// benchHosts returns a plugin host per engine ("sdk" and "native") with
// benchPlugins active for site "shop".
func benchHosts(b *testing.B) map[string]*plugins.Host {
	b.Helper()
	ctx := context.Background()
	// A copy: the package's fixture map stays as the tests built it.
	blobs := maps.Clone(wasm)
	for _, name := range []string{"continue", "headers"} {
		w, err := plugintest.WAT(ctx, b.TempDir(), name)
		if err != nil {
			b.Fatal(err)
		}
		blobs["wat/"+name] = w
	}
	nat, err := native.New(native.Options{CacheDir: plugintest.CacheDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { nat.Close(ctx) })
	hosts := map[string]*plugins.Host{}
	for name, e := range map[string]plugins.Engine{"sdk": engine, "native": nat} {
		h, err := plugins.NewHost(plugins.Options{Engine: e, Limits: plugins.Limits{Timeout: time.Second}})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { h.Close(ctx) })
		for _, p := range benchPlugins {
			v, err := h.Add(ctx, "shop", p, blobs[p])
			if err != nil {
				b.Fatal(err)
			}
			if err := h.Activate(ctx, "shop", p, v.Version); err != nil {
				b.Fatal(err)
			}
		}
		hosts[name] = h
	}
	return hosts
}
