package tlsedge

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/meridian-edge/meridian/gateway/tlsedge/internal/acmetest"
	"github.com/meridian-edge/meridian/gateway/tlsedge/jsstorage"
	"github.com/meridian-edge/meridian/internal/testutil"
	"golang.org/x/crypto/ocsp"
)

// acmeOptions is a manager for one ACME site against pebble.
func acmeOptions(pebble *acmetest.Pebble, storage certmagic.Storage, names ...string) Options {
	return Options{
		PoP:   "test",
		Sites: []SiteCert{{Site: "shop", Names: names, ACME: true}},
		ACME: ACME{
			DirectoryURL:        pebble.DirectoryURL(),
			Email:               "ops@example.test",
			TrustedRoots:        pebble.Roots,
			DisableOCSPStapling: true, // pebble runs no OCSP responder
		},
		Storage:            storage,
		ChallengeHost:      "127.0.0.1",
		RenewCheckInterval: time.Second,
		WatchInterval:      -1,
	}
}

// TestACMEObtainAndServe obtains a certificate from pebble with a real
// validation of each challenge type against the PoP's own listeners, then
// serves it over HTTP/2 and HTTP/3 to clients that trust only pebble's root.
func TestACMEObtainAndServe(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		noHTTP01, noTLSALPN01 bool
	}{
		{"http-01", false, true},
		{"tls-alpn-01", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// pebble validates on the PoP's ports, learnt after binding:
			// start pebble with placeholder ports, then restart on the real ones.
			p := newPoPForPebble(t, func(httpPort, tlsPort int) (*acmetest.Pebble, Options) {
				pebble := acmetest.Start(t, acmetest.Options{HTTPPort: httpPort, TLSPort: tlsPort})
				o := acmeOptions(pebble, &certmagic.FileStorage{Path: t.TempDir()}, "shop.example.test")
				o.ACME.DisableHTTP01, o.ACME.DisableTLSALPN01 = tc.noHTTP01, tc.noTLSALPN01
				return pebble, o
			})
			roots := p.pebble.IssuerRoots()
			eventually(t, 60*time.Second, "certificate obtained", func() error {
				_, _, err := p.handshake("shop.example.test", roots, nil)
				return err
			})
			leaf, cs, err := p.handshake("shop.example.test", roots, nil)
			if err != nil {
				t.Fatal(err)
			}
			if leaf.DNSNames[0] != "shop.example.test" || cs.Version < 0x0303 {
				t.Fatalf("served %v over version %x", leaf.DNSNames, cs.Version)
			}
			if got := p.counter("meridian_tls_certificate_not_after_seconds", map[string]string{"name": "shop.example.test"}); got != float64(leaf.NotAfter.Unix()) {
				t.Fatalf("expiry gauge = %v, want %v", got, leaf.NotAfter.Unix())
			}
			challenge := "acme_challenge"
			if tc.name == "http-01" {
				if n := p.counter("meridian_tls_http01_answers_total", nil); n < 1 {
					t.Fatalf("pebble never fetched the HTTP-01 token from the PoP's HTTP listener (answers=%v)", n)
				}
			} else if n := p.counter("meridian_tls_certificate_lookups_total", map[string]string{"result": challenge}); n < 1 {
				t.Fatalf("pebble never made a TLS-ALPN-01 handshake with the PoP (lookups=%v)", n)
			}

			resp, body := get(t, p.h2Client(roots), "https://shop.example.test/")
			if resp.ProtoMajor != 2 || !strings.Contains(body, "over HTTP/2.0") {
				t.Fatalf("h2: proto %s body %q", resp.Proto, body)
			}
			alt := resp.Header.Get("Alt-Svc")
			if want := fmt.Sprintf(`h3=":%d"`, portOf(p.srv.HTTP3Addr())); !strings.HasPrefix(alt, want) {
				t.Fatalf("Alt-Svc %q, want prefix %q", alt, want)
			}
			resp, body = get(t, p.h3Client(t, roots), "https://shop.example.test/")
			if resp.ProtoMajor != 3 || !strings.Contains(body, "over HTTP/3") {
				t.Fatalf("h3: proto %s body %q", resp.Proto, body)
			}
		})
	}
}

