package rollout_test

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	ntestutil "github.com/meridian-edge/meridian/internal/testutil"
	"github.com/meridian-edge/meridian/plugins/rollout"
	"github.com/meridian-edge/meridian/plugins/rollout/rollouttest"
)

// waitLocal waits until p runs target t for plugin.
func waitLocal(t *testing.T, p *rollouttest.PoP, plugin string, want rollout.Target) {
	t.Helper()
	eventually(t, 60*time.Second, fmt.Sprintf("%s running %s %+v", p.ID, plugin, want), func() bool {
		for _, ps := range status(t, p.Admin.URL, ops, site).Plugins {
			if ps.Plugin == plugin && ps.Local != nil && *ps.Local == want {
				return true
			}
		}
		return false
	})
}

// TestCanarySplit: version 2 pushed as a 30% canary over version 1 takes
// about 30% of requests (measured over 2000), version 1 the rest; a
// promotion then sends everything to version 2.
func TestCanarySplit(t *testing.T) {
	srv := ntestutil.StartNATS(t)
	p := rollouttest.StartPoP(t, srv, engine, "ams", nil)
	mustPush(t, p.Admin.URL, shop, site, "tag", rollouttest.VersionWAT(t, "1"), nil)
	waitLocal(t, p, "tag", rollout.Target{Stable: 1})
	pr := mustPush(t, p.Admin.URL, shop, site, "tag", rollouttest.VersionWAT(t, "2"), url.Values{"canary": {"30"}})
	if pr.Deployment != (rollout.Target{Stable: 1, Canary: 2, Percent: 30}) {
		t.Fatalf("canary push deployment: %+v", pr.Deployment)
	}
	waitLocal(t, p, "tag", rollout.Target{Stable: 1, Canary: 2, Percent: 30})

	const n = 2000
	counts := map[string]int{}
	for range n {
		code, h := p.Get(t)
		if code != http.StatusOK {
			t.Fatalf("status %d", code)
		}
		counts[h.Get("x-v")]++
	}
	ran := counts["1"] + counts["2"]
	share := float64(counts["2"]) / float64(ran)
	t.Logf("canary share over %d requests: %.3f (v1 %d, v2 %d, neither %d)", n, share, counts["1"], counts["2"], n-ran)
	// A request runs neither only when its plugin call failed (fail open):
	// under -race on a loaded machine a call can pass its 50 ms deadline.
	if ran != n {
		for _, l := range p.Host.Logs(site) {
			t.Logf("plugin log: %s %s v%d %s", l.Level, l.Plugin, l.Version, l.Msg)
		}
	}
	// The binomial standard deviation is 1%; 5 points is 5 sigma.
	if share < 0.25 || share > 0.35 || n-ran > n/100 {
		t.Fatalf("canary share %.3f, want 0.30±0.05; answers %v", share, counts)
	}

	// A healthy canary is left alone (the checks ran many times meanwhile).
	if d, _ := p.Node.Deployment(site, "tag"); d.RolledBack || d.Version != "2 base 1" || d.CanaryPercent != 30 {
		t.Fatalf("record after healthy canary traffic: %+v", d)
	}

	// Promote: version 2 at 100%.
	r := call(t, http.MethodPost, p.Admin.URL+"/admin/plugins/shop/tag/deploy", shop, []byte(`{"version":2}`))
	if r.status != http.StatusOK {
		t.Fatalf("promote: %d %s", r.status, r.body)
	}
	waitLocal(t, p, "tag", rollout.Target{Stable: 2})
	for range 50 {
		if !answersWith(t, p, "2") {
			t.Fatal("after promotion a request did not run version 2")
		}
	}
}

