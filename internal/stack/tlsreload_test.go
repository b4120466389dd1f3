package stack_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway/tlsedge/devca"
	"github.com/meridian-edge/meridian/internal/config"
	"github.com/meridian-edge/meridian/internal/demoorigin"
	"github.com/meridian-edge/meridian/internal/stack"
)

const tlsPoP = "us-east-1"

// tlsReloadStack is one PoP of the dev stack (site www with a dev_ca
// certificate) and a way to make the next config for Reload.
type tlsReloadStack struct {
	st     *stack.Stack
	cfg    *config.Config
	origin string
	devCA  *x509.CertPool
}

func startTLSReload(t *testing.T) *tlsReloadStack {
	t.Helper()
	origin := httptest.NewServer(demoorigin.New())
	t.Cleanup(origin.Close)
	cfg := devConfig(t, origin.URL)
	st, err := stack.Start(context.Background(), cfg, stack.Roles{PoPs: []string{tlsPoP}}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st.Shutdown(ctx)
	})
	files, ok := st.DevCA()
	if !ok {
		t.Fatal("the dev stack made no dev CA")
	}
	roots, err := devca.Pool(files)
	if err != nil {
		t.Fatal(err)
	}
	return &tlsReloadStack{st: st, cfg: cfg, origin: origin.URL, devCA: roots}
}

// next is a fresh copy of the running config (same data dir and
// addresses), changed by edit.
func (s *tlsReloadStack) next(t *testing.T, edit func(*config.Config)) *config.Config {
	t.Helper()
	c := devConfig(t, s.origin)
	c.DataDir = s.cfg.DataDir
	edit(c)
	return c
}

// addSite appends a copy of site www (same origin) named name for host,
// with tls.
func addSite(c *config.Config, name, host string, tlsConf *config.SiteTLS) {
	site := c.Sites[0]
	site.Name, site.Hosts, site.TLS, site.Default = name, []string{host}, tlsConf, false
	c.Sites = append(c.Sites, site)
}

// httpsGet fetches https://host/ from the PoP over a new connection,
// verifying the certificate against roots, and returns the response (body
// read) and the certificate served.
func (s *tlsReloadStack) httpsGet(host string, roots *x509.CertPool) (*http.Response, string, *x509.Certificate, error) {
	addr := s.st.PoP(tlsPoP).HTTPSAddr()
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: host},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
		ForceAttemptHTTP2: true,
	}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + host + "/")
	if err != nil {
		return nil, "", nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, "", nil, err
	}
	return resp, string(b), resp.TLS.PeerCertificates[0], nil
}

// wantServed asserts that host is served over HTTPS with a certificate valid
// for it under roots, and the origin's answer.
func (s *tlsReloadStack) wantServed(t *testing.T, host string, roots *x509.CertPool) *x509.Certificate {
	t.Helper()
	resp, body, leaf, err := s.httpsGet(host, roots)
	if err != nil {
		t.Fatalf("https://%s/: %v", host, err)
	}
	if resp.StatusCode != 200 || !strings.Contains(body, "Hello from the Meridian demo origin") {
		t.Fatalf("https://%s/: %d %q", host, resp.StatusCode, body)
	}
	if err := leaf.VerifyHostname(host); err != nil {
		t.Fatalf("https://%s/: %v", host, err)
	}
	return leaf
}

// plainGet sends GET / for host over plain HTTP without following redirects.
func (s *tlsReloadStack) plainGet(t *testing.T, host string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+s.st.PoP(tlsPoP).HTTPAddr()+"/", nil)
	req.Host = host
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// TestReloadAddsHostToDevCASite: `meridian dev`'s site gets a second host
// by a reload; HTTPS then serves it with a dev CA certificate valid for the
// name, and the first host keeps working, on a connection opened before the
// reload and on new ones.
func TestReloadAddsHostToDevCASite(t *testing.T) {
	s := startTLSReload(t)
	s.wantServed(t, "www.example.test", s.devCA)
	if _, _, _, err := s.httpsGet("api.example.test", s.devCA); err == nil {
		t.Fatal("api.example.test served over HTTPS before it was added")
	}

	// A client that keeps its connection across the reload.
	addr := s.st.PoP(tlsPoP).HTTPSAddr()
	kept := &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: s.devCA},
		ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}}
	defer kept.CloseIdleConnections()
	keptGet := func() {
		t.Helper()
		resp, err := kept.Get("https://www.example.test/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("kept connection: %d", resp.StatusCode)
		}
	}
	keptGet()

	next := s.next(t, func(c *config.Config) { c.Sites[0].Hosts = append(c.Sites[0].Hosts, "api.example.test") })
	if err := s.st.Reload(next); err != nil {
		t.Fatal(err)
	}
	leaf := s.wantServed(t, "api.example.test", s.devCA)
	if !strings.HasPrefix(leaf.Issuer.CommonName, "Meridian dev CA") {
		t.Fatalf("api.example.test certificate issued by %q, want the dev CA", leaf.Issuer.CommonName)
	}
	s.wantServed(t, "www.example.test", s.devCA)
	keptGet()

	// The host is removed again: no certificate for it any more.
	if err := s.st.Reload(s.next(t, func(*config.Config) {})); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := s.httpsGet("api.example.test", s.devCA); err == nil {
		t.Fatal("api.example.test still served over HTTPS after it was removed")
	}
	s.wantServed(t, "www.example.test", s.devCA)
}

