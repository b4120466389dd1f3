package rollout

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-edge/meridian/internal/statesync"
)

// TestDeploymentRecordEncoding: every target survives the trip through a
// statesync.Deployment, and records this package cannot read are refused
// (the PoP keeps what it runs) rather than guessed at.
func TestDeploymentRecordEncoding(t *testing.T) {
	for _, tg := range []Target{
		{Stable: 3},
		{Stable: 2, Canary: 3, Percent: 10},
		{Canary: 1, Percent: 50},
		{Stable: 4, Canary: 5, Percent: 0},
		{},
		// A canary with its own entry; the entry's JSON may hold the
		// separators themselves.
		{Stable: 2, Canary: 3, Percent: 10, Entry: `{"plugin":"p","config":{"k":"1 base 2 entry {}"}}`},
		{Canary: 1, Percent: 5, Entry: `{"plugin":"p","request_headers":["*"]}`},
	} {
		d := statesync.Deployment{Site: "shop", Plugin: "p", Version: tg.versionString(), CanaryPercent: tg.percent()}
		got, err := decodeTarget(d)
		if err != nil || got != tg {
			t.Errorf("%+v -> %q/%d -> %+v, %v", tg, d.Version, d.CanaryPercent, got, err)
		}
	}
	for _, d := range []statesync.Deployment{
		{Version: "v3", CanaryPercent: 100},
		{Version: "-1", CanaryPercent: 100},
		{Version: "3 base 2", CanaryPercent: 100},
		{Version: "3 base x", CanaryPercent: 10},
		{Version: "3 base 0", CanaryPercent: 10},
		{Version: `3 entry {"plugin":"p"}`, CanaryPercent: 100}, // an entry without a canary
		{Version: `3 base 2 entry {"plugin":"other"}`, CanaryPercent: 10},
		{Version: `3 base 2 entry {not json`, CanaryPercent: 10},
	} {
		d.Site, d.Plugin = "shop", "p"
		if got, err := decodeTarget(d); err == nil {
			t.Errorf("%q/%d decoded as %+v; want an error", d.Version, d.CanaryPercent, got)
		}
	}
	// Records written before canaries carried entries read as they did.
	for v, want := range map[string]Target{"3": {Stable: 3}, "3 base 2": {Stable: 2, Canary: 3, Percent: 10}} {
		pct := 10
		if v == "3" {
			pct = 100
		}
		got, err := decodeTarget(statesync.Deployment{Site: "shop", Plugin: "p", Version: v, CanaryPercent: pct})
		if _, own := got.CanaryEntry(); err != nil || got != want || own {
			t.Errorf("old record %q: %+v, %v", v, got, err)
		}
	}
}

// TestMetricLabels: slots read as the plugin and global version users
// know; other names are left alone. The canary checks find a slot's
// counters under either labelling.
func TestMetricLabels(t *testing.T) {
	for _, c := range []struct {
		slot        string
		host        int
		plugin, ver string
	}{
		{"hog@2", 1, "hog", "2"},
		{"auth@12", 3, "auth", "12"},
		{"auth@upload-abc", 1, "auth@upload-abc", "1"},
		{"plain", 4, "plain", "4"},
	} {
		if p, v := MetricLabels(c.slot, c.host); p != c.plugin || v != c.ver {
			t.Errorf("MetricLabels(%q, %d) = %q, %q; want %q, %q", c.slot, c.host, p, v, c.plugin, c.ver)
		}
	}
	reg := prometheus.NewRegistry()
	calls := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_plugin_calls_total"}, []string{"site", "plugin", "version", "phase"})
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_plugin_errors_total"}, []string{"site", "plugin", "version", "kind"})
	reg.MustRegister(calls, errs)
	calls.WithLabelValues("shop", "hog@2", "1", "request").Add(10) // unmapped Host
	errs.WithLabelValues("shop", "hog@2", "1", "trap").Add(3)
	calls.WithLabelValues("shop", "tag", "7", "request").Add(20) // mapped Host
	errs.WithLabelValues("shop", "tag", "7", "breaker_open").Add(5)
	mg := &Manager{opts: Options{Metrics: reg}}
	got := mg.gatherStats()
	if s := got[slotKey{"shop", "hog@2"}]; s != (callStats{calls: 10, failures: 3}) {
		t.Errorf("hog@2 (unmapped labels): %+v", s)
	}
	if s := got[slotKey{"shop", "tag@7"}]; s != (callStats{calls: 25, failures: 5}) {
		t.Errorf("tag@7 (mapped labels): %+v", s)
	}
}

func TestNames(t *testing.T) {
	for _, s := range []string{"shop", "a", "my-site-2"} {
		if err := checkSite(s); err != nil {
			t.Errorf("site %q: %v", s, err)
		}
	}
	for _, s := range []string{"", "Shop", "a.b", "a/b", "-x"} {
		if checkSite(s) == nil {
			t.Errorf("site %q accepted", s)
		}
	}
	for _, s := range []string{"", "a.b", "a@1", "chain", "logs", "a b"} {
		if checkPlugin(s) == nil {
			t.Errorf("plugin %q accepted", s)
		}
	}
	if p, n, ok := parseSlot("auth@12"); !ok || p != "auth" || n != 12 {
		t.Errorf("parseSlot: %q %d %v", p, n, ok)
	}
	if _, _, ok := parseSlot("auth@upload-abc"); ok {
		t.Error("scratch slot parsed as a version")
	}
}