// TestAutoRollback: a canary that traps on every call is rolled back
// automatically by the PoP that sees its errors; the rollback is a record,
// so the other PoP follows, and only version 1 answers anywhere.
func TestAutoRollback(t *testing.T) {
	srv := ntestutil.StartNATS(t)
	a := rollouttest.StartPoP(t, srv, engine, "ams", nil)
	b := rollouttest.StartPoP(t, srv, engine, "fra", nil)
	mustPush(t, a.Admin.URL, shop, site, "tag", rollouttest.VersionWAT(t, "1"), nil)
	mustPush(t, a.Admin.URL, shop, site, "tag", wasm["trap"], url.Values{"canary": {"50"}})
	canary := rollout.Target{Stable: 1, Canary: 2, Percent: 50}
	waitLocal(t, a, "tag", canary)
	waitLocal(t, b, "tag", canary)

	// Traffic only on fra: fra's canary errors pass the threshold.
	failed := 0
	eventually(t, 30*time.Second, "automatic rollback record", func() bool {
		code, h := b.Get(t)
		if code != http.StatusOK {
			t.Fatalf("fail-open site answered %d", code)
		}
		if h.Get("x-v") == "" {
			failed++ // the trapping canary was skipped (fail open)
		}
		d, ok := a.Node.Deployment(site, "tag")
		return ok && d.RolledBack
	})
	d, _ := a.Node.Deployment(site, "tag")
	if d.Version != "1" || d.CanaryPercent != 100 || d.By != "auto-rollback@fra" {
		t.Fatalf("rollback record: %+v", d)
	}
	if failed < 10 {
		t.Fatalf("only %d requests hit the canary before the rollback", failed)
	}
	for _, p := range []*rollouttest.PoP{a, b} {
		waitLocal(t, p, "tag", rollout.Target{Stable: 1})
		for range 40 {
			if !answersWith(t, p, "1") {
				t.Fatalf("%s: a request did not run version 1 after the rollback", p.ID)
			}
		}
	}
	if got := metric(t, b, "meridian_plugin_auto_rollbacks_total"); got != 1 {
		t.Fatalf("fra counted %v automatic rollbacks", got)
	}
	// The canary's failures are in the site's plugin log, by version.
	r := call(t, http.MethodGet, b.Admin.URL+"/admin/plugins/shop/logs?plugin=tag", shop, nil)
	if r.status != http.StatusOK || !strings.Contains(string(r.body), `"version": 2`) || !strings.Contains(string(r.body), "trap") {
		t.Fatalf("logs: %d %s", r.status, r.body)
	}
}

// TestManualRollback: rollback without a version goes to the newest
// version below the running one; with a version, to that one; every PoP
// follows. Unknown versions and other sites are refused.
func TestManualRollback(t *testing.T) {
	srv := ntestutil.StartNATS(t)
	// Versions no longer deployed leave the Host quickly: a rollback then
	// fetches and compiles the old version again.
	retire := func(o *rollout.Options) { o.RetireAfter = 100 * time.Millisecond }
	a := rollouttest.StartPoP(t, srv, engine, "ams", retire)
	b := rollouttest.StartPoP(t, srv, engine, "fra", retire)
	for _, tag := range []string{"1", "2", "3"} {
		mustPush(t, a.Admin.URL, shop, site, "tag", rollouttest.VersionWAT(t, tag), nil)
	}
	waitLocal(t, b, "tag", rollout.Target{Stable: 3})
	eventually(t, 30*time.Second, "v3 answering on fra", func() bool { return answersWith(t, b, "3") })
	eventually(t, 30*time.Second, "versions 1 and 2 retired on fra", func() bool {
		_, v1 := b.Host.Active(site, "tag@1")
		_, v2 := b.Host.Active(site, "tag@2")
		return !v1 && !v2
	})

	rb := func(token, body string) apiResult {
		return call(t, http.MethodPost, b.Admin.URL+"/admin/plugins/shop/tag/rollback", token, []byte(body))
	}
	if r := rb(shop, ""); r.status != http.StatusOK {
		t.Fatalf("rollback: %d %s", r.status, r.body)
	}
	for _, p := range []*rollouttest.PoP{a, b} {
		eventually(t, 30*time.Second, "v2 answering on "+p.ID, func() bool { return answersWith(t, p, "2") })
	}
	if r := rb(ops, `{"version":1}`); r.status != http.StatusOK {
		t.Fatalf("rollback to 1: %d %s", r.status, r.body)
	}
	for _, p := range []*rollouttest.PoP{a, b} {
		eventually(t, 30*time.Second, "v1 answering on "+p.ID, func() bool { return answersWith(t, p, "1") })
	}
	d, _ := a.Node.Deployment(site, "tag")
	if !d.RolledBack || d.Version != "1" || d.By != "ops" {
		t.Fatalf("record after rollback: %+v", d)
	}
	for _, c := range []struct {
		token, body string
		status      int
		errText     string
	}{
		{shop, `{"version":9}`, http.StatusNotFound, "no version 9"},
		{shop, `{"version":"one"}`, http.StatusBadRequest, "not the expected JSON"},
		{other, `{"version":2}`, http.StatusForbidden, "cannot read or change site"},
		{shop, "", http.StatusConflict, `no earlier version; name the version to go back to (--version N in the CLI, {"version":N} in the API)`},
	} {
		if r := rb(c.token, c.body); r.status != c.status || !strings.Contains(r.errorText(), c.errText) {
			t.Errorf("rollback %q: %d %q, want %d %q", c.body, r.status, r.errorText(), c.status, c.errText)
		}
	}
	// Still version 1 after the refused requests.
	if !answersWith(t, b, "1") {
		t.Fatal("refused rollbacks changed what runs")
	}
}

