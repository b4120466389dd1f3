package stack

import (
	"errors"
	"fmt"
	"strings"

	"github.com/meridian-edge/meridian/dnsrouter"
	"github.com/meridian-edge/meridian/gateway"
	"github.com/meridian-edge/meridian/internal/config"
)

// Reload applies a new configuration to the running components: sites and
// origins of every PoP, and the DNS zones, PoP list and geo data. What cannot
// change live (listen addresses, NATS, which PoPs run) is refused with the
// field named, and nothing is applied.
func (s *Stack) Reload(cfg *config.Config) error {
	if err := s.checkReloadable(cfg); err != nil {
		return err
	}
	// PEM certificates are re-read on SIGHUP too (they are also watched);
	// a broken file is refused and the old certificate kept.
	for _, m := range s.certs {
		if err := m.Reload(); err != nil {
			return fmt.Errorf("tls: %w", err)
		}
	}
	var dnsOpts dnsrouter.Options
	if s.dns != nil {
		next := &Stack{cfg: cfg, log: s.log, pops: s.pops}
		opts, err := next.DNSOptions()
		if err != nil {
			return err
		}
		opts.Registerer = nil
		dnsOpts = opts
	}
	// The new geo source is ours until the DNS server takes it.
	closeGeo := func() {
		if dnsOpts.Geo != nil {
			_ = dnsOpts.Geo.Close()
		}
	}
	built := map[string][]gateway.Site{}
	for _, id := range s.order {
		p := s.pops[id]
		sites, err := buildSites(cfg, p.originMetrics, p.log)
		if err != nil {
			closeGeo()
			return err
		}
		built[id] = sites
	}
	if s.dns != nil {
		if err := s.dns.Reload(dnsOpts); err != nil {
			closeGeo()
			return fmt.Errorf("dns: %w", err)
		}
	}
	for _, id := range s.order {
		if err := s.pops[id].SetSites(built[id]); err != nil {
			return fmt.Errorf("pop %s: %w", id, err)
		}
	}
	s.cfg = cfg
	return nil
}

func (s *Stack) checkReloadable(cfg *config.Config) error {
	old := s.cfg
	if tlsChanged(old, cfg) {
		return errors.New("HTTPS settings (tls, sites[].tls, pops[].https) cannot change live yet; restart to apply (changed PEM files are picked up by themselves)")
	}
	if (old.NATS.Embedded == nil) != (cfg.NATS.Embedded == nil) || strings.Join(old.NATS.URLs, ",") != strings.Join(cfg.NATS.URLs, ",") {
		return errors.New("nats cannot change live; restart to apply")
	}
	for _, id := range s.order {
		o, n := popByID(old, id), popByID(cfg, id)
		if n == nil {
			return fmt.Errorf("PoP %s was removed; removing a running PoP needs a restart", id)
		}
		if o.HTTP != n.HTTP || o.Admin != n.Admin {
			return fmt.Errorf("pops %s: http and admin addresses cannot change live; restart to apply", id)
		}
	}
	if s.dns != nil {
		if cfg.DNS == nil {
			return errors.New("dns: the section was removed; restart to stop the DNS server")
		}
		if cfg.DNS.Listen != old.DNS.Listen || cfg.DNS.Metrics != old.DNS.Metrics {
			return errors.New("dns.listen and dns.metrics cannot change live; restart to apply")
		}
	}
	return nil
}

func popByID(cfg *config.Config, id string) *config.PoP {
	for i := range cfg.PoPs {
		if cfg.PoPs[i].ID == id {
			return &cfg.PoPs[i]
		}
	}
	return nil
}
