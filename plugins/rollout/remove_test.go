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

// TestRemove: removing a plugin, asked of one PoP, stops it on every PoP,
// a running canary included, and frees its instances there; its versions
// are kept, and pushing one again puts it back.
func TestRemove(t *testing.T) {
	srv := ntestutil.StartNATS(t)
	fast := func(o *rollout.Options) { o.RetireAfter, o.CheckInterval = 100*time.Millisecond, 50*time.Millisecond }
	pops := []*rollouttest.PoP{
		rollouttest.StartPoP(t, srv, engine, "ams", fast),
		rollouttest.StartPoP(t, srv, engine, "fra", fast),
	}
	v1, v2 := rollouttest.VersionWAT(t, "1"), rollouttest.VersionWAT(t, "2")
	mustPush(t, pops[0].Admin.URL, shop, site, "tag", v1, nil)
	mustPush(t, pops[0].Admin.URL, shop, site, "tag", v2, url.Values{"canary": {"50"}})
	for _, p := range pops {
		eventually(t, 60*time.Second, "v1 and the v2 canary running on "+p.ID, func() bool {
			_, ok1 := p.Host.Active(site, "tag@1")
			_, ok2 := p.Host.Active(site, "tag@2")
			return ok1 && ok2 && (answersWith(t, p, "1") || answersWith(t, p, "2"))
		})
	}

	del := func(admin, token, plugin string) apiResult {
		return call(t, http.MethodDelete, admin+"/admin/plugins/"+site+"/"+plugin, token, nil)
	}
	for _, c := range []struct {
		name, token, plugin string
		status              int
		errText             string
	}{
		{"other site's token", other, "tag", http.StatusForbidden, `belongs to site "other"`},
		{"bad plugin name", shop, "a.b", http.StatusBadRequest, "plugin name"},
		{"plugin the site does not run", shop, "nosuch", http.StatusNotFound, `site shop runs no plugin "nosuch" (its chain: tag)`},
	} {
		if r := del(pops[1].Admin.URL, c.token, c.plugin); r.status != c.status || !strings.Contains(r.errorText(), c.errText) {
			t.Fatalf("%s: %d %q, want %d with %q", c.name, r.status, r.errorText(), c.status, c.errText)
		}
	}

	r := del(pops[1].Admin.URL, shop, "tag")
	var rr rollout.RemoveResult
	if err := json.Unmarshal(r.body, &rr); err != nil || r.status != http.StatusOK {
		t.Fatalf("remove: %d %s", r.status, r.body)
	}
	if len(rr.Chain.Entries) != 0 || !slices.Equal(rr.Versions, []int{1, 2}) {
		t.Fatalf("remove answered %+v, want an empty chain and versions 1, 2 kept", rr)
	}
	for _, p := range pops {
		eventually(t, 60*time.Second, "tag's instances freed on "+p.ID, func() bool {
			_, ok1 := p.Host.Active(site, "tag@1")
			_, ok2 := p.Host.Active(site, "tag@2")
			return !ok1 && !ok2
		})
		for range 20 { // the canary took half the requests: none may run it now
			if !answersWith(t, p, "") {
				t.Fatalf("%s still runs the removed plugin", p.ID)
			}
		}
		st := status(t, p.Admin.URL, shop, site)
		if len(st.Chain.Entries) != 0 || len(st.Plugins) != 1 || len(st.Plugins[0].Versions) != 2 ||
			st.Plugins[0].Deployment == nil || st.Plugins[0].Deployment.Target != (rollout.Target{}) {
			t.Fatalf("%s status after the removal: %+v", p.ID, st)
		}
	}
	if r := del(pops[0].Admin.URL, shop, "tag"); r.status != http.StatusNotFound || !strings.Contains(r.errorText(), `runs no plugin "tag" (its chain: none)`) {
		t.Fatalf("second remove: %d %q", r.status, r.errorText())
	}

	// The kept bytes pushed again: the same version, back in the chain.
	if pr := mustPush(t, pops[0].Admin.URL, shop, site, "tag", v2, nil); pr.Version.Version != 2 || pr.New {
		t.Fatalf("push after the removal: %+v", pr)
	}
	for _, p := range pops {
		eventually(t, 60*time.Second, "v2 answering on "+p.ID, func() bool { return answersWith(t, p, "2") })
	}
}
