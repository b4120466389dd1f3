package tlsedge

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestPolicies: plain HTTP is redirected to HTTPS for sites that ask (keeping
// path and query, 308 for non-GET), ACME challenge paths are not; HSTS is
// sent only over TLS and only for sites that set it.
func TestPolicies(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	c, k, leaf := certFiles(t, dir, "shop", []string{"shop.example.test", "plain.example.test"}, now.Add(-time.Hour), now.Add(24*time.Hour))
	pol, err := NewPolicies([]SitePolicy{
		{Names: []string{"shop.example.test"}, RedirectHTTP: true, HSTS: HSTS{MaxAge: 365 * 24 * time.Hour, IncludeSubdomains: true}},
		{Names: []string{"plain.example.test"}},
	}, 8443)
	if err != nil {
		t.Fatal(err)
	}
	p := newPoP(t, Options{Sites: []SiteCert{{Site: "shop", Names: []string{"shop.example.test", "plain.example.test"}, CertFile: c, KeyFile: k}}}, pol)
	p.start(t)

	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	do := func(method, host, path string) *http.Response {
		req, _ := http.NewRequest(method, "http://"+p.httpAddr+path, strings.NewReader("x"))
		req.Host = host
		resp, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	for _, tc := range []struct {
		method, host, path string
		status             int
		location           string
	}{
		{"GET", "shop.example.test", "/a?b=c", 301, "https://shop.example.test:8443/a?b=c"},
		{"POST", "shop.example.test:80", "/form", 308, "https://shop.example.test:8443/form"},
		{"GET", "shop.example.test", "/.well-known/acme-challenge/x", 200, ""},
		{"GET", "plain.example.test", "/", 200, ""},
	} {
		resp := do(tc.method, tc.host, tc.path)
		if resp.StatusCode != tc.status || resp.Header.Get("Location") != tc.location {
			t.Errorf("%s http://%s%s: %d %q, want %d %q", tc.method, tc.host, tc.path, resp.StatusCode, resp.Header.Get("Location"), tc.status, tc.location)
		}
		if resp.Header.Get("Strict-Transport-Security") != "" {
			t.Errorf("HSTS sent over plain HTTP for %s", tc.host)
		}
	}
	roots := poolOf(leaf)
	resp, _ := get(t, p.h2Client(roots), "https://shop.example.test/")
	if got := resp.Header.Get("Strict-Transport-Security"); got != "max-age=31536000; includeSubDomains" {
		t.Errorf("HSTS over h2: %q", got)
	}
	resp, _ = get(t, p.h3Client(t, roots), "https://shop.example.test/")
	if got := resp.Header.Get("Strict-Transport-Security"); got != "max-age=31536000; includeSubDomains" {
		t.Errorf("HSTS over h3: %q", got)
	}
	resp, _ = get(t, p.h2Client(roots), "https://plain.example.test/")
	if got := resp.Header.Get("Strict-Transport-Security"); got != "" {
		t.Errorf("HSTS for a site without it: %q", got)
	}

	_, err = NewPolicies([]SitePolicy{{Names: []string{"x"}, HSTS: HSTS{MaxAge: time.Hour, Preload: true}}}, 443)
	wantErrContains(t, err, "preload", "1 year")
}
