//go:build !race

// Allocation counts are only meaningful without the race detector: under
// it, sync.Pool drops a share of what it is given on purpose, so pooled
// objects are made again. make test runs this file in a pass without -race.

package plugin_test

import (
	"testing"

	"github.com/meridian-edge/meridian/plugins"
)

// TestPluginFastHitAllocations: a header-injecting plugin (the
// AssemblyScript example: two request headers, one response header) adds
// no allocation to a PoP's fast hit (the issue's "no per-request
// allocation beyond what the encoding needs"; the encoding buffers are
// recycled).
func TestPluginFastHitAllocations(t *testing.T) {
	h := activeNativeHost(t, plugins.Options{}, "shop", map[string]string{"as": "as-headers"})
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
