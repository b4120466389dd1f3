package stack

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/meridian-edge/meridian/gateway"
	"github.com/meridian-edge/meridian/gateway/tlsedge"
	"github.com/meridian-edge/meridian/gateway/tlsedge/devca"
	"github.com/meridian-edge/meridian/gateway/tlsedge/jsstorage"
	"github.com/meridian-edge/meridian/internal/config"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
)

// devCAFiles makes (or reuses) the dev CA's certificate for every site with
// tls.dev_ca, under data_dir/tls.
func devCAFiles(cfg *config.Config) (devca.Files, bool, error) {
	var names []string
	for _, s := range cfg.Sites {
		if s.TLS != nil && s.TLS.DevCA {
			names = append(names, s.Hosts...)
		}
	}
	if len(names) == 0 {
		return devca.Files{}, false, nil
	}
	f, err := devca.Ensure(filepath.Join(cfg.DataDir, "tls"), "meridian-dev", names)
	if err != nil {
		return f, false, fmt.Errorf("tls: dev CA: %w", err)
	}
	return f, true, nil
}

// popTLS builds a PoP's HTTPS setup; the zero TLS when the PoP has no https
// address or no site has a certificate.
func (s *Stack) popTLS(ctx context.Context, pc config.PoP, nc *nats.Conn, reg prometheus.Registerer, log *slog.Logger) (gateway.TLS, error) {
	cfg := s.cfg
	t := gateway.TLS{Addr: pc.HTTPS, HTTP3: pc.HTTP3}
	if pc.HTTPS == "" {
		return gateway.TLS{}, nil
	}
	var certs []tlsedge.SiteCert
	acme, defaultSite := false, ""
	for _, sc := range cfg.Sites {
		if sc.TLS == nil {
			continue
		}
		c := tlsedge.SiteCert{Site: sc.Name, Names: sc.Hosts, CertFile: sc.TLS.CertFile, KeyFile: sc.TLS.KeyFile, ACME: sc.TLS.ACME}
		if sc.TLS.DevCA {
			c.CertFile, c.KeyFile = s.devCA.Cert, s.devCA.Key
		}
		acme = acme || sc.TLS.ACME
		if sc.Default {
			defaultSite = sc.Name
		}
		certs = append(certs, c)
		t.Policies = append(t.Policies, tlsedge.SitePolicy{
			Names: sc.Hosts, RedirectHTTP: sc.TLS.RedirectHTTP,
			HSTS: tlsedge.HSTS{MaxAge: sc.TLS.HSTS.MaxAge, IncludeSubdomains: sc.TLS.HSTS.IncludeSubdomains, Preload: sc.TLS.HSTS.Preload},
		})
	}
	if len(certs) == 0 {
		return gateway.TLS{}, nil
	}
	opts := tlsedge.Options{
		PoP: pc.ID, Sites: certs, UnknownSNI: tlsedge.UnknownSNI(cfg.TLS.UnknownSNI), DefaultSite: defaultSite,
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
	s.certs = append(s.certs, m)
	return t, nil
}

// DevCA returns the dev CA's files when a site uses tls.dev_ca.
func (s *Stack) DevCA() (devca.Files, bool) { return s.devCA, s.devCA.CACert != "" }

// tlsChanged reports whether HTTPS settings differ; they need a restart.
func tlsChanged(a, b *config.Config) bool {
	key := func(c *config.Config) string {
		var sb strings.Builder
		fmt.Fprintf(&sb, "%+v|", c.TLS)
		for _, s := range c.Sites {
			if s.TLS != nil {
				fmt.Fprintf(&sb, "%s:%v:%+v|", s.Name, s.Hosts, *s.TLS)
			}
		}
		for _, p := range c.PoPs {
			fmt.Fprintf(&sb, "%s:%s:%v|", p.ID, p.HTTPS, p.HTTP3)
		}
		return sb.String()
	}
	return key(a) != key(b)
}
