package rollout_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	ntestutil "github.com/meridian-edge/meridian/internal/testutil"
	"github.com/meridian-edge/meridian/plugins"
	"github.com/meridian-edge/meridian/plugins/rollout"
	"github.com/meridian-edge/meridian/plugins/rollout/rollouttest"
)

// healthOf returns what a PoP's list answer says of a plugin version's
// health, and whether it says anything.
func healthOf(t *testing.T, p *rollouttest.PoP, plugin string, version int) (plugins.Health, bool) {
	t.Helper()
	for _, ps := range status(t, p.Admin.URL, shop, site).Plugins {
		if ps.Plugin != plugin {
			continue
		}
		for _, h := range ps.Health {
			if h.Version == version {
				return h.Health, true
			}
		}
	}
	return plugins.Health{}, false
}

// TestListShowsVersionHealth: the list answer tells a plugin version that
// works from one that traps on every call, from the PoP's own breaker.
func TestListShowsVersionHealth(t *testing.T) {
	srv := ntestutil.StartNATS(t)
	p := rollouttest.StartPoP(t, srv, engine, "ams", nil)
	mustPush(t, p.Admin.URL, shop, site, "tag", rollouttest.VersionWAT(t, "1"), nil)
	waitLocal(t, p, "tag", rollout.Target{Stable: 1})
	for range 5 {
		if !answersWith(t, p, "1") {
			t.Fatal("version 1 did not answer")
		}
	}
	h, ok := healthOf(t, p, "tag", 1)
	if !ok || h.Summary() != "ok" || h.Breaker != plugins.BreakerClosed || h.Calls < 5 {
		t.Fatalf("working version: %+v (reported: %v)", h, ok)
	}

	// Version 2 traps on every call; the site fails open, so requests
	// are still served, without the plugin.
	mustPush(t, p.Admin.URL, shop, site, "tag", wasm["trap"], nil)
	waitLocal(t, p, "tag", rollout.Target{Stable: 2})
	eventually(t, 30*time.Second, "version 2's breaker open", func() bool {
		if code, _ := p.Get(t); code != http.StatusOK {
			t.Fatalf("fail-open site answered %d", code)
		}
		h, _ := healthOf(t, p, "tag", 2)
		return h.Breaker == plugins.BreakerOpen
	})
	h, _ = healthOf(t, p, "tag", 2)
	if s := h.Summary(); !strings.HasPrefix(s, "failing (breaker open, 100% of last ") || h.Failed < 5 || h.Failed != h.Calls {
		t.Fatalf("version trapping on every call: %+v %q", h, s)
	}
	// Version 1 no longer runs on the PoP: nothing is said of it.
	if h, ok := healthOf(t, p, "tag", 1); ok {
		t.Fatalf("health reported for a version the PoP does not run: %+v", h)
	}
}
