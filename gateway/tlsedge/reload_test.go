package tlsedge

import (
	"net/http"
	"testing"
	"time"
)

// TestPrepareSitesThenApply: a prepared site set changes nothing until
// Apply; then the new site, unknown-SNI answer and default site serve, and
// a later PEM reload (SIGHUP or the watcher) keeps them.
func TestPrepareSitesThenApply(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	ca, ka, leafA := certFiles(t, dir, "a", []string{"a.example.test"}, now.Add(-time.Hour), now.Add(24*time.Hour))
	cb, kb, leafB := certFiles(t, dir, "b", []string{"b.example.test"}, now.Add(-time.Hour), now.Add(24*time.Hour))
	a := SiteCert{Site: "a", Names: []string{"a.example.test"}, CertFile: ca, KeyFile: ka}
	b := SiteCert{Site: "b", Names: []string{"b.example.test"}, CertFile: cb, KeyFile: kb}
	p := newPoP(t, Options{Sites: []SiteCert{a}}, nil)
	p.start(t)

	u, err := p.m.PrepareSites([]SiteCert{a, b}, UnknownSNIDefault, "b")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.handshake("b.example.test", nil, nil); err == nil {
		t.Fatal("b served before Apply")
	}
	if _, _, err := p.handshake("other.example.test", nil, nil); err == nil {
		t.Fatal("an unknown name got a certificate before Apply")
	}
	if err := u.Apply(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		want []byte
	}{{"a.example.test", leafA.Raw}, {"b.example.test", leafB.Raw}, {"other.example.test", leafB.Raw}} {
		got, _, err := p.handshake(c.name, nil, nil)
		if err != nil || string(got.Raw) != string(c.want) {
			t.Fatalf("%s after Apply: %v (right certificate: %v)", c.name, err, err == nil && string(got.Raw) == string(c.want))
		}
	}
	if err := p.m.Reload(); err != nil {
		t.Fatal(err)
	}
	if got, _, err := p.handshake("other.example.test", nil, nil); err != nil || string(got.Raw) != string(leafB.Raw) {
		t.Fatalf("unknown name after a PEM reload: %v; the default site set by Apply was lost", err)
	}

	// A default site without a certificate is refused and nothing changes.
	_, err = p.m.PrepareSites([]SiteCert{a}, UnknownSNIDefault, "b")
	wantErrContains(t, err, "default_site", "b")
	if _, _, err := p.handshake("b.example.test", nil, nil); err != nil {
		t.Fatalf("a refused PrepareSites changed what is served: %v", err)
	}
}

// TestPoliciesSet: policies replaced live apply to the next request; an
// invalid set is refused and the old one stays.
func TestPoliciesSet(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	c, k, _ := certFiles(t, dir, "shop", []string{"shop.example.test"}, now.Add(-time.Hour), now.Add(24*time.Hour))
	pol, err := NewPolicies([]SitePolicy{{Names: []string{"shop.example.test"}}}, 443)
	if err != nil {
		t.Fatal(err)
	}
	p := newPoP(t, Options{Sites: []SiteCert{{Site: "shop", Names: []string{"shop.example.test"}, CertFile: c, KeyFile: k}}}, pol)
	p.start(t)
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	status := func() int {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+p.httpAddr+"/", nil)
		req.Host = "shop.example.test"
		resp, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := status(); got != 200 || pol.RedirectsHTTP("shop.example.test") {
		t.Fatalf("before Set: %d", got)
	}
	redirect := []SitePolicy{{Names: []string{"shop.example.test"}, RedirectHTTP: true}}
	if err := pol.Set(redirect); err != nil {
		t.Fatal(err)
	}
	redirect[0].RedirectHTTP = false // Set keeps its own copy
	if got := status(); got != http.StatusMovedPermanently || !pol.RedirectsHTTP("shop.example.test") {
		t.Fatalf("after Set with redirect_http: %d", got)
	}
	bad := []SitePolicy{{Names: []string{"shop.example.test"}, HSTS: HSTS{MaxAge: -time.Second}}}
	wantErrContains(t, pol.Set(bad), "negative")
	wantErrContains(t, CheckPolicies(bad), "negative")
	if got := status(); got != http.StatusMovedPermanently {
		t.Fatalf("a refused Set changed the policy: %d", got)
	}
}

// TestPrepareSitesACMEWithoutStorage: a PoP started without ACME sites has
// no certificate storage; adding one live is refused with what to do.
func TestPrepareSitesACMEWithoutStorage(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	c, k, _ := certFiles(t, dir, "a", []string{"a.example.test"}, now.Add(-time.Hour), now.Add(24*time.Hour))
	a := SiteCert{Site: "a", Names: []string{"a.example.test"}, CertFile: c, KeyFile: k}
	m, err := New(Options{Sites: []SiteCert{a}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.PrepareSites([]SiteCert{a, {Site: "blog", Names: []string{"blog.example.test"}, ACME: true}}, "", "")
	wantErrContains(t, err, "site blog", "no certificate storage", "restart")
}
