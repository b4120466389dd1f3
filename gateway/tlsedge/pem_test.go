package tlsedge

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBadPEMFailsNamingTheFile: each broken PEM configuration is refused
// at load with the file named and what to do.
func TestBadPEMFailsNamingTheFile(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	goodCert, goodKey, _ := certFiles(t, dir, "good", []string{"shop.example.test"}, now.Add(-time.Hour), now.Add(24*time.Hour))
	expCert, expKey, _ := certFiles(t, dir, "expired", []string{"shop.example.test"}, now.Add(-48*time.Hour), now.Add(-time.Hour))
	futCert, futKey, _ := certFiles(t, dir, "future", []string{"shop.example.test"}, now.Add(time.Hour), now.Add(48*time.Hour))
	_, otherKey, _ := certFiles(t, dir, "other", []string{"shop.example.test"}, now.Add(-time.Hour), now.Add(24*time.Hour))
	wrongCert, wrongKey, _ := certFiles(t, dir, "wrong", []string{"blog.example.test"}, now.Add(-time.Hour), now.Add(24*time.Hour))
	garbage := filepath.Join(dir, "garbage.pem")
	writeFile(t, garbage, []byte("not a certificate\n"))
	missing := filepath.Join(dir, "missing.pem")

	for _, tc := range []struct {
		name      string
		cert, key string
		want      []string
	}{
		{"missing certificate", missing, goodKey, []string{missing, "does not exist"}},
		{"missing key", goodCert, missing, []string{missing, "does not exist"}},
		{"expired", expCert, expKey, []string{expCert, "expired on", "renew it"}},
		{"not yet valid", futCert, futKey, []string{futCert, "not valid before"}},
		{"key of another certificate", goodCert, otherKey, []string{otherKey, "does not match", goodCert}},
		{"certificate for another host", wrongCert, wrongKey, []string{wrongCert, "does not cover host shop.example.test", "blog.example.test"}},
		{"not PEM", garbage, goodKey, []string{garbage, "no PEM CERTIFICATE"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(Options{Sites: []SiteCert{{Site: "shop", Names: []string{"shop.example.test"}, CertFile: tc.cert, KeyFile: tc.key}}})
			wantErrContains(t, err, append([]string{"site shop"}, tc.want...)...)
		})
	}
}

// TestSiteCertConfigErrors: the other mistakes a config can hold.
func TestSiteCertConfigErrors(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	c, k, _ := certFiles(t, dir, "c", []string{"a.example.test", "b.example.test"}, now.Add(-time.Hour), now.Add(time.Hour))
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"no source", Options{Sites: []SiteCert{{Site: "a", Names: []string{"a.example.test"}}}}, "set cert_file and key_file, or acme: true"},
		{"both sources", Options{Sites: []SiteCert{{Site: "a", Names: []string{"a.example.test"}, CertFile: c, KeyFile: k, ACME: true}}}, "choose one"},
		{"key without cert", Options{Sites: []SiteCert{{Site: "a", Names: []string{"a.example.test"}, KeyFile: k}}}, "must both be set"},
		{"no names", Options{Sites: []SiteCert{{Site: "a", CertFile: c, KeyFile: k}}}, "no host names"},
		{"host in two sites", Options{Sites: []SiteCert{
			{Site: "a", Names: []string{"a.example.test"}, CertFile: c, KeyFile: k},
			{Site: "b", Names: []string{"A.example.test."}, CertFile: c, KeyFile: k},
		}}, "a.example.test is in both site a and site b"},
		{"ACME wildcard", Options{Sites: []SiteCert{{Site: "a", Names: []string{"*.example.test"}, ACME: true}}}, "wildcard"},
		{"bad unknown_sni", Options{UnknownSNI: "maybe"}, `unknown_sni "maybe"`},
		{"default site missing", Options{UnknownSNI: UnknownSNIDefault, DefaultSite: "nope",
			Sites: []SiteCert{{Site: "a", Names: []string{"a.example.test"}, CertFile: c, KeyFile: k}}}, `default_site "nope"`},
		{"no challenge", Options{ACME: ACME{DisableHTTP01: true, DisableTLSALPN01: true}}, "enable at least one"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.opts)
			wantErrContains(t, err, tc.want)
		})
	}
}