// TestReloadAddsPEMSite: a new site with its own PEM certificate, added by
// a reload, is served with that certificate.
func TestReloadAddsPEMSite(t *testing.T) {
	s := startTLSReload(t)
	shop, err := devca.Ensure(t.TempDir(), "shop", []string{"shop.example.test"}) // another CA than the stack's
	if err != nil {
		t.Fatal(err)
	}
	shopRoots, err := devca.Pool(shop)
	if err != nil {
		t.Fatal(err)
	}
	want, err := tls.LoadX509KeyPair(shop.Cert, shop.Key)
	if err != nil {
		t.Fatal(err)
	}
	next := s.next(t, func(c *config.Config) {
		addSite(c, "shop", "shop.example.test", &config.SiteTLS{CertFile: shop.Cert, KeyFile: shop.Key})
	})
	if err := s.st.Reload(next); err != nil {
		t.Fatal(err)
	}
	leaf := s.wantServed(t, "shop.example.test", shopRoots)
	if leaf.SerialNumber.Cmp(want.Leaf.SerialNumber) != 0 {
		t.Fatalf("shop.example.test served certificate %s, want %s from %s", leaf.SerialNumber, want.Leaf.SerialNumber, shop.Cert)
	}
	s.wantServed(t, "www.example.test", s.devCA)
}

// TestReloadTogglesRedirectAndHSTS: redirect_http and hsts turned on by a
// reload apply to the next request, and turned off again likewise.
func TestReloadTogglesRedirectAndHSTS(t *testing.T) {
	s := startTLSReload(t)
	if resp := s.plainGet(t, "www.example.test"); resp.StatusCode != 200 {
		t.Fatalf("plain HTTP before the reload: %d", resp.StatusCode)
	}
	on := s.next(t, func(c *config.Config) {
		c.Sites[0].TLS.RedirectHTTP = true
		c.Sites[0].TLS.HSTS = config.HSTS{MaxAge: 24 * time.Hour}
	})
	if err := s.st.Reload(on); err != nil {
		t.Fatal(err)
	}
	resp := s.plainGet(t, "www.example.test")
	_, p, _ := net.SplitHostPort(s.st.PoP(tlsPoP).HTTPSAddr())
	if want := "https://www.example.test:" + p + "/"; resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != want {
		t.Fatalf("plain HTTP with redirect_http on: %d Location %q, want 301 to %s", resp.StatusCode, resp.Header.Get("Location"), want)
	}
	hresp, _, _, err := s.httpsGet("www.example.test", s.devCA)
	if err != nil {
		t.Fatal(err)
	}
	if got := hresp.Header.Get("Strict-Transport-Security"); got != "max-age=86400" {
		t.Fatalf("HSTS after the reload: %q, want max-age=86400", got)
	}

	if err := s.st.Reload(s.next(t, func(*config.Config) {})); err != nil {
		t.Fatal(err)
	}
	if resp := s.plainGet(t, "www.example.test"); resp.StatusCode != 200 {
		t.Fatalf("plain HTTP with redirect_http off again: %d", resp.StatusCode)
	}
	hresp, _, _, err = s.httpsGet("www.example.test", s.devCA)
	if err != nil {
		t.Fatal(err)
	}
	if got := hresp.Header.Get("Strict-Transport-Security"); got != "" {
		t.Fatalf("HSTS off again, still sent: %q", got)
	}
}

