// Package stack turns a validated configuration into running components:
// the embedded NATS server, the demo origin, PoPs and the DNS server. The
// `dev`, `pop` and `dns` commands differ only in which roles they ask for.
//
// Start binds every listener before it returns, and on any failure stops what
// it had started, so a bad address never leaves a half-started stack.
package stack

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/meridian-edge/meridian/dnsrouter"
	"github.com/meridian-edge/meridian/dnsrouter/geo"
	"github.com/meridian-edge/meridian/dnsrouter/region"
	"github.com/meridian-edge/meridian/gateway"
	"github.com/meridian-edge/meridian/gateway/cache"
	"github.com/meridian-edge/meridian/gateway/origin"
	"github.com/meridian-edge/meridian/gateway/tlsedge"
	"github.com/meridian-edge/meridian/gateway/tlsedge/devca"
	"github.com/meridian-edge/meridian/gateway/tlsedge/origintls"
	"github.com/meridian-edge/meridian/internal/config"
	"github.com/meridian-edge/meridian/internal/demoorigin"
	"github.com/meridian-edge/meridian/internal/natsembed"
	"github.com/meridian-edge/meridian/internal/s3embed"
	"github.com/meridian-edge/meridian/internal/statesync"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Roles selects what a process runs.
type Roles struct {
	// PoPs lists the PoP ids to run; All runs every PoP of the file.
	PoPs []string
	// AllPoPs runs every PoP in the file.
	AllPoPs bool
	// DNS runs the DNS server (the file must have a dns section).
	DNS bool
	// DemoOrigin runs the demo origin at dev.origin.
	DemoOrigin bool
}

// Stack is a set of running components.
type Stack struct {
	cfg    *config.Config
	log    *slog.Logger
	nats   *natsembed.Server
	conns  []*nats.Conn
	origin *demoorigin.Origin
	srvs   []*http.Server
	pops   map[string]*runningPoP
	order  []string
	nodes  []*statesync.Node
	caches []*cache.Cache
	// stores close the cache tiers, after the caches.
	stores []func() error
	s3     *s3embed.Server
	// closers run last at shutdown, after the components that use them.
	closers []func() error
	devCA   devca.Files
	certs   []*tlsedge.Manager
	// geo locates clients for the PoPs' plugins (from dns.geo).
	geo    geo.Source
	dns    *dnsrouter.Server
	dnsReg *prometheus.Registry
}

// Start runs the roles of cfg. ctx bounds the start and the components' lives.
func Start(ctx context.Context, cfg *config.Config, roles Roles, log *slog.Logger) (*Stack, error) {
	s := &Stack{cfg: cfg, log: log, pops: map[string]*runningPoP{}}
	if err := s.start(ctx, roles); err != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(sctx)
		return nil, err
	}
	return s, nil
}

