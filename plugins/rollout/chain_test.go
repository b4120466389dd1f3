package rollout_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	ntestutil "github.com/meridian-edge/meridian/internal/testutil"
	"github.com/meridian-edge/meridian/plugins/rollout/rollouttest"
)

// TestSiteChain: the chain set through the admin API decides which plugins
// run and in which order on every PoP (each plugin sets x-v; the last one
// to run wins), and its failure policy; bad chains are refused and change
// nothing.
func TestSiteChain(t *testing.T) {
	srv := ntestutil.StartNATS(t)
	a := rollouttest.StartPoP(t, srv, engine, "ams", nil)
	b := rollouttest.StartPoP(t, srv, engine, "fra", nil)
	mustPush(t, a.Admin.URL, shop, site, "first", rollouttest.VersionWAT(t, "first"), nil)
	mustPush(t, a.Admin.URL, shop, site, "second", rollouttest.VersionWAT(t, "second"), nil)
	// Pushes append to the chain: first, then second.
	for _, p := range []*rollouttest.PoP{a, b} {
		eventually(t, 30*time.Second, "chain first->second on "+p.ID, func() bool { return answersWith(t, p, "second") })
	}
	put := func(token, body string) apiResult {
		return call(t, http.MethodPut, a.Admin.URL+"/admin/plugins/shop/chain", token, []byte(body))
	}
	if r := put(shop, `{"entries":[{"plugin":"second"},{"plugin":"first"}]}`); r.status != http.StatusOK {
		t.Fatalf("set chain: %d %s", r.status, r.body)
	}
	for _, p := range []*rollouttest.PoP{a, b} {
		eventually(t, 30*time.Second, "chain second->first on "+p.ID, func() bool { return answersWith(t, p, "first") })
	}

	for _, c := range []struct {
		token, body string
		status      int
		errText     string
	}{
		{shop, `{"entries":[{"plugin":"first"},{"plugin":"first"}]}`, http.StatusBadRequest, "twice"},
		{shop, `{"entries":[{"plugin":"no/slash"}]}`, http.StatusBadRequest, "plugin name"},
		{shop, `{"entries":[{"plugin":"first","colour":"red"}]}`, http.StatusBadRequest, "unknown field"},
		{shop, `{"entries":`, http.StatusBadRequest, "not the expected JSON"},
		{other, `{"entries":[]}`, http.StatusForbidden, "cannot read or change site"},
	} {
		if r := put(c.token, c.body); r.status != c.status || !strings.Contains(r.errorText(), c.errText) {
			t.Errorf("chain %s: %d %q, want %d %q", c.body, r.status, r.errorText(), c.status, c.errText)
		}
	}
	if !answersWith(t, b, "first") {
		t.Fatal("refused chains changed what runs")
	}

	// A failing plugin in a fail-closed chain answers 503; fail open skips it.
	mustPush(t, a.Admin.URL, shop, site, "broken", wasm["trap"], nil)
	if r := put(shop, `{"fail_closed":true,"entries":[{"plugin":"first"},{"plugin":"broken"}]}`); r.status != http.StatusOK {
		t.Fatalf("set chain: %d %s", r.status, r.body)
	}
	eventually(t, 30*time.Second, "fail-closed 503 on fra", func() bool { code, _ := b.Get(t); return code == http.StatusServiceUnavailable })
	if r := put(shop, `{"entries":[{"plugin":"first"},{"plugin":"broken"}]}`); r.status != http.StatusOK {
		t.Fatalf("set chain: %d %s", r.status, r.body)
	}
	eventually(t, 30*time.Second, "fail-open on fra", func() bool { return answersWith(t, b, "first") })

	// An empty chain runs nothing.
	if r := put(shop, `{"entries":[]}`); r.status != http.StatusOK {
		t.Fatalf("set chain: %d %s", r.status, r.body)
	}
	eventually(t, 30*time.Second, "no plugin on fra", func() bool { return answersWith(t, b, "") })
}