// TestCanaryOfStableRefused: pushing, as a canary, the bytes that already
// are the stable version would try nothing; the push is refused with 409 and
// a message saying what to do, and nothing changes (record, versions, chain
// entry). A canary of the canary's own bytes changes its share.
func TestCanaryOfStableRefused(t *testing.T) {
	srv := ntestutil.StartNATS(t)
	p := rollouttest.StartPoP(t, srv, engine, "ams", nil)
	v1, v2 := rollouttest.VersionWAT(t, "1"), rollouttest.VersionWAT(t, "2")
	mustPush(t, p.Admin.URL, shop, site, "tag", v1, nil)
	waitLocal(t, p, "tag", rollout.Target{Stable: 1})
	before, _ := p.Node.Deployment(site, "tag")

	r := push(t, p.Admin.URL, shop, site, "tag", v1, url.Values{"canary": {"10"}, "config": {"k=v"}})
	if r.status != http.StatusConflict ||
		!strings.Contains(r.errorText(), "these bytes are already version 1 of shop/tag, which takes all requests: a canary needs a different build") ||
		!strings.Contains(r.errorText(), "meridian plugin promote --version N") {
		t.Fatalf("canary of the running bytes: %d %q", r.status, r.errorText())
	}
	if d, _ := p.Node.Deployment(site, "tag"); d != before {
		t.Fatalf("refused push changed the record: %+v, was %+v", d, before)
	}
	st := status(t, p.Admin.URL, shop, site)
	if len(st.Plugins) != 1 || len(st.Plugins[0].Versions) != 1 || len(st.Chain.Entries) != 1 || st.Chain.Entries[0].Config != nil {
		t.Fatalf("refused push changed the site: %+v", st)
	}

	// With a canary running, the stable bytes are refused as a canary too.
	pr := mustPush(t, p.Admin.URL, shop, site, "tag", v2, url.Values{"canary": {"30"}})
	if pr.Deployment != (rollout.Target{Stable: 1, Canary: 2, Percent: 30}) {
		t.Fatalf("canary push: %+v", pr.Deployment)
	}
	r = push(t, p.Admin.URL, shop, site, "tag", v1, url.Values{"canary": {"0"}})
	if r.status != http.StatusConflict || !strings.Contains(r.errorText(), "version 1 of shop/tag, which is the stable version (version 2 runs as a 30% canary)") {
		t.Fatalf("canary of the stable bytes beside a canary: %d %q", r.status, r.errorText())
	}
	if d, _ := p.Node.Deployment(site, "tag"); d.Version != "2 base 1" || d.CanaryPercent != 30 {
		t.Fatalf("refused push changed the canary record: %+v", d)
	}

	// The canary's own bytes again: a new share, not a refusal.
	pr = mustPush(t, p.Admin.URL, shop, site, "tag", v2, url.Values{"canary": {"50"}})
	if pr.New || pr.Deployment != (rollout.Target{Stable: 1, Canary: 2, Percent: 50}) {
		t.Fatalf("canary bytes pushed again at 50%%: %+v", pr)
	}
	waitLocal(t, p, "tag", rollout.Target{Stable: 1, Canary: 2, Percent: 50})
}