// TestSNIAndUnknownNames serves two PEM sites (one wildcard) by SNI, and
// answers unknown names either with the default site's certificate or a
// handshake failure.
func TestSNIAndUnknownNames(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	shopC, shopK, shop := certFiles(t, dir, "shop", []string{"shop.example.test"}, now.Add(-time.Hour), now.Add(24*time.Hour))
	blogC, blogK, blog := certFiles(t, dir, "blog", []string{"*.blog.example.test"}, now.Add(-time.Hour), now.Add(24*time.Hour))
	sites := []SiteCert{
		{Site: "shop", Names: []string{"shop.example.test"}, CertFile: shopC, KeyFile: shopK},
		{Site: "blog", Names: []string{"*.blog.example.test"}, CertFile: blogC, KeyFile: blogK},
	}
	roots := poolOf(shop, blog)

	t.Run("reject", func(t *testing.T) {
		p := newPoP(t, Options{Sites: sites}, nil)
		p.start(t)
		for name, want := range map[string]string{"shop.example.test": "shop.example.test", "SHOP.example.test": "shop.example.test", "en.blog.example.test": "*.blog.example.test"} {
			leaf, _, err := p.handshake(name, roots, nil)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if leaf.DNSNames[0] != want {
				t.Fatalf("%s: served %v, want %s", name, leaf.DNSNames, want)
			}
		}
		for _, name := range []string{"unknown.example.test", "a.b.blog.example.test", ""} {
			// RFC 6066 section 3: the alert for a name the server does not
			// recognise is unrecognized_name (112), not internal_error.
			_, _, err := p.handshake(name, nil, nil)
			if err == nil || !strings.Contains(err.Error(), "unrecognized name") {
				t.Fatalf("unknown SNI %q: handshake error %v, want it refused with the alert unrecognized_name", name, err)
			}
		}
		if n := p.counter("meridian_tls_certificate_lookups_total", map[string]string{"result": "unknown_sni"}); n != 3 {
			t.Fatalf("unknown_sni counted %v, want 3", n)
		}
		// Scanners send these all day: each is counted, and the log gets
		// one WARN for all of them, not one each.
		eventually(t, 5*time.Second, "the 3 refusals counted as handshake errors", func() error {
			if n := p.counter("meridian_tls_handshake_errors_total", map[string]string{"reason": "unknown_sni"}); n != 3 {
				return fmt.Errorf("meridian_tls_handshake_errors_total{reason=unknown_sni} = %v, want 3", n)
			}
			return nil
		})
		if n := strings.Count(p.logs.String(), "level=WARN"); n != 1 {
			t.Fatalf("%d WARN lines for 3 refused handshakes, want 1:\n%s", n, p.logs.String())
		}
		if n := strings.Count(p.logs.String(), "level=DEBUG msg=\"http: TLS handshake error"); n != 3 {
			t.Fatalf("%d DEBUG lines for 3 refused handshakes, want 3:\n%s", n, p.logs.String())
		}
		if got := p.counter("meridian_tls_certificate_not_after_seconds", map[string]string{"site": "blog", "name": "*.blog.example.test"}); got != float64(blog.NotAfter.Unix()) {
			t.Fatalf("expiry gauge for the blog = %v, want %v", got, blog.NotAfter.Unix())
		}
	})
	t.Run("default", func(t *testing.T) {
		p := newPoP(t, Options{Sites: sites, UnknownSNI: UnknownSNIDefault, DefaultSite: "shop"}, nil)
		p.start(t)
		leaf, _, err := p.handshake("unknown.example.test", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if leaf.SerialNumber.Cmp(shop.SerialNumber) != 0 {
			t.Fatalf("unknown SNI got %v, want the default site's certificate", leaf.DNSNames)
		}
	})
}

// TestTLSVersions: a client offering only TLS 1.0 (or 1.1) is refused; 1.2
// and 1.3 complete, 1.2 with an AEAD suite.
func TestTLSVersions(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	c, k, leaf := certFiles(t, dir, "shop", []string{"shop.example.test"}, now.Add(-time.Hour), now.Add(24*time.Hour))
	p := newPoP(t, Options{Sites: []SiteCert{{Site: "shop", Names: []string{"shop.example.test"}, CertFile: c, KeyFile: k}}}, nil)
	p.start(t)
	roots := poolOf(leaf)
	for _, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11} {
		_, _, err := p.handshake("shop.example.test", roots, &tls.Config{MinVersion: v, MaxVersion: v})
		if err == nil || !strings.Contains(err.Error(), "protocol version") {
			t.Fatalf("client offering only %s: err %v, want a protocol version refusal", tls.VersionName(v), err)
		}
	}
	_, cs, err := p.handshake("shop.example.test", roots, &tls.Config{MaxVersion: tls.VersionTLS12})
	if err != nil || cs.Version != tls.VersionTLS12 {
		t.Fatalf("TLS 1.2: %v (version %x)", err, cs.Version)
	}
	if cs.CipherSuite != tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 && cs.CipherSuite != tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 && cs.CipherSuite != tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 {
		t.Fatalf("TLS 1.2 suite %s", tls.CipherSuiteName(cs.CipherSuite))
	}
	// A TLS 1.2 client offering only CBC suites is refused.
	_, _, err = p.handshake("shop.example.test", roots, &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}})
	if err == nil {
		t.Fatal("a CBC-only TLS 1.2 client was accepted")
	}
	_, cs, err = p.handshake("shop.example.test", roots, nil)
	if err != nil || cs.Version != tls.VersionTLS13 {
		t.Fatalf("TLS 1.3: %v (version %x)", err, cs.Version)
	}
}

