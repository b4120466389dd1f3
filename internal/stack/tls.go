package stack

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"

	"github.com/meridian-edge/meridian/gateway"
	"github.com/meridian-edge/meridian/gateway/tlsedge"
	"github.com/meridian-edge/meridian/gateway/tlsedge/devca"
	"github.com/meridian-edge/meridian/gateway/tlsedge/jsstorage"
	"github.com/meridian-edge/meridian/internal/config"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
)

// devCALabel names the dev CA's server certificate files under data_dir/tls.
const devCALabel = "meridian-dev"

// devCANames are the hosts of every site with tls.dev_ca.
func devCANames(cfg *config.Config) []string {
	var names []string
	for _, s := range cfg.Sites {
		if s.TLS != nil && s.TLS.DevCA {
			names = append(names, s.Hosts...)
		}
	}
	return names
}

// devCAFiles makes (or reuses) the dev CA's certificate for every site with
// tls.dev_ca, under data_dir/tls.
func devCAFiles(cfg *config.Config) (devca.Files, bool, error) {
	names := devCANames(cfg)
	if len(names) == 0 {
		return devca.Files{}, false, nil
	}
	f, err := devca.Ensure(filepath.Join(cfg.DataDir, "tls"), devCALabel, names)
	if err != nil {
		return f, false, fmt.Errorf("tls: dev CA: %w", err)
	}
	return f, true, nil
}

// reloadDevCA returns the dev CA files for cfg, a reload of the running
// config. When cfg's dev_ca sites name a host the current certificate was
// not asked for, it is issued again by the same CA for the hosts of both
// configs: the files are replaced before the reload is known to succeed,
// and the running certificate set (and its file watcher) must still find
// its own hosts in them if the reload is refused. Otherwise the files are
// left alone, so that a certificate put there by hand survives SIGHUP.
func (s *Stack) reloadDevCA(cfg *config.Config) (devca.Files, error) {
	names := devCANames(cfg)
	if len(names) == 0 || len(s.order) == 0 {
		return s.devCA, nil
	}
	old := devCANames(s.cfg)
	if s.devCA.Cert != "" && cfg.DataDir == s.cfg.DataDir {
		missing := false
		for _, n := range names {
			missing = missing || !slices.Contains(old, n)
		}
		if !missing {
			return s.devCA, nil
		}
	}
	all := names
	if cfg.DataDir == s.cfg.DataDir {
		for _, n := range old {
			if !slices.Contains(all, n) {
				all = append(all, n)
			}
		}
	}
	f, err := devca.Ensure(filepath.Join(cfg.DataDir, "tls"), devCALabel, all)
	if err != nil {
		return devca.Files{}, fmt.Errorf("tls: dev CA: %w", err)
	}
	return f, nil
}

// tlsSites is what a PoP with an https address serves: every site with a
// tls block, its certificate source and policies. A dev_ca site takes the
// dev CA's files.
func tlsSites(cfg *config.Config, dev devca.Files) (sites gateway.TLSSites, acme bool) {
	sites.UnknownSNI = tlsedge.UnknownSNI(cfg.TLS.UnknownSNI)
	for _, sc := range cfg.Sites {
		if sc.TLS == nil {
			continue
		}
		c := tlsedge.SiteCert{Site: sc.Name, Names: slices.Clone(sc.Hosts), CertFile: sc.TLS.CertFile, KeyFile: sc.TLS.KeyFile, ACME: sc.TLS.ACME}
		if sc.TLS.DevCA {
			c.CertFile, c.KeyFile = dev.Cert, dev.Key
		}
		acme = acme || sc.TLS.ACME
		if sc.Default {
			sites.DefaultSite = sc.Name
		}
		sites.Certs = append(sites.Certs, c)
		sites.Policies = append(sites.Policies, tlsedge.SitePolicy{
			Names: slices.Clone(sc.Hosts), RedirectHTTP: sc.TLS.RedirectHTTP,
			HSTS: tlsedge.HSTS{MaxAge: sc.TLS.HSTS.MaxAge, IncludeSubdomains: sc.TLS.HSTS.IncludeSubdomains, Preload: sc.TLS.HSTS.Preload},
		})
	}
	return sites, acme
}