// pebblePoP is a PoP with the pebble it gets certificates from.
type pebblePoP struct {
	*testPoP
	pebble *acmetest.Pebble
}

// newPoPForPebble binds the PoP first (ports are chosen by the OS), then
// starts pebble validating on those ports, then starts ACME.
func newPoPForPebble(t *testing.T, mk func(httpPort, tlsPort int) (*acmetest.Pebble, Options)) *pebblePoP {
	t.Helper()
	// The manager's options need pebble's URL and pebble's config needs the
	// PoP's ports: bind with a placeholder manager, then rebuild it.
	var pebble *acmetest.Pebble
	p := newPoPDeferred(t, func(httpPort, tlsPort int) Options {
		var o Options
		pebble, o = mk(httpPort, tlsPort)
		return o
	})
	p.start(t)
	return &pebblePoP{testPoP: p, pebble: pebble}
}

// TestTwoPoPsShareOneOrder: two PoPs with storage in one JetStream ask for
// the same name at the same time; one order is placed, both serve the same
// certificate, and the account and keys live in JetStream.
func TestTwoPoPsShareOneOrder(t *testing.T) {
	ns := testutil.StartNATS(t)
	var pebble *acmetest.Pebble
	mkStorage := func(owner string) *jsstorage.Storage {
		s, err := jsstorage.New(context.Background(), testutil.Connect(t, ns), jsstorage.Options{Owner: owner, LockTTL: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		return s
	}
	var logs testutil.SyncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	// Pebble validates on PoP a's ports; PoP b answers nothing itself.
	a := newPoPDeferred(t, func(httpPort, tlsPort int) Options {
		pebble = acmetest.Start(t, acmetest.Options{HTTPPort: httpPort, TLSPort: tlsPort})
		o := acmeOptions(pebble, mkStorage("pop-a"), "www.example.test")
		o.PoP = "pop-a"
		o.Logger = logger
		o.ACME.DisableTLSALPN01 = true
		return o
	})
	b := newPoPDeferred(t, func(int, int) Options {
		o := acmeOptions(pebble, mkStorage("pop-b"), "www.example.test")
		o.PoP = "pop-b"
		o.Logger = logger
		o.ACME.DisableTLSALPN01 = true
		return o
	})
	a.start(t)
	b.start(t)
	roots := pebble.IssuerRoots()
	for _, p := range []*testPoP{a, b} {
		eventually(t, 60*time.Second, "certificate served by "+p.m.opts.PoP, func() error {
			_, _, err := p.handshake("www.example.test", roots, nil)
			return err
		})
	}
	la, _, _ := a.handshake("www.example.test", roots, nil)
	lb, _, _ := b.handshake("www.example.test", roots, nil)
	if la.SerialNumber.Cmp(lb.SerialNumber) != 0 {
		t.Fatalf("PoPs serve different certificates: %x vs %x (two orders were placed)", la.SerialNumber, lb.SerialNumber)
	}
	obtained := a.counter("meridian_tls_acme_events_total", map[string]string{"event": "cert_obtained"}) +
		b.counter("meridian_tls_acme_events_total", map[string]string{"event": "cert_obtained"})
	if obtained != 1 {
		t.Fatalf("%v certificates obtained across the two PoPs, want exactly 1", obtained)
	}
	// The other PoP loaded the result from JetStream.
	loaded := a.counter("meridian_tls_acme_events_total", map[string]string{"event": "cached_managed_cert"}) +
		b.counter("meridian_tls_acme_events_total", map[string]string{"event": "cached_managed_cert"})
	if loaded < 2 {
		t.Fatalf("cached_managed_cert events = %v, want both PoPs to cache the certificate", loaded)
	}

	// The private key is in JetStream, and in no log line (debug included).
	st := a.m.opts.Storage
	keys, err := st.List(context.Background(), "certificates", true)
	if err != nil {
		t.Fatal(err)
	}
	var keyPEM []byte
	for _, k := range keys {
		if strings.HasSuffix(k, "www.example.test.key") {
			keyPEM, _ = st.Load(context.Background(), k)
		}
	}
	if !strings.Contains(string(keyPEM), "PRIVATE KEY") {
		t.Fatalf("no private key for www.example.test in JetStream storage (keys %v)", keys)
	}
	body := strings.Split(strings.TrimSpace(string(keyPEM)), "\n")[1]
	if out := logs.String(); strings.Contains(out, "PRIVATE KEY") || strings.Contains(out, body[:40]) {
		t.Fatal("a private key was logged")
	} else if !strings.Contains(out, "certificate obtained") {
		t.Fatalf("the log capture saw nothing (so proves nothing): %q", out[:min(len(out), 500)])
	}
}

// TestRenewalAndACMEDown: a short-lived certificate is renewed ahead of
// expiry; when the ACME server is then down at the next renewal, the
// current certificate keeps being served and the failed renewal is not
// retried at every check (certmagic's backoff: the next try is a minute
// later, far beyond this test's window).
func TestRenewalAndACMEDown(t *testing.T) {
	p := newPoPForPebble(t, func(httpPort, tlsPort int) (*acmetest.Pebble, Options) {
		pebble := acmetest.Start(t, acmetest.Options{HTTPPort: httpPort, TLSPort: tlsPort, Validity: 30 * time.Second})
		o := acmeOptions(pebble, &certmagic.FileStorage{Path: t.TempDir()}, "short.example.test")
		o.ACME.DisableTLSALPN01 = true
		o.ACME.RenewalWindowRatio = 0.5 // renew with 15s of 30s left
		return pebble, o
	})
	roots := p.pebble.IssuerRoots()
	var first []byte
	eventually(t, 60*time.Second, "first certificate", func() error {
		leaf, _, err := p.handshake("short.example.test", roots, nil)
		if err == nil {
			first = leaf.Raw
		}
		return err
	})
	eventually(t, 60*time.Second, "renewed certificate served", func() error {
		leaf, _, err := p.handshake("short.example.test", roots, nil)
		if err != nil {
			return err
		}
		if string(leaf.Raw) == string(first) {
			return fmt.Errorf("still the first certificate (not after %s)", leaf.NotAfter)
		}
		return nil
	})
	if n := p.counter("meridian_tls_acme_events_total", map[string]string{"event": "cert_obtained", "renewal": "true"}); n < 1 {
		t.Fatalf("renewals counted: %v", n)
	}
	current, _, _ := p.handshake("short.example.test", roots, nil)

	p.pebble.Stop()
	eventually(t, 30*time.Second, "renewal attempted while the ACME server is down", func() error {
		if n := p.counter("meridian_tls_acme_events_total", map[string]string{"event": "cert_failed", "renewal": "true"}); n < 1 {
			return fmt.Errorf("no failed renewal yet")
		}
		return nil
	})
	leaf, _, err := p.handshake("short.example.test", roots, nil)
	if err != nil {
		t.Fatalf("after a failed renewal the PoP must keep serving the current certificate: %v", err)
	}
	if string(leaf.Raw) != string(current.Raw) {
		t.Fatalf("served certificate changed while the ACME server was down")
	}
	attempts := p.counter("meridian_tls_acme_events_total", map[string]string{"event": "cert_obtaining", "renewal": "true"})
	time.Sleep(4 * time.Second) // four renewal checks
	if again := p.counter("meridian_tls_acme_events_total", map[string]string{"event": "cert_obtaining", "renewal": "true"}); again != attempts {
		t.Fatalf("renewal retried %v times within 4 checks of a failure: no backoff", again-attempts)
	}
}

// TestACMEWithoutStorageIsRefused: an ACME site with no storage configured
// is an error at construction that says what to set.
func TestACMEWithoutStorageIsRefused(t *testing.T) {
	_, err := New(Options{Sites: []SiteCert{{Site: "shop", Names: []string{"shop.example.test"}, ACME: true}}})
	wantErrContains(t, err, "no certificate storage", "tls.storage")
}

var _ http.Handler = okHandler

// TestOCSPStapling: a certificate naming an OCSP responder gets a fresh,
// signed "good" response stapled to the handshake, fetched by the PoP from
// the responder (certmagic's stapling), not by the client.
func TestOCSPStapling(t *testing.T) {
	responder := acmetest.StartOCSPResponder(t)
	p := newPoPForPebble(t, func(httpPort, tlsPort int) (*acmetest.Pebble, Options) {
		pebble := acmetest.Start(t, acmetest.Options{HTTPPort: httpPort, TLSPort: tlsPort, OCSPResponderURL: responder.URL})
		responder.Use(pebble)
		o := acmeOptions(pebble, &certmagic.FileStorage{Path: t.TempDir()}, "ocsp.example.test")
		o.ACME.DisableOCSPStapling = false
		o.ACME.DisableTLSALPN01 = true
		return pebble, o
	})
	roots := p.pebble.IssuerRoots()
	var cs tls.ConnectionState
	eventually(t, 60*time.Second, "certificate with a stapled OCSP response", func() error {
		var err error
		_, cs, err = p.handshake("ocsp.example.test", roots, nil)
		if err == nil && len(cs.OCSPResponse) == 0 {
			err = fmt.Errorf("handshake without a staple")
		}
		return err
	})
	issuer := cs.VerifiedChains[0][1]
	resp, err := ocsp.ParseResponseForCert(cs.OCSPResponse, cs.PeerCertificates[0], issuer)
	if err != nil {
		t.Fatalf("stapled OCSP response does not verify against the issuer: %v", err)
	}
	if resp.Status != ocsp.Good || resp.SerialNumber.Cmp(cs.PeerCertificates[0].SerialNumber) != 0 {
		t.Fatalf("staple: status %d serial %x", resp.Status, resp.SerialNumber)
	}
	if responder.Requests.Load() < 1 {
		t.Fatal("the responder was never asked")
	}
}

// TestSetSitesAddsACMESite: a config reload that adds an ACME site to a
// running PoP (which had only PEM sites) obtains and serves its certificate.
func TestSetSitesAddsACMESite(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	c, k, _ := certFiles(t, dir, "blog", []string{"blog.example.test"}, now.Add(-time.Hour), now.Add(24*time.Hour))
	blog := SiteCert{Site: "blog", Names: []string{"blog.example.test"}, CertFile: c, KeyFile: k}
	p := newPoPForPebble(t, func(httpPort, tlsPort int) (*acmetest.Pebble, Options) {
		pebble := acmetest.Start(t, acmetest.Options{HTTPPort: httpPort, TLSPort: tlsPort})
		o := acmeOptions(pebble, &certmagic.FileStorage{Path: t.TempDir()})
		o.Sites = []SiteCert{blog}
		return pebble, o
	})
	roots := p.pebble.IssuerRoots()
	if _, _, err := p.handshake("new.example.test", roots, nil); err == nil {
		t.Fatal("new.example.test served before it was configured")
	}
	if err := p.m.SetSites([]SiteCert{blog, {Site: "new", Names: []string{"new.example.test"}, ACME: true}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "certificate for the added site", func() error {
		_, _, err := p.handshake("new.example.test", roots, nil)
		return err
	})
	if _, _, err := p.handshake("blog.example.test", nil, nil); err != nil {
		t.Fatalf("the PEM site broke: %v", err)
	}
}
