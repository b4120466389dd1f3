package rollout

import (
	"testing"

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
	} {
		if got, err := decodeTarget(d); err == nil {
			t.Errorf("%q/%d decoded as %+v; want an error", d.Version, d.CanaryPercent, got)
		}
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
