package rollout_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	ntestutil "github.com/meridian-edge/meridian/internal/testutil"
	"github.com/meridian-edge/meridian/plugins/rollout"
	"github.com/meridian-edge/meridian/plugins/rollout/rollouttest"
)

// cfgShares sends n requests to p and counts the x-cfg response header the
// headers example sets from its config (response="x-cfg: VALUE").
func cfgShares(t *testing.T, p *rollouttest.PoP, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		code, h := p.Get(t)
		if code != http.StatusOK {
			t.Fatalf("%s answered %d", p.ID, code)
		}
		got[h.Get("x-cfg")]++
	}
	return got
}

// ranOnly reports whether every one of n answers counted in got ran config
// cfg, but for at most 1% (at least one) that ran none: a call past its
// 50 ms deadline under -race on a loaded machine is skipped (fail open).
// An answer with another config fails it.
func ranOnly(got map[string]int, cfg string, n int) bool {
	return got[cfg]+got[""] == n && got[""] <= max(1, n/100)
}

// onlyStable waits until every PoP of pops runs version stable of the
// headers plugin alone, then fails t unless 50 of its answers all ran cfg.
func onlyStable(t *testing.T, pops []*rollouttest.PoP, stable int, cfg, when string) {
	t.Helper()
	for _, p := range pops {
		waitLocal(t, p, "headers", rollout.Target{Stable: stable})
		if got := cfgShares(t, p, 50); !ranOnly(got, cfg, 50) {
			t.Fatalf("%s %s: answers %v", p.ID, when, got)
		}
	}
}

// slotConfigs picks p's chain for the site n times and records which
// config each slot of plugin "headers" ran with.
func slotConfigs(t *testing.T, p *rollouttest.PoP, n int) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for range n {
		for _, e := range p.Manager.Chain(site).Entries {
			if v := e.Config["response"]; !slices.Contains(out[e.Plugin], v) {
				out[e.Plugin] = append(out[e.Plugin], v)
			}
		}
	}
	return out
}

func chainConfig(t *testing.T, p *rollouttest.PoP) string {
	t.Helper()
	st := status(t, p.Admin.URL, shop, site)
	if len(st.Chain.Entries) != 1 {
		t.Fatalf("chain: %+v", st.Chain)
	}
	return st.Chain.Entries[0].Config["response"]
}

// TestCanaryConfig: the config pushed with a canary is part of the canary.
// Canary requests run the new version with the new config on every PoP,
// stable requests the old version with the old config; rollback (manual
// or automatic) drops the new config, promotion makes it the chain's.
func TestCanaryConfig(t *testing.T) {
	srv := ntestutil.StartNATS(t)
	a := rollouttest.StartPoP(t, srv, engine, "ams", nil)
	b := rollouttest.StartPoP(t, srv, engine, "fra", nil)
	pops := []*rollouttest.PoP{a, b}
	v1, v2 := wasm["headers"], withCustomSection(wasm["headers"], 2)
	old, nw := url.Values{"config": {"response=x-cfg: old"}}, url.Values{"config": {"response=x-cfg: new"}}
	mustPush(t, a.Admin.URL, shop, site, "headers", v1, old)
	for _, p := range pops {
		waitLocal(t, p, "headers", rollout.Target{Stable: 1})
	}

	canary := func(pct string) url.Values {
		return url.Values{"config": nw["config"], "canary": {pct}}
	}
	pr := mustPush(t, a.Admin.URL, shop, site, "headers", v2, canary("50"))
	e, ok := pr.Deployment.CanaryEntry()
	if pr.Deployment.Stable != 1 || pr.Deployment.Canary != 2 || pr.Deployment.Percent != 50 || !ok || e.Config["response"] != "x-cfg: new" {
		t.Fatalf("canary push with config: %+v", pr.Deployment)
	}
	if got := pr.Chain.Entries[0].Config["response"]; got != "x-cfg: old" {
		t.Fatalf("a canary's config changed the chain entry to %q", got)
	}
	for _, p := range pops {
		waitLocal(t, p, "headers", pr.Deployment)
		// The chain a request runs pairs each version with its own config.
		want := map[string][]string{"headers@1": {"x-cfg: old"}, "headers@2": {"x-cfg: new"}}
		if got := slotConfigs(t, p, 400); len(got) != 2 || !slices.Equal(got["headers@1"], want["headers@1"]) || !slices.Equal(got["headers@2"], want["headers@2"]) {
			t.Fatalf("%s: slots ran with configs %v, want %v", p.ID, got, want)
		}
		got := cfgShares(t, p, 400)
		// 50% of 400: the binomial standard deviation is 10 requests. An
		// answer without x-cfg ran neither (fail open): under -race on a
		// loaded machine a call can pass its 50 ms deadline; as in
		// TestCanarySplit, up to 1% of them is allowed.
		if got["new"] < 150 || got["old"] < 150 || got["new"]+got["old"]+got[""] != 400 || got[""] > 4 {
			for _, l := range p.Host.Logs(site) {
				t.Logf("plugin log: %s %s v%d %s", l.Level, l.Plugin, l.Version, l.Msg)
			}
			t.Fatalf("%s: answers by config %v, want about half each of old and new", p.ID, got)
		}
	}

	// At 0% the canary takes no request: the stable share is untouched.
	pr = mustPush(t, a.Admin.URL, shop, site, "headers", v2, canary("0"))
	waitLocal(t, b, "headers", pr.Deployment)
	if got := cfgShares(t, b, 100); !ranOnly(got, "old", 100) {
		t.Fatalf("0%% canary with a new config: answers %v", got)
	}

	// Manual rollback: the new config is gone with the canary.
	r := call(t, http.MethodPost, a.Admin.URL+"/admin/plugins/shop/headers/rollback", shop, nil)
	if r.status != http.StatusOK {
		t.Fatalf("rollback: %d %s", r.status, r.body)
	}
	onlyStable(t, pops, 1, "old", "after rollback")
	if got := chainConfig(t, a); got != "x-cfg: old" {
		t.Fatalf("chain entry after rollback: %q", got)
	}

	// The same canary again, a new share (its entry kept without entry
	// parameters), then promotion: the canary's config becomes the chain's.
	pr = mustPush(t, a.Admin.URL, shop, site, "headers", v2, canary("10"))
	again := mustPush(t, a.Admin.URL, shop, site, "headers", v2, url.Values{"canary": {"30"}})
	if again.Deployment.Entry != pr.Deployment.Entry || again.Deployment.Percent != 30 {
		t.Fatalf("canary pushed again at 30%% without config: %+v, was %+v", again.Deployment, pr.Deployment)
	}
	r = call(t, http.MethodPost, a.Admin.URL+"/admin/plugins/shop/headers/deploy", shop, []byte(`{"version":2,"canary_percent":40}`))
	var share rollout.Target
	if r.status != http.StatusOK || json.Unmarshal(r.body, &share) != nil || share.Entry != pr.Deployment.Entry || share.Percent != 40 {
		t.Fatalf("canary at a new share: %d %s", r.status, r.body)
	}
	if got := chainConfig(t, a); got != "x-cfg: old" {
		t.Fatalf("chain entry before promotion: %q", got)
	}
	r = call(t, http.MethodPost, a.Admin.URL+"/admin/plugins/shop/headers/deploy", shop, []byte(`{"version":2}`))
	if r.status != http.StatusOK {
		t.Fatalf("promote: %d %s", r.status, r.body)
	}
	if got := chainConfig(t, a); got != "x-cfg: new" {
		t.Fatalf("chain entry after promotion: %q", got)
	}
	for _, p := range pops {
		waitLocal(t, p, "headers", rollout.Target{Stable: 2})
		eventually(t, 30*time.Second, "new config on "+p.ID, func() bool { return cfgShares(t, p, 1)["new"] == 1 })
		if got := cfgShares(t, p, 50); !ranOnly(got, "new", 50) {
			t.Fatalf("%s after promotion: answers %v", p.ID, got)
		}
	}

	// Automatic rollback of a failing canary with its own config: the
	// stable share's config never changed and is all that runs after.
	mustPush(t, a.Admin.URL, shop, site, "headers", wasm["trap"], url.Values{"canary": {"50"}, "config": {"response=x-cfg: trap"}})
	eventually(t, 60*time.Second, "automatic rollback", func() bool {
		b.Get(t)
		d, ok := a.Node.Deployment(site, "headers")
		return ok && d.RolledBack
	})
	onlyStable(t, pops, 2, "new", "after automatic rollback")
	if got := chainConfig(t, a); got != "x-cfg: new" {
		t.Fatalf("chain entry after automatic rollback: %q", got)
	}
}

