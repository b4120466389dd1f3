package stack

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/meridian-edge/meridian/dnsrouter"
	"github.com/meridian-edge/meridian/gateway"
	"github.com/meridian-edge/meridian/internal/config"
)

// Reload applies a new configuration to the running components: sites and
// origins of every PoP, their HTTPS (adding or removing a TLS site, its
// hosts, certificate files, dev_ca, acme, redirect_http and hsts, and
// tls.unknown_sni), the admin tokens, each PoP's proxy_protocol and real_ip
// (the balancers and proxies trusted to name clients), and the DNS zones,
// PoP list and geo data. Every PEM file is read again, as SIGHUP promises.
// It is all or nothing: everything is built and checked first (certificates loaded and
// matched to their hosts, policies, origins, tokens, DNS), and only then
// swapped in, each part atomically,
// so in-flight handshakes and requests finish on the old set. What cannot
// change live (listen addresses including pops[].https and http3, tls.acme,
// NATS, which PoPs run) is refused with the field named, and nothing is
// applied; a refused reload leaves every certificate in service.
//
// The one thing done before the reload is known to succeed: a dev_ca site's
// new host makes the dev CA issue its certificate again, for the old hosts
// too, so the running set still finds its own in the file.
func (s *Stack) Reload(cfg *config.Config) error {
	if err := s.checkReloadable(cfg); err != nil {
		return err
	}
	creds, err := credentials(cfg)
	if err != nil {
		return err
	}
	dev, err := s.reloadDevCA(cfg)
	if err != nil {
		return err
	}
	applyTLS := make([]func() error, 0, len(s.order))
	sites, _ := tlsSites(cfg, dev) // the same for every PoP that serves HTTPS
	for _, id := range s.order {
		var ts gateway.TLSSites
		if popByID(cfg, id).HTTPS != "" {
			ts = sites
		}
		apply, err := s.pops[id].PrepareTLS(ts)
		if err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		applyTLS = append(applyTLS, apply)
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
	clientAddr := make([]func(), 0, len(s.order))
	for _, id := range s.order {
		apply, err := s.clientAddrChanges(id, popByID(cfg, id))
		if err != nil {
			closeGeo()
			return fmt.Errorf("pops %s: %w", id, err)
		}
		clientAddr = append(clientAddr, apply)
	}
	built := map[string][]gateway.Site{}
	// A refused reload lets go of the origin pools it built (their idle
	// connections); they never served.
	refuse := func(err error) error {
		closeGeo()
		for _, sites := range built {
			for _, site := range sites {
				site.Origin.Close()
			}
		}
		return err
	}
	for _, id := range s.order {
		p := s.pops[id]
		sites, err := buildSites(cfg, p.originMetrics, p.log)
		if err != nil {
			return refuse(err)
		}
		built[id] = sites
	}
	if s.dns != nil {
		if err := s.dns.Reload(dnsOpts); err != nil {
			return refuse(fmt.Errorf("dns: %w", err))
		}
	}
	for i, apply := range applyTLS {
		// Only a refusal of certmagic to manage a new ACME name gets here,
		// after the swap: the other names serve, so the reload goes on.
		if err := apply(); err != nil {
			s.log.Error("reload: ACME management of new names failed; they stay without a certificate until a restart", "pop", s.order[i], "err", err)
		}
	}
	for _, id := range s.order {
		if err := s.pops[id].SetSites(built[id]); err != nil {
			return fmt.Errorf("pop %s: %w", id, err)
		}
		// With the sites: a new site's owner token works once it is served.
		s.pops[id].SetCredentials(creds)
	}
	for _, apply := range clientAddr {
		apply()
	}
	s.creds.Store(&creds)
	s.cfg = cfg
	s.setSiteNames(cfg)
	s.devCA = dev
	return nil
}

// checkReloadable refuses, naming the field, a config that changes what
// only a restart can: pops[].https and http3 and tls.acme (see
// tlsRestartNeeded), nats, a running PoP's removal or its http and admin
// addresses, and dns.listen and dns.metrics (or dropping dns). Sites,
// including their tls blocks, are checked later, by building them.
func (s *Stack) checkReloadable(cfg *config.Config) error {
	old := s.cfg
	if err := tlsRestartNeeded(old, cfg); err != nil {
		return err
	}
	if o, n := old.Plugins, cfg.Plugins; o.Engine != n.Engine || o.Timeout != n.Timeout || o.Memory != n.Memory || !slices.Equal(o.SDKSites, n.SDKSites) {
		return errors.New("plugins (engine, sdk_sites, timeout, memory) cannot change live: every PoP's plugin host is set up with them at start; restart to apply")
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
		if err := popRestartNeeded(o, n); err != nil {
			return fmt.Errorf("pops %s: %w", id, err)
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

// clientAddrChanges checks a running PoP's new proxy_protocol and real_ip
// sections and returns what applies them, logging each change: both swap
// their trust lists atomically (connections and requests already under
// way finish under the old ones). Turning proxy_protocol on needs no
// restart either: the listeners are always wrapped, and pass connections
// through untouched while nothing is trusted.
func (s *Stack) clientAddrChanges(id string, n *config.PoP) (func(), error) {
	o := popByID(s.cfg, id)
	p := s.pops[id]
	pp, ri := proxyProtocol(n.ProxyProtocol), realIP(n.RealIP)
	if err := pp.Validate(); err != nil {
		return nil, fmt.Errorf("proxy_protocol: %w", err)
	}
	if err := ri.Validate(); err != nil {
		return nil, fmt.Errorf("real_ip: %w", err)
	}
	if len(pp.Trusted) > 0 && n.HTTP3 {
		return nil, errors.New("proxy_protocol cannot be used with http3; set http3: false")
	}
	ppChanged := !reflect.DeepEqual(o.ProxyProtocol, n.ProxyProtocol)
	riChanged := !reflect.DeepEqual(o.RealIP, n.RealIP)
	return func() {
		if ppChanged {
			if err := p.SetProxyProtocol(pp); err != nil {
				p.log.Error("reload: proxy_protocol not applied", "err", err) // checked above; not expected
			} else {
				p.log.Info("reload: proxy_protocol applied to new connections", "trusted", pp.Trusted, "required", pp.Required)
			}
		}
		if riChanged {
			if err := p.SetRealIP(ri); err != nil {
				p.log.Error("reload: real_ip not applied", "err", err)
			} else {
				p.log.Info("reload: real_ip applied", "trusted", ri.Trusted, "header", ri.Header)
			}
		}
	}, nil
}

func popByID(cfg *config.Config, id string) *config.PoP {
	for i := range cfg.PoPs {
		if cfg.PoPs[i].ID == id {
			return &cfg.PoPs[i]
		}
	}
	return nil
}

// popRestartNeeded names a setting of a running PoP that differs between o
// and n and is only read when the PoP starts: its cache tiers (which hold
// open files, memory reservations and connections), the fast hit path, and
// its region (in its beacons, its plugins' requests and its L3 prefix).
// (Capacity does change live: the DNS reads it from the configuration; so
// do proxy_protocol and real_ip, see clientAddrChanges.) A
// reload that said "reloaded" while the old values stayed in force would
// mislead.
func popRestartNeeded(o, n *config.PoP) error {
	for _, f := range []struct {
		name string
		same bool
	}{
		{"region", o.Region == n.Region},
		{"fast_hits", (o.FastHits == nil || *o.FastHits) == (n.FastHits == nil || *n.FastHits)},
		{"cache.l1_size", o.Cache.L1Size == n.Cache.L1Size},
		{"cache.l1_large_bodies", reflect.DeepEqual(o.Cache.L1LargeBodies, n.Cache.L1LargeBodies)},
		{"cache.l2", reflect.DeepEqual(o.Cache.L2, n.Cache.L2)},
		{"cache.l3", reflect.DeepEqual(o.Cache.L3, n.Cache.L3)},
	} {
		if !f.same {
			return fmt.Errorf("%s cannot change live (it is set up when the PoP starts); restart to apply", f.name)
		}
	}
	return nil
}