// popTLS builds a PoP's HTTPS setup; the zero TLS when the PoP has no https
// address or no site has a certificate.
func (s *Stack) popTLS(ctx context.Context, pc config.PoP, nc *nats.Conn, reg prometheus.Registerer, log *slog.Logger) (gateway.TLS, error) {
	cfg := s.cfg
	t := gateway.TLS{Addr: pc.HTTPS, HTTP3: pc.HTTP3}
	if pc.HTTPS == "" {
		return gateway.TLS{}, nil
	}
	ts, acme := tlsSites(cfg, s.devCA)
	certs := ts.Certs
	t.Policies = ts.Policies
	if len(certs) == 0 {
		return gateway.TLS{}, nil
	}
	opts := tlsedge.Options{
		PoP: pc.ID, Sites: certs, UnknownSNI: ts.UnknownSNI, DefaultSite: ts.DefaultSite,
		Logger: log, Registerer: reg,
	}
	if acme {
		storage, err := jsstorage.New(ctx, nc, jsstorage.Options{Owner: pc.ID, Replicas: cfg.NATS.StreamReplicas, Logger: log})
		if err != nil {
			return t, fmt.Errorf("pop %s: certificate storage: %w", pc.ID, err)
		}
		s.closers = append(s.closers, func() error { storage.Close(); return nil })
		opts.Storage = storage
		opts.ACME = tlsedge.ACME{DirectoryURL: cfg.TLS.ACME.Directory, Email: cfg.TLS.ACME.Email}
		if f := cfg.TLS.ACME.CAFile; f != "" {
			pem, err := os.ReadFile(f)
			if err != nil {
				return t, fmt.Errorf("tls.acme.ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return t, fmt.Errorf("tls.acme.ca_file: %s holds no PEM certificate", f)
			}
			opts.ACME.TrustedRoots = pool
		}
	}
	m, err := tlsedge.New(opts)
	if err != nil {
		return t, fmt.Errorf("pop %s: %w", pc.ID, err)
	}
	t.Certs = m
	return t, nil
}

// DevCA returns the dev CA's files when a site uses tls.dev_ca.
func (s *Stack) DevCA() (devca.Files, bool) { return s.devCA, s.devCA.CACert != "" }

// tlsRestartNeeded names the HTTPS settings that differ between the running
// config and cfg and cannot change live, or returns nil. Everything per site
// (adding or removing a TLS site, its hosts, cert_file/key_file, dev_ca,
// acme, redirect_http, hsts) and tls.unknown_sni change live; these do not:
//
//   - pops[].https and pops[].http3: the listeners are bound at start, and a
//     PoP's HTTP/3 socket and Alt-Svc advertisement are tied to them.
//   - tls.acme (directory, email, ca_file): the ACME account and issuer are
//     built once and shared by every managed name's renewals and by orders
//     already under way; swapping them live would leave those on the old
//     account and mix certificates of two CAs in one cache.
func tlsRestartNeeded(old, cfg *config.Config) error {
	oa, na := old.TLS.ACME, cfg.TLS.ACME
	for _, f := range []struct{ name, a, b string }{
		{"directory", oa.Directory, na.Directory}, {"email", oa.Email, na.Email}, {"ca_file", oa.CAFile, na.CAFile},
	} {
		if f.a != f.b {
			return fmt.Errorf("tls.acme.%s cannot change live (the ACME account and issuer are set up at start and renew every certificate); restart to apply", f.name)
		}
	}
	for _, o := range old.PoPs {
		n := popByID(cfg, o.ID)
		if n == nil {
			continue // a PoP not run here may go; checkReloadable refuses one that runs
		}
		if o.HTTPS != n.HTTPS {
			return fmt.Errorf("pops %s: https cannot change live (%q -> %q: the listener is bound at start); restart to apply", o.ID, o.HTTPS, n.HTTPS)
		}
		if o.HTTP3 != n.HTTP3 {
			return fmt.Errorf("pops %s: http3 cannot change live (%v -> %v: the UDP listener is bound at start); restart to apply", o.ID, o.HTTP3, n.HTTP3)
		}
	}
	return nil
}