// TestCanaryConfigRefused: a config-only canary (the stable bytes with a
// new config) and a canary whose config is too large to travel with its
// record are refused with what to do; nothing changes.
func TestCanaryConfigRefused(t *testing.T) {
	srv := ntestutil.StartNATS(t)
	p := rollouttest.StartPoP(t, srv, engine, "ams", nil)
	mustPush(t, p.Admin.URL, shop, site, "headers", wasm["headers"], url.Values{"config": {"response=x-cfg: old"}})
	waitLocal(t, p, "headers", rollout.Target{Stable: 1})
	before, _ := p.Node.Deployment(site, "headers")

	big := "response=x-cfg: " + strings.Repeat("x", rollout.MaxCanaryEntry)
	for _, c := range []struct {
		wasm    []byte
		q       url.Values
		status  int
		errText []string
	}{
		{wasm["headers"], url.Values{"canary": {"10"}, "config": {"response=x-cfg: new"}}, http.StatusConflict,
			[]string{"a canary needs a different build", "push without a canary", "applies to all requests at once"}},
		{withCustomSection(wasm["headers"], 9), url.Values{"canary": {"10"}, "config": {big}}, http.StatusBadRequest,
			[]string{"over the 16384 a canary carries", "push without a canary"}},
	} {
		r := push(t, p.Admin.URL, shop, site, "headers", c.wasm, c.q)
		for _, w := range c.errText {
			if r.status != c.status || !strings.Contains(r.errorText(), w) {
				t.Fatalf("push %v: %d %q, want %d with %q", c.q["canary"], r.status, r.errorText(), c.status, w)
			}
		}
	}
	if d, _ := p.Node.Deployment(site, "headers"); d != before {
		t.Fatalf("refused pushes changed the record: %+v, was %+v", d, before)
	}
	st := status(t, p.Admin.URL, shop, site)
	if len(st.Plugins) != 1 || len(st.Plugins[0].Versions) != 1 || st.Chain.Entries[0].Config["response"] != "x-cfg: old" {
		t.Fatalf("refused pushes changed the site: %+v", st)
	}
	// Without a canary the config change applies at once.
	pr := mustPush(t, p.Admin.URL, shop, site, "headers", wasm["headers"], url.Values{"config": {"response=x-cfg: new"}})
	if pr.Deployment != (rollout.Target{Stable: 1}) || pr.Chain.Entries[0].Config["response"] != "x-cfg: new" {
		t.Fatalf("config push to all: %+v", pr)
	}
	eventually(t, 30*time.Second, "new config answering", func() bool { return cfgShares(t, p, 1)["new"] == 1 })
}
