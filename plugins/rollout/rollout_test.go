package rollout_test

import (
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	ntestutil "github.com/meridian-edge/meridian/internal/testutil"
	"github.com/meridian-edge/meridian/plugins/rollout"
	"github.com/meridian-edge/meridian/plugins/rollout/rollouttest"
)

const (
	ops   = rollouttest.OpsToken
	shop  = rollouttest.ShopToken
	other = rollouttest.OtherToken
	site  = rollouttest.Site
)

// answersWith reports whether the PoP's edge answers a request with
// header x-v set to want ("" = no plugin ran).
func answersWith(t *testing.T, p *rollouttest.PoP, want string) bool {
	code, h := p.Get(t)
	return code == http.StatusOK && h.Get("x-v") == want
}

// metric sums the values of a counter family on p's registry.
func metric(t *testing.T, p *rollouttest.PoP, name string) float64 {
	t.Helper()
	mfs, err := p.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// TestUploadRefused: every bad upload is refused with a clear error at the
// PoP that received it, and loses nothing: the version and deployment that
// ran before still run.
func TestUploadRefused(t *testing.T) {
	srv := ntestutil.StartNATS(t)
	p := rollouttest.StartPoP(t, srv, engine, "ams", func(o *rollout.Options) { o.MaxUpload = 64 << 10 })
	v1 := rollouttest.VersionWAT(t, "1")
	mustPush(t, p.Admin.URL, shop, site, "tag", v1, nil)
	eventually(t, 30*time.Second, "v1 answering", func() bool { return answersWith(t, p, "1") })

	v2 := rollouttest.VersionWAT(t, "2")
	cases := []struct {
		name, token, site, plugin string
		body                      []byte
		query                     url.Values
		status                    int
		errText                   string
	}{
		{"no token", "", site, "tag", v2, nil, http.StatusUnauthorized, "Authorization: Bearer"},
		{"wrong token", "not-a-token", site, "tag", v2, nil, http.StatusUnauthorized, "Authorization: Bearer"},
		{"other site's token", other, site, "tag", v2, nil, http.StatusForbidden, `belongs to site "other"`},
		{"oversized", shop, site, "tag", make([]byte, 100<<10), nil, http.StatusRequestEntityTooLarge, "65536 byte limit"},
		{"truncated wasm", shop, site, "tag", v2[:len(v2)/2], nil, http.StatusUnprocessableEntity, "plugin refused"},
		{"not wasm", shop, site, "tag", []byte("#!/bin/sh\necho hi\n"), nil, http.StatusUnprocessableEntity, "plugin refused"},
		{"imports a function we do not provide", shop, site, "tag", wasm["unknownimport"], nil, http.StatusUnprocessableEntity, "meridian_exec, which Meridian does not provide"},
		{"no on_request", shop, site, "tag", wasm["noexport"], nil, http.StatusUnprocessableEntity, "does not export on_request"},
		{"empty body", shop, site, "tag", nil, nil, http.StatusBadRequest, "empty upload"},
		{"bad plugin name", shop, site, "a.b", v2, nil, http.StatusBadRequest, "plugin name"},
		{"reserved plugin name", shop, site, "chain", v2, nil, http.StatusBadRequest, "plugin name"},
		{"bad canary", shop, site, "tag", v2, url.Values{"canary": {"150"}}, http.StatusBadRequest, "0..100"},
		{"bad config", shop, site, "tag", v2, url.Values{"config": {"novalue"}}, http.StatusBadRequest, "KEY=VALUE"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := push(t, p.Admin.URL, c.token, c.site, c.plugin, c.body, c.query)
			if r.status != c.status || !strings.Contains(r.errorText(), c.errText) {
				t.Fatalf("got %d %q, want %d with %q", r.status, r.errorText(), c.status, c.errText)
			}
		})
	}
	st := status(t, p.Admin.URL, shop, site)
	if len(st.Plugins) != 1 || len(st.Plugins[0].Versions) != 1 || st.Plugins[0].Deployment.Stable != 1 {
		t.Fatalf("after refused uploads: %+v", st.Plugins)
	}
	for range 20 {
		if !answersWith(t, p, "1") {
			t.Fatal("version 1 stopped answering after refused uploads")
		}
	}
	// A site owner cannot read another site either.
	if r := call(t, http.MethodGet, p.Admin.URL+"/admin/plugins/"+site, other, nil); r.status != http.StatusForbidden {
		t.Fatalf("other site's token listing shop: %d", r.status)
	}
	// The ops token may act on every site.
	if r := push(t, p.Admin.URL, ops, "other", "tag", v2, nil); r.status != http.StatusCreated {
		t.Fatalf("ops push to other site: %d %s", r.status, r.body)
	}
}

