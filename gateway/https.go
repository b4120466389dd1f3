package gateway

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"

	"github.com/meridian-edge/meridian/gateway/tlsedge"
	"github.com/prometheus/client_golang/prometheus"
)

// TLS is a PoP's HTTPS setup: where it listens, its certificates and the
// sites' HTTPS policies. The zero value serves plain HTTP only.
type TLS struct {
	// Addr is the HTTPS listen address (HTTP/1.1 and HTTP/2); empty: none.
	Addr string
	// HTTP3 serves HTTP/3 on Addr's port over UDP, advertised with Alt-Svc.
	HTTP3 bool
	// Certs selects certificates by SNI and answers ACME challenges; the PoP
	// starts and stops it.
	Certs *tlsedge.Manager
	// Policies are the sites' HSTS and HTTP→HTTPS redirect settings.
	Policies []tlsedge.SitePolicy
}

// startTLS binds HTTPS (and HTTP/3) and returns the handler for the plain
// HTTP listener, which answers ACME HTTP-01 challenges and redirects.
func (p *PoP) startTLS(ctx context.Context, base http.Handler) (http.Handler, error) {
	t := p.opts.TLS
	if t.Addr == "" || t.Certs == nil {
		return base, nil
	}
	// Redirects need the bound HTTPS port, known only after binding; the
	// secure handler is therefore set before the server accepts anything
	// real but after it binds.
	var secure http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		(*p.secure.Load()).ServeHTTP(w, r)
	})
	h3 := ""
	if t.HTTP3 {
		h3 = "same"
	}
	srv, err := tlsedge.NewServer(tlsedge.ServerOptions{
		Addr: t.Addr, HTTP3Addr: h3, TLSConfig: t.Certs.TLSConfig(), Handler: secure, Logger: p.log,
		WrapListener: p.proxyProtocol,
		Registerer:   prometheus.WrapRegistererWith(prometheus.Labels{"pop": p.opts.ID}, p.registry),
	})
	if err != nil {
		return nil, fmt.Errorf("gateway %s: https: %w", p.opts.ID, err)
	}
	// Until the policies are built, nothing is served over TLS.
	unavailable := http.Handler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "meridian: starting", http.StatusServiceUnavailable)
	}))
	p.secure.Store(&unavailable)
	if err := srv.Start(ctx); err != nil {
		return nil, fmt.Errorf("gateway %s: %w", p.opts.ID, err)
	}
	p.httpsSrv = srv
	httpsPort := portOf(srv.Addr())
	pol, err := tlsedge.NewPolicies(t.Policies, httpsPort)
	if err != nil {
		return nil, fmt.Errorf("gateway %s: %w", p.opts.ID, err)
	}
	// The policies apply inside base's chain (httpsPolicies), where a
	// redirect is logged, counted and carries the PoP's header fields.
	p.policies = pol
	wrapped := base
	p.secure.Store(&wrapped)
	t.Certs.ChallengePorts(portOf(p.httpLn.Addr().String()), httpsPort)
	if err := t.Certs.Start(ctx); err != nil {
		return nil, fmt.Errorf("gateway %s: certificates: %w", p.opts.ID, err)
	}
	return t.Certs.HTTPChallenge(wrapped), nil
}

func portOf(addr string) int {
	_, port, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(port)
	return n
}

// HTTPSAddr is the bound HTTPS address, or "" without HTTPS.
func (p *PoP) HTTPSAddr() string {
	if p.httpsSrv == nil {
		return ""
	}
	return p.httpsSrv.Addr()
}

// TLSSites is the part of a PoP's HTTPS setup that changes live (a config
// reload): its sites' certificates, the unknown-SNI answer and the sites'
// HTTPS policies. Listen addresses are not part of it: they need a restart.
type TLSSites struct {
	// Certs are the sites' certificates (Manager.PrepareSites).
	Certs []tlsedge.SiteCert
	// UnknownSNI and DefaultSite say what a handshake for no site's name gets.
	UnknownSNI  tlsedge.UnknownSNI
	DefaultSite string
	// Policies are the sites' HSTS and HTTP→HTTPS redirect settings.
	Policies []tlsedge.SitePolicy
}

// PrepareTLS checks a new HTTPS site set against the running PoP, reading
// every PEM file, and changes nothing: the returned apply swaps the
// certificates and then the policies in, each atomically, so a handshake or
// request sees either the old or the new set, never half of one. A PoP
// started without HTTPS accepts an empty set only (binding the HTTPS
// listener needs a restart).
func (p *PoP) PrepareTLS(s TLSSites) (apply func() error, err error) {
	if p.httpsSrv == nil || p.policies == nil || p.opts.TLS.Certs == nil {
		if len(s.Certs) > 0 {
			return nil, fmt.Errorf("gateway %s: HTTPS is not running (no https address, or no site had a certificate at start); restart to serve HTTPS for site %s", p.opts.ID, s.Certs[0].Site)
		}
		return func() error { return nil }, nil
	}
	if err := tlsedge.CheckPolicies(s.Policies); err != nil {
		return nil, fmt.Errorf("gateway %s: %w", p.opts.ID, err)
	}
	u, err := p.opts.TLS.Certs.PrepareSites(s.Certs, s.UnknownSNI, s.DefaultSite)
	if err != nil {
		return nil, fmt.Errorf("gateway %s: %w", p.opts.ID, err)
	}
	policies := slices.Clone(s.Policies)
	return func() error {
		// Certificates first: a host that becomes redirected to HTTPS has
		// its certificate by the time the redirect is sent.
		certErr := u.Apply()
		if err := p.policies.Set(policies); err != nil {
			return fmt.Errorf("gateway %s: %w", p.opts.ID, err) // checked above; not expected
		}
		if certErr != nil {
			return fmt.Errorf("gateway %s: %w", p.opts.ID, certErr)
		}
		return nil
	}, nil
}