func (s *Stack) start(ctx context.Context, roles Roles) error {
	cfg := s.cfg
	if e := cfg.NATS.Embedded; e != nil {
		srv, err := natsembed.Start(natsembed.Options{Addr: e.Listen, StoreDir: filepath.Join(cfg.DataDir, "nats"), ServerName: "meridian-embedded"})
		if err != nil {
			return err
		}
		s.nats = srv
		s.log.Info("embedded NATS serving", "url", srv.ClientURL(), "store", filepath.Join(cfg.DataDir, "nats"))
	}
	if roles.DemoOrigin {
		addr := cfg.Dev.Origin
		if addr == "" {
			addr = config.DefaultDevOrigin
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("demo origin: listen %s: %w", addr, err)
		}
		s.origin = demoorigin.New()
		srv := &http.Server{Handler: s.origin, ReadHeaderTimeout: 10 * time.Second}
		s.srvs = append(s.srvs, srv)
		go func() { _ = srv.Serve(ln) }()
		s.log.Info("demo origin serving", "addr", ln.Addr().String())
	}
	if (roles.AllPoPs || len(roles.PoPs) > 0) && cfg.DNS != nil {
		src, err := geoSource(cfg.DNS.Geo)
		if err != nil {
			return err
		}
		if src != nil {
			s.geo = src
			s.closers = append(s.closers, src.Close)
		}
	}
	if roles.AllPoPs || len(roles.PoPs) > 0 {
		f, ok, err := devCAFiles(cfg)
		if err != nil {
			return err
		}
		if ok {
			s.devCA = f
		}
	}
	if roles.AllPoPs || len(roles.PoPs) > 0 {
		var run []config.PoP
		for _, pc := range cfg.PoPs {
			if roles.AllPoPs || slices.Contains(roles.PoPs, pc.ID) {
				run = append(run, pc)
			}
		}
		if err := s.startEmbeddedS3(run); err != nil {
			return err
		}
	}
	want := map[string]bool{}
	for _, id := range roles.PoPs {
		want[id] = true
	}
	for _, pc := range cfg.PoPs {
		if !roles.AllPoPs && !want[pc.ID] {
			continue
		}
		delete(want, pc.ID)
		if err := s.startPoP(ctx, pc); err != nil {
			return err
		}
	}
	for id := range want {
		return fmt.Errorf("no PoP %q in the configuration", id)
	}
	if roles.DNS {
		if cfg.DNS == nil {
			return errors.New("the configuration has no dns section")
		}
		if err := s.startDNS(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Connect opens a NATS connection as the configuration says (the embedded
// server when there is one), for tools such as `meridian state`.
func Connect(cfg *config.Config, name string) (*nats.Conn, error) {
	s := &Stack{cfg: cfg, log: slog.New(slog.DiscardHandler)}
	if e := cfg.NATS.Embedded; e != nil {
		s.cfg = &config.Config{NATS: config.NATS{URLs: []string{"nats://" + e.Listen}, Credentials: cfg.NATS.Credentials}}
	}
	return s.connect(name)
}

func (s *Stack) connect(name string) (*nats.Conn, error) {
	urls := s.cfg.NATS.URLs
	if s.nats != nil {
		urls = []string{s.nats.ClientURL()}
	}
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				s.log.Warn("NATS connection lost; serving on, reconnecting", "client", name, "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { s.log.Info("NATS reconnected", "client", name, "url", c.ConnectedUrlRedacted()) }),
	}
	if s.cfg.NATS.Credentials != "" {
		opts = append(opts, nats.UserCredentials(s.cfg.NATS.Credentials))
	}
	if t := s.cfg.NATS.TLS; t.CAFile != "" {
		opts = append(opts, nats.RootCAs(t.CAFile))
	}
	if t := s.cfg.NATS.TLS; t.CertFile != "" {
		opts = append(opts, nats.ClientCert(t.CertFile, t.KeyFile))
	}
	nc, err := nats.Connect(strings.Join(urls, ","), opts...)
	if err != nil {
		redacted := make([]string, len(urls))
		for i, u := range urls {
			redacted[i] = config.RedactURL(u)
		}
		return nil, fmt.Errorf("nats: connect %s as %s: %w", strings.Join(redacted, ","), name, err)
	}
	if nc.ConnectedUrl() != "" {
		s.log.Debug("NATS connected", "client", name, "url", nc.ConnectedUrlRedacted())
	}
	s.conns = append(s.conns, nc)
	return nc, nil
}

func (s *Stack) beaconInterval() time.Duration {
	if s.cfg.DNS != nil {
		return s.cfg.DNS.Health.BeaconInterval
	}
	return config.DefaultBeaconInterval
}

// runningPoP is a PoP and what was built for it.
type runningPoP struct {
	*gateway.PoP
	originMetrics *origin.Metrics
	log           *slog.Logger
}

func buildSites(cfg *config.Config, metrics *origin.Metrics, log *slog.Logger) ([]gateway.Site, error) {
	var sites []gateway.Site
	for _, sc := range cfg.Sites {
		var servers []origin.Server
		for _, o := range sc.Origins {
			u, err := url.Parse(o.URL)
			if err != nil {
				return nil, fmt.Errorf("site %s: origin %s: %w", sc.Name, o.URL, err)
			}
			servers = append(servers, origin.Server{Name: o.Name, URL: u, HostHeader: o.HostHeader})
		}
		var tlsConf *tls.Config
		if ot := sc.OriginTLS; ot.ServerName != "" || ot.CAFile != "" || ot.ClientCertFile != "" || len(ot.PinSHA256) > 0 || ot.InsecureSkipVerify {
			c, err := origintls.Config(origintls.Options{
				ServerName: ot.ServerName, CAFile: ot.CAFile, InsecureSkipVerify: ot.InsecureSkipVerify,
				ClientCertFile: ot.ClientCertFile, ClientKeyFile: ot.ClientKeyFile, PinSHA256: ot.PinSHA256,
			})
			if err != nil {
				return nil, fmt.Errorf("site %s: origin_tls: %w", sc.Name, err)
			}
			tlsConf = c
		}
		pool, err := origin.New(origin.Options{
			Site: sc.Name, Servers: servers, TLS: tlsConf,
			ConnectTimeout: sc.Timeouts.Connect, HeaderTimeout: sc.Timeouts.Header, TotalTimeout: sc.Timeouts.Total,
			Logger: log, Metrics: metrics,
		})
		if err != nil {
			return nil, err
		}
		sites = append(sites, gateway.Site{
			Name: sc.Name, Hosts: sc.Hosts, Default: sc.Default, Origin: pool,
			Cache: cache.SitePolicy{SiteID: sc.Name, IgnoreQuery: sc.Cache.IgnoreQuery, SortQuery: sc.Cache.SortQuery, MaxObject: int64(sc.Cache.MaxL1Object)},
		})
	}
	return sites, nil
}

func (s *Stack) startPoP(ctx context.Context, pc config.PoP) error {
	log := s.log.With("pop", pc.ID)
	reg := prometheus.NewRegistry()
	metrics := origin.NewMetrics(reg)
	sites, err := buildSites(s.cfg, metrics, log)
	if err != nil {
		return err
	}
	nc, err := s.connect("pop-" + pc.ID)
	if err != nil {
		return err
	}
	creds, err := credentials(s.cfg)
	if err != nil {
		return err
	}
	node, err := statesync.Open(ctx, statesync.Options{
		NodeID: pc.ID, Conn: nc, DataDir: filepath.Join(s.cfg.DataDir, "pops", pc.ID, "sync"),
		Stream: "MERIDIAN_SYNC", StreamReplicas: s.cfg.NATS.StreamReplicas,
		Logger: s.log, Registerer: reg,
	})
	if err != nil {
		return fmt.Errorf("pop %s: state sync: %w", pc.ID, err)
	}
	s.nodes = append(s.nodes, node)
	store, closeStore, err := s.cacheStore(pc, reg, log)
	if err != nil {
		return err
	}
	c, err := cache.New(cache.Options{
		Store:   store,
		L1Bytes: int64(pc.Cache.L1Size), PoPID: "meridian-" + pc.ID, Logger: log, Registerer: reg,
		PurgeCheck: func(site, url string, keys []string, storedAt time.Time) (bool, bool) {
			v := node.CheckPurged(site, url, keys, storedAt)
			return v.Purged, v.Stale
		},
	})
	if err != nil {
		if closeStore != nil {
			_ = closeStore()
		}
		return fmt.Errorf("pop %s: cache: %w", pc.ID, err)
	}
	s.caches = append(s.caches, c)
	if closeStore != nil {
		s.stores = append(s.stores, closeStore)
	}
	tls, err := s.popTLS(ctx, pc, nc, reg, log)
	if err != nil {
		return err
	}
	pluginMW, adminRoutes, err := s.startPlugins(ctx, pc, nc, node, creds, reg, log)
	if err != nil {
		return err
	}
	p, err := gateway.New(gateway.Options{
		Plugins: pluginMW, AdminRoutes: adminRoutes,
		TLS: tls, Cache: c, Sync: node, Credentials: creds,
		ID: pc.ID, Region: pc.Region, HTTPAddr: pc.HTTP, AdminAddr: pc.Admin,
		Sites: sites, Capacity: pc.Capacity, NATS: nc, BeaconInterval: s.beaconInterval(),
		Logger: s.log, Registry: reg,
	})
	if err != nil {
		return err
	}
	if err := p.Start(ctx); err != nil {
		return err
	}
	s.pops[pc.ID] = &runningPoP{PoP: p, originMetrics: metrics, log: log}
	s.order = append(s.order, pc.ID)
	return nil
}

func credentials(cfg *config.Config) (gateway.Credentials, error) {
	owners := map[string]string{}
	for _, sc := range cfg.Sites {
		owners[sc.Name] = sc.OwnerTokenSHA256
	}
	return gateway.NewCredentials(cfg.Admin.OpsTokenSHA256, owners)
}

// healthURL is where the DNS probes a PoP: its bound admin address when
// this process runs it, else the configured one.
func (s *Stack) healthURL(pc config.PoP) string {
	addr := pc.Admin
	if p, ok := s.pops[pc.ID]; ok {
		addr = p.AdminAddr()
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		if len(pc.Addresses) == 0 {
			return ""
		}
		host = pc.Addresses[0]
	}
	return "http://" + net.JoinHostPort(host, port) + "/healthz"
}

// DNSOptions maps the configuration onto the DNS server's options.
func (s *Stack) DNSOptions() (dnsrouter.Options, error) {
	d := s.cfg.DNS
	secs := func(t time.Duration) uint32 { return uint32(t / time.Second) }
	opts := dnsrouter.Options{
		DefaultRegion:  d.Geo.DefaultRegion,
		Answers:        d.Answers,
		BeaconInterval: d.Health.BeaconInterval,
		MissedBeacons:  d.Health.MissedBeacons,
		ProbeInterval:  d.Health.ProbeInterval,
		QueryLogSample: d.QueryLogSample,
		RRL: dnsrouter.RRLOptions{
			ResponsesPerSecond: d.RRL.ResponsesPerSecond,
			Slip:               d.RRL.Slip,
			NoSlip:             d.RRL.NoSlip,
			IPv4PrefixLen:      d.RRL.IPv4Prefix,
			IPv6PrefixLen:      d.RRL.IPv6Prefix,
		},
		Logger: s.log.With("component", "dns"),
	}
	for _, z := range d.Zones {
		zone := dnsrouter.Zone{
			Apex: z.Apex, Names: z.Names, Aliases: z.Aliases, TTL: secs(z.TTL),
			SOA: dnsrouter.SOA{
				MName: z.SOA.MName, RName: z.SOA.RName, Serial: z.SOA.Serial,
				Refresh: secs(z.SOA.Refresh), Retry: secs(z.SOA.Retry), Expire: secs(z.SOA.Expire),
				Minimum: secs(z.SOA.Minimum), TTL: secs(z.SOA.TTL),
			},
		}
		for _, ns := range z.NS {
			n := dnsrouter.NameServer{Name: ns.Name}
			for _, a := range ns.Addresses {
				n.Addrs = append(n.Addrs, netip.MustParseAddr(a))
			}
			zone.NS = append(zone.NS, n)
		}
		opts.Zones = append(opts.Zones, zone)
	}
	for _, pc := range s.cfg.PoPs {
		p := dnsrouter.PoP{ID: pc.ID, Region: pc.Region, Capacity: pc.Capacity, HealthURL: s.healthURL(pc)}
		if pc.Lat != nil && pc.Lon != nil {
			p.Lat, p.Lon = *pc.Lat, *pc.Lon
		}
		for _, a := range pc.Addresses {
			ip := netip.MustParseAddr(a).Unmap()
			if ip.Is4() {
				p.IPv4 = append(p.IPv4, ip)
			} else {
				p.IPv6 = append(p.IPv6, ip)
			}
		}
		opts.PoPs = append(opts.PoPs, p)
	}
	src, err := geoSource(d.Geo)
	if err != nil {
		return opts, err
	}
	opts.Geo = src
	return opts, nil
}

func geoSource(g config.Geo) (geo.Source, error) {
	var entries []geo.Entry
	for _, e := range g.Table {
		loc := geo.Location{}
		if e.Region != "" {
			r, _ := region.Lookup(e.Region)
			loc = geo.Location{Lat: r.Lat, Lon: r.Lon}
		} else {
			loc = geo.Location{Lat: *e.Lat, Lon: *e.Lon}
		}
		entries = append(entries, geo.Entry{Prefix: netip.MustParsePrefix(e.CIDR), Loc: loc})
	}
	var sources []geo.Source
	if len(entries) > 0 {
		t, err := geo.NewTable("config dns.geo.table", entries)
		if err != nil {
			return nil, err
		}
		sources = append(sources, t)
	}
	if g.MMDB != "" {
		m, err := geo.OpenMMDB(g.MMDB)
		if err != nil {
			return nil, fmt.Errorf("dns.geo.mmdb: %w", err)
		}
		sources = append(sources, m)
	}
	switch len(sources) {
	case 0:
		return nil, nil
	case 1:
		return sources[0], nil
	}
	return geo.Chain(sources...), nil
}

func (s *Stack) startDNS(ctx context.Context) error {
	opts, err := s.DNSOptions()
	if err != nil {
		return err
	}
	s.dnsReg = prometheus.NewRegistry()
	opts.Registerer = s.dnsReg
	srv, err := dnsrouter.New(opts)
	if err != nil {
		if opts.Geo != nil {
			_ = opts.Geo.Close()
		}
		return fmt.Errorf("dns: %w", err)
	}
	if err := srv.Start(ctx, s.cfg.DNS.Listen); err != nil {
		_ = srv.Close()
		return err
	}
	s.dns = srv
	nc, err := s.connect("dns")
	if err != nil {
		return err
	}
	if err := srv.WatchBeacons(nc); err != nil {
		return fmt.Errorf("dns: watch beacons: %w", err)
	}
	if addr := s.cfg.DNS.Metrics; addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("dns: metrics listen %s: %w", addr, err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(s.dnsReg, promhttp.HandlerOpts{}))
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
		admin := srv.AdminHandler()
		mux.Handle("GET /explain", admin)
		mux.Handle("GET /health", admin)
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		s.srvs = append(s.srvs, hs)
		go func() { _ = hs.Serve(ln) }()
	}
	s.log.Info("DNS serving", "addr", srv.Addr(), "zones", len(opts.Zones), "pops", len(opts.PoPs))
	return nil
}

// PoP returns a running PoP by id.
func (s *Stack) PoP(id string) *gateway.PoP {
	if p, ok := s.pops[id]; ok {
		return p.PoP
	}
	return nil
}

// PoPIDs lists the running PoPs in configuration order.
func (s *Stack) PoPIDs() []string { return s.order }

// DNS returns the running DNS server, or nil.
func (s *Stack) DNS() *dnsrouter.Server { return s.dns }

// NATSURL is the embedded server's URL, or "".
func (s *Stack) NATSURL() string {
	if s.nats == nil {
		return ""
	}
	return s.nats.ClientURL()
}

// Origin returns the demo origin, or nil.
func (s *Stack) Origin() *demoorigin.Origin { return s.origin }

// Shutdown stops everything, front to back: DNS, PoPs (letting in-flight
// requests finish until ctx ends), origin, NATS.
func (s *Stack) Shutdown(ctx context.Context) error {
	var errs []error
	if s.dns != nil {
		errs = append(errs, s.dns.Close())
	}
	for _, id := range s.order {
		errs = append(errs, s.pops[id].Shutdown(ctx))
	}
	for _, srv := range s.srvs {
		errs = append(errs, srv.Shutdown(ctx))
	}
	for _, c := range s.caches {
		errs = append(errs, c.Close())
	}
	for _, c := range s.stores {
		errs = append(errs, c())
	}
	if s.s3 != nil {
		errs = append(errs, s.s3.Close())
	}
	for _, n := range s.nodes {
		errs = append(errs, n.Close())
	}
	for i := len(s.closers) - 1; i >= 0; i-- {
		errs = append(errs, s.closers[i]()) // last made, first closed
	}
	for _, nc := range s.conns {
		nc.Close()
	}
	if s.nats != nil {
		s.nats.Shutdown()
	}
	return errors.Join(errs...)
}

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
