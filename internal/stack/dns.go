package stack

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/meridian-edge/meridian/dnsrouter"
	"github.com/meridian-edge/meridian/dnsrouter/geo"
	"github.com/meridian-edge/meridian/dnsrouter/records"
	"github.com/meridian-edge/meridian/dnsrouter/region"
	"github.com/meridian-edge/meridian/internal/config"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

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
			Apex: z.Apex, Names: z.Names, Aliases: z.Aliases, PoPs: z.PoPs, TTL: secs(z.TTL),
			SOA: dnsrouter.SOA{
				MName: z.SOA.MName, RName: z.SOA.RName, Serial: z.SOA.Serial,
				Refresh: secs(z.SOA.Refresh), Retry: secs(z.SOA.Retry), Expire: secs(z.SOA.Expire),
				Minimum: secs(z.SOA.Minimum), TTL: secs(z.SOA.TTL),
			},
		}
		for j, text := range z.Records {
			rr, err := records.Parse(z.Apex, text)
			if err != nil { // config validation parsed it already
				return dnsrouter.Options{}, fmt.Errorf("dns.zones[%s].records[%d]: %w", z.Apex, j, err)
			}
			zone.Records = append(zone.Records, rr)
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
	nsid, err := d.NSIDBytes()
	if err != nil {
		return opts, fmt.Errorf("dns.nsid: %w", err)
	}
	opts.NSID = nsid
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
	s.registerReloadMetrics(s.dnsReg)
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
	return nil // the server logged "dns: serving" with its addresses
}