// TestPEMReload: a renewed PEM pair is picked up by the watcher and by
// Reload; a broken one is refused with the file named while the previous
// certificate stays in service.
func TestPEMReload(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	names := []string{"shop.example.test"}
	c, k, first := certFiles(t, dir, "shop", names, now.Add(-time.Hour), now.Add(24*time.Hour))
	p := newPoP(t, Options{Sites: []SiteCert{{Site: "shop", Names: names, CertFile: c, KeyFile: k}}, WatchInterval: 50 * time.Millisecond}, nil)
	p.start(t)

	serving := func() []byte {
		leaf, _, err := p.handshake("shop.example.test", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		return leaf.Raw
	}
	if string(serving()) != string(first.Raw) {
		t.Fatal("not serving the first certificate")
	}

	// Renewed on disk: the watcher notices.
	_, _, second := certFiles(t, dir, "shop", names, now.Add(-time.Hour), now.Add(48*time.Hour))
	eventually(t, 10*time.Second, "renewed PEM served", func() error {
		if string(serving()) != string(second.Raw) {
			return os.ErrNotExist
		}
		return nil
	})

	// A broken certificate file: Reload says which file, service continues.
	writeFile(t, c, []byte("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n"))
	wantErrContains(t, p.m.Reload(), c)
	if string(serving()) != string(second.Raw) {
		t.Fatal("a failed reload changed the served certificate")
	}

	// Fixed again (e.g. then SIGHUP): Reload takes it.
	_, _, third := certFiles(t, dir, "shop", names, now.Add(-time.Hour), now.Add(72*time.Hour))
	if err := p.m.Reload(); err != nil {
		t.Fatal(err)
	}
	if string(serving()) != string(third.Raw) {
		t.Fatal("Reload did not load the fixed certificate")
	}
}

// TestSetSites: a config reload adds a site; a bad new config changes
// nothing.
func TestSetSites(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	c1, k1, _ := certFiles(t, dir, "a", []string{"a.example.test"}, now.Add(-time.Hour), now.Add(24*time.Hour))
	c2, k2, _ := certFiles(t, dir, "b", []string{"b.example.test"}, now.Add(-time.Hour), now.Add(24*time.Hour))
	a := SiteCert{Site: "a", Names: []string{"a.example.test"}, CertFile: c1, KeyFile: k1}
	p := newPoP(t, Options{Sites: []SiteCert{a}}, nil)
	p.start(t)
	if _, _, err := p.handshake("b.example.test", nil, nil); err == nil {
		t.Fatal("b served before it was added")
	}
	bad := SiteCert{Site: "b", Names: []string{"b.example.test"}, CertFile: c2, KeyFile: k1}
	wantErrContains(t, p.m.SetSites([]SiteCert{a, bad}), k1, "does not match")
	if _, _, err := p.handshake("a.example.test", nil, nil); err != nil {
		t.Fatalf("a bad reload broke site a: %v", err)
	}
	b := SiteCert{Site: "b", Names: []string{"b.example.test"}, CertFile: c2, KeyFile: k2}
	if err := p.m.SetSites([]SiteCert{a, b}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.handshake("b.example.test", nil, nil); err != nil {
		t.Fatalf("b after SetSites: %v", err)
	}
}

// TestServerPortTaken: Start fails with the address when the TCP or UDP
// port is taken.
func TestServerPortTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	m, _ := New(Options{})
	s, _ := NewServer(ServerOptions{Addr: ln.Addr().String(), TLSConfig: m.TLSConfig(), Handler: okHandler})
	wantErrContains(t, s.Start(context.Background()), ln.Addr().String(), "listen https")

	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	s, _ = NewServer(ServerOptions{Addr: "127.0.0.1:0", HTTP3Addr: pc.LocalAddr().String(), TLSConfig: m.TLSConfig(), Handler: okHandler})
	wantErrContains(t, s.Start(context.Background()), pc.LocalAddr().String(), "http3")
}
