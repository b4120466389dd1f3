package plugins_test

import (
	"sync"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/plugins"
)

// TestHealthTellsAFailingPluginFromAWorkingOne: on both engines, a plugin
// that traps on every call reads as failing with its breaker open, one
// that fails now and then as degraded, and a working one as ok.
func TestHealthTellsAFailingPluginFromAWorkingOne(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1_700_000_000, 0)
	tick := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	mod := func(o *plugins.Options) {
		o.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
		o.BreakerCooldown = time.Minute
	}
	bothHosts(t, mod, func(t *testing.T, h *plugins.Host) {
		health := func(name string) plugins.Health {
			t.Helper()
			hh, ok := h.Health("shop", name)
			if !ok {
				t.Fatalf("%s: no health for an active plugin", name)
			}
			return hh
		}
		if _, ok := h.Health("shop", "nosuch"); ok {
			t.Fatal("health of a plugin that is not on the host")
		}
		deploy(t, h, "shop", "good", "wat/continue")
		deploy(t, h, "shop", "bad", "wat/trap")
		deploy(t, h, "shop", "flaky", "allocprobe")
		if got := health("good").Summary(); got != "ok" {
			t.Fatalf("a plugin that was never called: %q, want ok", got)
		}

		for range 10 {
			tick(10 * time.Millisecond)
			if _, err := callOnce(h, "shop", "good", nil); err != nil {
				t.Fatal(err)
			}
		}
		if g := health("good"); g.Summary() != "ok" || g.Breaker != plugins.BreakerClosed || g.Calls != 10 || g.Failed != 0 {
			t.Fatalf("working plugin: %+v %q", g, g.Summary())
		}

		// One call in ten fails: below what opens the breaker.
		for i := range 30 {
			tick(10 * time.Millisecond)
			cfg := probeOK
			if i%10 == 9 {
				cfg = probeBoom
			}
			callChain(h, "shop", "flaky", false, cfg)
		}
		if g := health("flaky"); g.Summary() != "degraded (10% of last 30 calls)" || g.Breaker != plugins.BreakerClosed {
			t.Fatalf("plugin failing one call in ten: %+v %q", g, g.Summary())
		}

		// Every call traps: the breaker opens after five (the default
		// threshold) and the calls it then skips do not count.
		for range 8 {
			tick(10 * time.Millisecond)
			callOnce(h, "shop", "bad", nil)
		}
		b := health("bad")
		if b.Summary() != "failing (breaker open, 100% of last 5 calls)" || b.Breaker != plugins.BreakerOpen || b.OpenedAt.IsZero() {
			t.Fatalf("plugin trapping on every call: %+v %q", b, b.Summary())
		}
		// The cooldown passes and the trial call traps too.
		tick(2 * time.Minute)
		if g := health("bad").Summary(); g != "failing (breaker open, 100% of last 5 calls)" {
			t.Fatalf("open breaker past its cooldown, before any trial: %q", g)
		}
		callOnce(h, "shop", "bad", nil)
		if g := health("bad").Summary(); g != "failing (breaker open, 100% of last 6 calls)" {
			t.Fatalf("after a failed trial call: %q", g)
		}
		// The working plugin's calls left the window meanwhile (what
		// remains of them is the breaker's estimate: successes are taken
		// as evenly spread between its marks).
		if g := health("good"); g.Summary() != "ok" || g.Calls > 1 {
			t.Fatalf("working plugin, 2 minutes later: %+v %q", g, g.Summary())
		}

		// A new version starts with a fresh breaker.
		deploy(t, h, "shop", "bad", "wat/continue")
		tick(10 * time.Millisecond)
		if _, err := callOnce(h, "shop", "bad", nil); err != nil {
			t.Fatal(err)
		}
		if g := health("bad"); g.Summary() != "ok" || g.Calls != 1 {
			t.Fatalf("fixed version: %+v %q", g, g.Summary())
		}
	})
}

func TestHealthSummary(t *testing.T) {
	cases := []struct {
		h    plugins.Health
		want string
	}{
		{plugins.Health{Breaker: plugins.BreakerClosed}, "ok"},
		{plugins.Health{Breaker: plugins.BreakerClosed, Calls: 500}, "ok"},
		{plugins.Health{Breaker: plugins.BreakerClosed, Calls: 1000, Failed: 1}, "degraded (<1% of last 1000 calls)"},
		{plugins.Health{Breaker: plugins.BreakerClosed, Calls: 40, Failed: 19}, "degraded (48% of last 40 calls)"},
		{plugins.Health{Breaker: plugins.BreakerClosed, Calls: 40, Failed: 20}, "failing (50% of last 40 calls)"},
		{plugins.Health{Breaker: plugins.BreakerClosed, Calls: 3, Failed: 3}, "failing (100% of last 3 calls)"},
		{plugins.Health{Breaker: plugins.BreakerOpen, Calls: 5, Failed: 5}, "failing (breaker open, 100% of last 5 calls)"},
		{plugins.Health{Breaker: plugins.BreakerOpen, Calls: 40, Failed: 25}, "failing (breaker open, 63% of last 40 calls)"},
		{plugins.Health{Breaker: plugins.BreakerHalfOpen, Calls: 6, Failed: 6}, "failing (breaker half-open, 100% of last 6 calls)"},
	}
	for _, c := range cases {
		if got := c.h.Summary(); got != c.want {
			t.Errorf("%+v: %q, want %q", c.h, got, c.want)
		}
	}
}