// TestReloadRefusesBrokenCertFile: a reload that adds a site whose
// certificate file is missing or not a certificate is refused naming the
// file, and nothing of it applies: the running certificate still serves,
// the new site is not routed, and the other changes of the same reload
// (redirect_http) are not made.
func TestReloadRefusesBrokenCertFile(t *testing.T) {
	s := startTLSReload(t)
	before := s.wantServed(t, "www.example.test", s.devCA)
	dir := t.TempDir()
	good, err := devca.Ensure(dir, "shop", []string{"shop.example.test"})
	if err != nil {
		t.Fatal(err)
	}
	goodRoots, err := devca.Pool(good)
	if err != nil {
		t.Fatal(err)
	}
	broken := filepath.Join(dir, "broken.pem")
	if err := os.WriteFile(broken, []byte("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, certFile, want string }{
		{"missing", filepath.Join(dir, "missing.pem"), "does not exist"},
		{"broken", broken, "broken.pem"},
	} {
		t.Run(c.name, func(t *testing.T) {
			next := s.next(t, func(cfg *config.Config) {
				cfg.Sites[0].TLS.RedirectHTTP = true
				addSite(cfg, "shop", "shop.example.test", &config.SiteTLS{CertFile: c.certFile, KeyFile: good.Key})
			})
			err := s.st.Reload(next)
			if err == nil || !strings.Contains(err.Error(), c.certFile) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "shop") {
				t.Fatalf("reload with a %s certificate file: %v; want an error naming site shop and %s", c.name, err, c.certFile)
			}
			after := s.wantServed(t, "www.example.test", s.devCA)
			if after.SerialNumber.Cmp(before.SerialNumber) != 0 {
				t.Fatalf("a refused reload changed the certificate served: %s, was %s", after.SerialNumber, before.SerialNumber)
			}
			if _, _, _, err := s.httpsGet("shop.example.test", goodRoots); err == nil {
				t.Fatal("shop.example.test is served over HTTPS after a refused reload")
			}
			if resp := s.plainGet(t, "shop.example.test"); resp.StatusCode != http.StatusMisdirectedRequest {
				t.Fatalf("shop.example.test over plain HTTP after a refused reload: %d, want 421 (no such site)", resp.StatusCode)
			}
			if resp := s.plainGet(t, "www.example.test"); resp.StatusCode != 200 {
				t.Fatalf("redirect_http of a refused reload applied: plain HTTP %d", resp.StatusCode)
			}
		})
	}
}

// TestReloadRefusesListenerChange: pops[].https and http3 still need a
// restart; the refusal names the field and the PoP, and nothing applies.
func TestReloadRefusesListenerChange(t *testing.T) {
	s := startTLSReload(t)
	for _, c := range []struct {
		field string
		edit  func(*config.PoP)
	}{
		{"https", func(p *config.PoP) { p.HTTPS = "127.0.0.1:1" }},
		{"http3", func(p *config.PoP) { p.HTTP3 = !p.HTTP3 }},
	} {
		next := s.next(t, func(cfg *config.Config) {
			cfg.Sites[0].Hosts = append(cfg.Sites[0].Hosts, "api.example.test")
			c.edit(&cfg.PoPs[0])
		})
		err := s.st.Reload(next)
		if err == nil || !strings.Contains(err.Error(), "pops "+tlsPoP+": "+c.field+" cannot change live") {
			t.Fatalf("reload changing pops[].%s: %v; want it refused naming the field", c.field, err)
		}
		if _, _, _, err := s.httpsGet("api.example.test", s.devCA); err == nil {
			t.Fatalf("the host added with a refused %s change is served", c.field)
		}
		s.wantServed(t, "www.example.test", s.devCA)
	}
	next := s.next(t, func(cfg *config.Config) { cfg.TLS.ACME.Directory = "https://127.0.0.1:14000/dir" })
	if err := s.st.Reload(next); err == nil || !strings.Contains(err.Error(), "tls.acme.directory cannot change live") {
		t.Fatalf("reload changing tls.acme.directory: %v; want it refused naming the field", err)
	}
}

// TestReloadTLSSiteWithoutHTTPSListener: a PoP that started with no TLS
// site has no HTTPS listener; a reload giving a site a certificate is
// refused with what to do, and the site keeps serving plain HTTP.
func TestReloadTLSSiteWithoutHTTPSListener(t *testing.T) {
	origin := httptest.NewServer(demoorigin.New())
	defer origin.Close()
	cfg := devConfig(t, origin.URL)
	cfg.Sites[0].TLS = nil
	st, err := stack.Start(context.Background(), cfg, stack.Roles{PoPs: []string{tlsPoP}}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Shutdown(context.Background())
	next := devConfig(t, origin.URL)
	next.DataDir = cfg.DataDir
	next.Sites[0].Origins[0].URL = "http://127.0.0.1:1" // must not apply either
	err = st.Reload(next)
	if err == nil || !strings.Contains(err.Error(), "HTTPS is not running") || !strings.Contains(err.Error(), "restart") || !strings.Contains(err.Error(), "www") {
		t.Fatalf("reload adding a certificate to a PoP without HTTPS: %v", err)
	}
	if resp, body := siteGet(t, st, tlsPoP, "/"); resp.StatusCode != 200 || !strings.Contains(body, "Hello from the Meridian demo origin") {
		t.Fatalf("after the refused reload: %d %q", resp.StatusCode, body)
	}
}
