//go:build !race

// Allocation counts are only meaningful without the race detector: under
// it, sync.Pool drops a share of what it is given on purpose, so pooled
// objects are made again. make test runs this file in a pass without -race.

package plugin_test

import (
	"context"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/plugins"
	"github.com/meridian-edge/meridian/plugins/native"
	"github.com/meridian-edge/meridian/plugins/plugintest"
)

// TestPluginFastHitAllocations: a header-injecting plugin (the
// AssemblyScript example: two request headers, one response header) adds
// no allocation to a PoP's fast hit (the issue's "no per-request
// allocation beyond what the encoding needs"; the encoding buffers are
// recycled).
func TestPluginFastHitAllocations(t *testing.T) {
	nativeOnce.Do(func() { nativeEng, nativeErr = native.New(native.Options{CacheDir: plugintest.CacheDir()}) })
	if nativeErr != nil {
		t.Fatal(nativeErr)
	}
	h, err := plugins.NewHost(plugins.Options{Engine: nativeEng, Limits: plugins.Limits{Timeout: 2 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close(context.Background()) })
	ctx := context.Background()
	v, err := h.Add(ctx, "shop", "as", wasm["as-headers"])
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Activate(ctx, "shop", "as", v.Version); err != nil {
		t.Fatal(err)
	}
	chain := &plugins.Chain{Site: "shop", Entries: []plugins.Entry{{Plugin: "as", Config: map[string]string{
		"request": "X-Site: shop", "response": "X-Frame-Options: DENY"}}}}
	allocs := func(chain *plugins.Chain) float64 {
		c := dialHit(t, benchPoP(t, h, chain, true))
		defer c.close()
		for range 200 {
			c.get(t)
		}
		return testing.AllocsPerRun(2000, func() { c.get(t) })
	}
	none, plugged := allocs(nil), allocs(chain)
	if plugged > none+0.2 {
		t.Errorf("a fast hit allocates %.2f times with the plugin against %.2f without: the plugin path allocates per request", plugged, none)
	}
}