// TestRolloutToEveryPoP: a real Go plugin (the headers example) pushed to
// one PoP answers on all three within a bounded wait. It logs the time from
// push to the plugin answering on every PoP.
func TestRolloutToEveryPoP(t *testing.T) {
	srv := ntestutil.StartNATS(t)
	pops := []*rollouttest.PoP{
		rollouttest.StartPoP(t, srv, engine, "ams", nil),
		rollouttest.StartPoP(t, srv, engine, "fra", nil),
		rollouttest.StartPoP(t, srv, engine, "sin", nil),
	}
	start := time.Now()
	pr := mustPush(t, pops[0].Admin.URL, shop, site, "headers", wasm["headers"],
		url.Values{"config": {"response=x-hello: world"}})
	pushed := time.Since(start)
	if pr.Version.Version != 1 || !pr.New || pr.CanaryPercent != 100 {
		t.Fatalf("push result: %+v", pr)
	}
	answering := make([]time.Duration, len(pops))
	for i, p := range pops {
		eventually(t, 60*time.Second, "headers plugin answering on "+p.ID, func() bool {
			_, h := p.Get(t)
			return h.Get("x-hello") == "world"
		})
		answering[i] = time.Since(start)
	}
	t.Logf("FIGURE push-to-answering: upload+validate+store+record %v; answering on %s %v, %s %v, %s %v (all: %v)",
		pushed.Round(time.Millisecond), pops[0].ID, answering[0].Round(time.Millisecond), pops[1].ID,
		answering[1].Round(time.Millisecond), pops[2].ID, answering[2].Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	for _, p := range pops {
		st := status(t, p.Admin.URL, ops, site)
		if len(st.Plugins) != 1 || st.Plugins[0].Local == nil || st.Plugins[0].Local.Stable != 1 || st.PoP != p.ID {
			t.Fatalf("%s status: %+v", p.ID, st)
		}
		if got := metric(t, p, "meridian_plugin_deployments_applied_total"); got < 1 {
			t.Fatalf("%s applied %v deployments", p.ID, got)
		}
	}
	// A PoP that starts after the push catches up from the records.
	late := rollouttest.StartPoP(t, srv, engine, "syd", nil)
	eventually(t, 60*time.Second, "headers plugin answering on the late PoP", func() bool {
		_, h := late.Get(t)
		return h.Get("x-hello") == "world"
	})
	// Pushing the same bytes again keeps the version number.
	if pr := mustPush(t, pops[1].Admin.URL, shop, site, "headers", wasm["headers"], nil); pr.Version.Version != 1 || pr.New {
		t.Fatalf("same bytes pushed again: %+v", pr)
	}
}

// TestUnknownSite: the admin API answers 404 for a site the PoP does not
// serve instead of an empty site; the ops token is told which sites exist,
// a site owner's token is not. The site list is read on every request, so a
// site removed by a reload is unknown from then on.
func TestUnknownSite(t *testing.T) {
	srv := ntestutil.StartNATS(t)
	var sites atomic.Pointer[[]string]
	all := rollouttest.Sites()
	sites.Store(&all)
	p := rollouttest.StartPoP(t, srv, engine, "ams", func(o *rollout.Options) {
		o.Sites = func() []string { return *sites.Load() }
	})
	v1 := rollouttest.VersionWAT(t, "1")
	mustPush(t, p.Admin.URL, shop, site, "tag", v1, nil)
	mustPush(t, p.Admin.URL, ops, "other", "tag", v1, nil)

	cases := []struct {
		name, method, path, token string
		body                      []byte
		status                    int
		errText                   string
	}{
		{"list", http.MethodGet, "/admin/plugins/nosuch", ops, nil, http.StatusNotFound, `unknown site "nosuch": the sites of this PoP are other, shop`},
		{"push", http.MethodPost, "/admin/plugins/nosuch/tag", ops, v1, http.StatusNotFound, `unknown site "nosuch"`},
		{"chain", http.MethodGet, "/admin/plugins/nosuch/chain", ops, nil, http.StatusNotFound, `unknown site "nosuch"`},
		{"rollback", http.MethodPost, "/admin/plugins/nosuch/tag/rollback", ops, nil, http.StatusNotFound, `unknown site "nosuch"`},
		{"site owner", http.MethodGet, "/admin/plugins/nosuch", shop, nil, http.StatusForbidden, `belongs to site "shop"`},
		{"no token", http.MethodGet, "/admin/plugins/nosuch", "", nil, http.StatusUnauthorized, "Authorization: Bearer"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := call(t, c.method, p.Admin.URL+c.path, c.token, c.body)
			if r.status != c.status || !strings.Contains(r.errorText(), c.errText) {
				t.Fatalf("got %d %q, want %d with %q", r.status, r.errorText(), c.status, c.errText)
			}
		})
	}
	if st := status(t, p.Admin.URL, shop, site); len(st.Plugins) != 1 || len(st.Plugins[0].Versions) != 1 {
		t.Fatalf("shop after refused requests: %+v", st.Plugins)
	}

	// A reload drops site "other": its owner is told the PoP no longer
	// serves it (without the list of other sites), ops get the list.
	shopOnly := []string{"shop"}
	sites.Store(&shopOnly)
	r := call(t, http.MethodGet, p.Admin.URL+"/admin/plugins/other", other, nil)
	if r.status != http.StatusNotFound || !strings.Contains(r.errorText(), "does not serve it") || strings.Contains(r.errorText(), "shop") {
		t.Fatalf("owner of a removed site: %d %q", r.status, r.errorText())
	}
	r = call(t, http.MethodGet, p.Admin.URL+"/admin/plugins/other", ops, nil)
	if r.status != http.StatusNotFound || !strings.Contains(r.errorText(), `unknown site "other": the sites of this PoP are shop`) {
		t.Fatalf("ops on a removed site: %d %q", r.status, r.errorText())
	}
}
