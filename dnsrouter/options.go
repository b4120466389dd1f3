package dnsrouter

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/meridian-edge/meridian/dnsrouter/geo"
	"github.com/meridian-edge/meridian/dnsrouter/records"
	"github.com/meridian-edge/meridian/dnsrouter/region"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// Options configures a Server. Zero values take the defaults documented on
// each field; New validates everything and names the field in its errors.
type Options struct {
	// Zones the server is authoritative for. At least one.
	Zones []Zone
	// PoPs the server sends clients to. At least one.
	PoPs []PoP
	// Geo maps client addresses to locations (geo.Table, geo.MMDB). The
	// server owns it from New on: it closes it on Close, and closes the old
	// one when a Reload brings a different source. Nil: every client is at
	// the default location below.
	Geo geo.Source
	// DefaultRegion is where clients with an unknown location are placed
	// (a region.Lookup id). When empty, DefaultLat/DefaultLon are used;
	// when those are both 0 too, the first PoP's location.
	DefaultRegion          string
	DefaultLat, DefaultLon float64
	// Answers is how many PoPs (the N nearest served) go into one answer
	// (default 1).
	Answers int

	// BeaconInterval is the PoPs' beacon period (default 1s); a PoP that
	// misses MissedBeacons in a row (default 3) is taken out of service.
	BeaconInterval time.Duration
	MissedBeacons  int
	// ProbeInterval and ProbeTimeout drive the active HTTP probes of each
	// PoP's HealthURL (defaults 2s and 1s).
	ProbeInterval, ProbeTimeout time.Duration
	// Rise is how many consecutive good beacons or probes bring a PoP back
	// (default 3); Fall how many failed probes take it out (default 2).
	Rise, Fall int

	// RRL is response rate limiting per client prefix (UDP only).
	RRL RRLOptions
	// MaxUDPSize caps the EDNS UDP payload we send (default 1232, the DNS
	// flag day 2020 value); clients advertising less get less, never < 512.
	MaxUDPSize int
	// QueryBudget is the per-query time budget: an answer not ready within
	// it is dropped and counted rather than sent late (default 100ms).
	QueryBudget time.Duration
	// UDPWorkers is the number of goroutines reading the UDP socket
	// (default 4). TCPMaxConns bounds concurrent TCP connections (default
	// 256) and TCPIdleTimeout closes idle ones (default 10s).
	UDPWorkers     int
	TCPMaxConns    int
	TCPIdleTimeout time.Duration
	// QueryLogSample logs one query in QueryLogSample at Info level (0: off).
	QueryLogSample int
	// NSID identifies this server (RFC 5001): it is sent back, in the
	// answer's OPT record, to queries whose OPT carries an empty NSID option
	// (dig +nsid), on UDP and TCP, errors included, so that an operator
	// running several nodes behind one address (anycast) or several
	// addresses can tell which node answered. Opaque bytes, at most
	// MaxNSIDLen; empty: never sent (the default, as in Knot and NSD).
	// When set, class CH TXT queries for id.server (RFC 4892) and
	// hostname.bind are answered with it too, as PowerDNS's server-id is;
	// without it they are refused like every CH query.
	NSID []byte

	// Logger receives operational logs (nil: discarded).
	Logger *slog.Logger
	// Registerer receives the metrics (nil: not registered anywhere).
	Registerer prometheus.Registerer
}

// MaxNSIDLen is the longest NSID Options accepts, in bytes. RFC 5001 only
// bounds it by the option's 16-bit length; we keep it short so that an
// answer with NSID and ECS still fits the 512 bytes of a small UDP
// buffer.
const MaxNSIDLen = 128

// Zone is one zone the server is authoritative for.
type Zone struct {
	// Apex is the zone name, e.g. "example.test".
	Apex string
	// Names are the geo-routed names, absolute ("www.example.test") or
	// relative to the apex ("www"; "@" is the apex itself).
	Names []string
	// Aliases maps a name to a served name it is a CNAME for, e.g.
	// {"cdn": "www"}. Both sides absolute or relative to the apex.
	Aliases map[string]string
	// NS lists the zone's name servers; those inside the zone need glue
	// addresses. At least one.
	NS []NameServer
	// SOA fields. Defaults: MName = NS[0].Name, RName = hostmaster.<apex>,
	// Serial 1, Refresh 3600, Retry 600, Expire 86400, Minimum 60, TTL 3600.
	SOA SOA
	// TTL of geo answers in seconds (default 30).
	TTL uint32
	// NSTTL is the TTL of NS and glue records (default 3600).
	NSTTL uint32
	// PoPs restricts geo-routed names to some PoPs (geofencing: data that
	// must stay in a region, a name served from a few sites): name (as in
	// Names) to the ids of the PoPs that may answer it, nearest first as
	// ever. A name not listed may be answered by every PoP. When none of
	// its PoPs is healthy, the nearest of them is answered (fail open
	// within the list), never another.
	PoPs map[string][]string
	// Records are the zone's static records (MX, TXT, CAA, a CNAME to a
	// hosted service, plain addresses, ...), each from records.Parse for
	// this apex and together passing records.Check: answered as they are,
	// beside the geo-routed names.
	Records []dns.RR
}

// NameServer is an NS target with its glue.
type NameServer struct {
	Name  string
	Addrs []netip.Addr
}

// SOA holds the SOA record's fields. Negative answers use
// min(TTL, Minimum) as their TTL (RFC 2308).
type SOA struct {
	MName, RName                            string
	Serial, Refresh, Retry, Expire, Minimum uint32
	TTL                                     uint32
}

// PoP is one point of presence that answers may name.
type PoP struct {
	// ID is the PoP's name, as in its beacons ("us-east-1").
	ID string
	// Region is a catalog region giving the coordinates when Lat/Lon are
	// both zero. Coordinates always come from configuration, never from
	// looking the PoP's address up in a geo database.
	Region   string
	Lat, Lon float64
	// IPv4 and IPv6 are the addresses answered for A and AAAA. A PoP
	// without IPv6 gives NODATA for AAAA when it is the chosen one.
	IPv4, IPv6 []netip.Addr
	// Capacity (requests/s, same unit as the beacons' load) overrides the
	// capacity the PoP reports when > 0. CapacityThreshold (default 0.9) is
	// the share of capacity from which clients spill to the next nearest.
	Capacity          float64
	CapacityThreshold float64
	// HealthURL is probed actively (GET, 2xx = healthy); empty: no probe.
	HealthURL string
}

// RRLOptions configures response rate limiting, as BIND and Knot do it.
type RRLOptions struct {
	// ResponsesPerSecond per client prefix; 0 disables RRL.
	ResponsesPerSecond float64
	// Burst is how many responses a prefix may send at once (default
	// ResponsesPerSecond).
	Burst float64
	// Slip: every Slip-th limited response is sent truncated (TC=1, no
	// answer) so that real clients behind a spoofed prefix retry over TCP;
	// the others are dropped (default 2). NoSlip drops them all.
	Slip   int
	NoSlip bool
	// IPv4PrefixLen and IPv6PrefixLen group clients (defaults 24 and 56).
	IPv4PrefixLen, IPv6PrefixLen int
	// Buckets is the size of the fixed bucket table (default 65536).
	Buckets int
}

func (o *Options) defaults() {
	if o.Answers <= 0 {
		o.Answers = 1
	}
	// The health fields (BeaconInterval ... Fall) take their defaults in
	// package health, in one place.
	if o.MaxUDPSize <= 0 {
		o.MaxUDPSize = 1232
	}
	if o.QueryBudget <= 0 {
		o.QueryBudget = 100 * time.Millisecond
	}
	if o.UDPWorkers <= 0 {
		o.UDPWorkers = 4
	}
	if o.TCPMaxConns <= 0 {
		o.TCPMaxConns = 256
	}
	if o.TCPIdleTimeout <= 0 {
		o.TCPIdleTimeout = 10 * time.Second
	}
	if o.RRL.ResponsesPerSecond > 0 {
		if o.RRL.Burst <= 0 {
			o.RRL.Burst = o.RRL.ResponsesPerSecond
		}
		if o.RRL.Slip == 0 {
			o.RRL.Slip = 2
		}
		if o.RRL.NoSlip {
			o.RRL.Slip = 0
		}
		if o.RRL.IPv4PrefixLen <= 0 {
			o.RRL.IPv4PrefixLen = 24
		}
		if o.RRL.IPv6PrefixLen <= 0 {
			o.RRL.IPv6PrefixLen = 56
		}
		if o.RRL.Buckets <= 0 {
			o.RRL.Buckets = 65536
		}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	for i := range o.PoPs {
		if o.PoPs[i].CapacityThreshold == 0 {
			o.PoPs[i].CapacityThreshold = 0.9
		}
	}
}

// fqdn lower-cases and roots a name; rel names are taken relative to apex.
func fqdn(name, apex string) string {
	name = strings.ToLower(strings.TrimSpace(name))
	switch {
	case name == "@":
		return apex
	case strings.HasSuffix(name, "."):
		return name
	case apex != "" && (name == strings.TrimSuffix(apex, ".") || strings.HasSuffix(name+".", "."+apex)):
		return name + "."
	case apex != "":
		return name + "." + apex
	}
	return name + "."
}

func checkName(field, name string) error {
	if name == "" {
		return fmt.Errorf("%s: empty name", field)
	}
	if _, ok := dns.IsDomainName(name); !ok {
		return fmt.Errorf("%s: %q is not a valid domain name", field, name)
	}
	return nil
}

// validate checks o (after defaults) and returns the first problem,
// naming the field.
func (o *Options) validate() error {
	if len(o.Zones) == 0 {
		return errors.New("Zones: at least one zone is required")
	}
	if len(o.PoPs) == 0 {
		return errors.New("PoPs: at least one PoP is required")
	}
	apexes := map[string]bool{}
	for i, z := range o.Zones {
		f := fmt.Sprintf("Zones[%d]", i)
		if err := checkName(f+".Apex", z.Apex); err != nil {
			return err
		}
		apex := fqdn(z.Apex, "")
		if apexes[apex] {
			return fmt.Errorf("%s.Apex: zone %s listed twice", f, apex)
		}
		apexes[apex] = true
		if len(z.NS) == 0 {
			return fmt.Errorf("%s.NS: at least one name server is required", f)
		}
		for j, ns := range z.NS {
			if err := checkName(fmt.Sprintf("%s.NS[%d].Name", f, j), ns.Name); err != nil {
				return err
			}
			n := fqdn(ns.Name, apex)
			if dns.IsSubDomain(apex, n) && len(ns.Addrs) == 0 {
				return fmt.Errorf("%s.NS[%d].Addrs: %s is inside the zone and needs glue addresses", f, j, n)
			}
			for _, a := range ns.Addrs {
				if !a.IsValid() {
					return fmt.Errorf("%s.NS[%d].Addrs: invalid address", f, j)
				}
			}
		}
		served := map[string]bool{}
		for j, n := range z.Names {
			if err := checkName(fmt.Sprintf("%s.Names[%d]", f, j), n); err != nil {
				return err
			}
			fn := fqdn(n, apex)
			if !dns.IsSubDomain(apex, fn) {
				return fmt.Errorf("%s.Names[%d]: %s is outside the zone %s", f, j, fn, apex)
			}
			served[fn] = true
		}
		for a, target := range z.Aliases {
			fa, ft := fqdn(a, apex), fqdn(target, apex)
			if err := checkName(f+".Aliases", a); err != nil {
				return err
			}
			if !dns.IsSubDomain(apex, fa) {
				return fmt.Errorf("%s.Aliases[%s]: %s is outside the zone %s", f, a, fa, apex)
			}
			if fa == apex {
				return fmt.Errorf("%s.Aliases[%s]: the apex cannot be a CNAME (it holds SOA and NS)", f, a)
			}
			if served[fa] {
				return fmt.Errorf("%s.Aliases[%s]: %s is also a served name; a CNAME cannot coexist with other data", f, a, fa)
			}
			if !served[ft] {
				return fmt.Errorf("%s.Aliases[%s]: target %s is not one of the zone's served Names", f, a, ft)
			}
		}
		for n, ids := range z.PoPs {
			if fn := fqdn(n, apex); !served[fn] {
				return fmt.Errorf("%s.PoPs[%s]: %s is not one of the zone's served Names", f, n, fn)
			}
			if len(ids) == 0 {
				return fmt.Errorf("%s.PoPs[%s]: no PoPs; list the ids of the PoPs that may answer it", f, n)
			}
			for _, id := range ids {
				if !slices.ContainsFunc(o.PoPs, func(p PoP) bool { return p.ID == id }) {
					return fmt.Errorf("%s.PoPs[%s]: %q is not one of the PoPs", f, n, id)
				}
			}
		}
		aliases, glue := map[string]bool{}, map[string]bool{}
		for a := range z.Aliases {
			aliases[fqdn(a, apex)] = true
		}
		for _, ns := range z.NS {
			if n := fqdn(ns.Name, apex); dns.IsSubDomain(apex, n) {
				glue[n] = true
			}
		}
		for j, rr := range z.Records {
			if rr == nil {
				return fmt.Errorf("%s.Records[%d]: nil", f, j)
			}
			if h := rr.Header(); h.Name != strings.ToLower(h.Name) || !dns.IsSubDomain(apex, h.Name) {
				return fmt.Errorf("%s.Records[%d]: owner %s is not a lower-case name in zone %s (use records.Parse)", f, j, h.Name, apex)
			}
		}
		if p := records.Check(apex, z.Records, served, aliases, glue); len(p) > 0 {
			return fmt.Errorf("%s.Records[%d]: %w", f, p[0].Index, p[0].Err)
		}
		if z.SOA.Minimum > 604800 || z.SOA.TTL > 604800 {
			return fmt.Errorf("%s.SOA: TTL and Minimum must be at most 604800 (one week)", f)
		}
	}
	ids := map[string]bool{}
	for i, p := range o.PoPs {
		f := fmt.Sprintf("PoPs[%d]", i)
		if p.ID == "" {
			return fmt.Errorf("%s.ID: required", f)
		}
		if ids[p.ID] {
			return fmt.Errorf("%s.ID: duplicate PoP id %q", f, p.ID)
		}
		ids[p.ID] = true
		if p.Lat == 0 && p.Lon == 0 {
			if p.Region == "" {
				return fmt.Errorf("%s (%s): give Region or Lat/Lon", f, p.ID)
			}
			if _, ok := region.Lookup(p.Region); !ok {
				return fmt.Errorf("%s.Region: unknown region %q", f, p.Region)
			}
		}
		if p.Lat < -90 || p.Lat > 90 {
			return fmt.Errorf("%s.Lat: want -90..90, got %g", f, p.Lat)
		}
		if p.Lon < -180 || p.Lon > 180 {
			return fmt.Errorf("%s.Lon: want -180..180, got %g", f, p.Lon)
		}
		if len(p.IPv4)+len(p.IPv6) == 0 {
			return fmt.Errorf("%s (%s): at least one address in IPv4 or IPv6 is required", f, p.ID)
		}
		for _, a := range p.IPv4 {
			if !a.Is4() {
				return fmt.Errorf("%s.IPv4: %s is not an IPv4 address", f, a)
			}
		}
		for _, a := range p.IPv6 {
			if !a.Is6() || a.Is4In6() {
				return fmt.Errorf("%s.IPv6: %s is not an IPv6 address", f, a)
			}
		}
		if p.Capacity < 0 {
			return fmt.Errorf("%s.Capacity: must be >= 0, got %g", f, p.Capacity)
		}
		if p.CapacityThreshold <= 0 || p.CapacityThreshold > 1 {
			return fmt.Errorf("%s.CapacityThreshold: want a share in (0, 1], got %g", f, p.CapacityThreshold)
		}
		if p.HealthURL != "" && !strings.HasPrefix(p.HealthURL, "http://") && !strings.HasPrefix(p.HealthURL, "https://") {
			return fmt.Errorf("%s.HealthURL: want an http:// or https:// URL, got %q", f, p.HealthURL)
		}
	}
	if o.DefaultRegion != "" {
		if _, ok := region.Lookup(o.DefaultRegion); !ok {
			return fmt.Errorf("DefaultRegion: unknown region %q", o.DefaultRegion)
		}
	}
	if o.DefaultLat < -90 || o.DefaultLat > 90 || o.DefaultLon < -180 || o.DefaultLon > 180 {
		return fmt.Errorf("DefaultLat/DefaultLon: out of range (%g,%g)", o.DefaultLat, o.DefaultLon)
	}
	if o.Answers > 16 {
		return fmt.Errorf("Answers: at most 16 PoPs per answer, got %d", o.Answers)
	}
	if len(o.NSID) > MaxNSIDLen {
		return fmt.Errorf("NSID: %d bytes is too long; at most %d (a short node name such as ns1-fra)", len(o.NSID), MaxNSIDLen)
	}
	if o.MaxUDPSize < 512 || o.MaxUDPSize > 65535 {
		return fmt.Errorf("MaxUDPSize: want 512..65535, got %d", o.MaxUDPSize)
	}
	if o.RRL.ResponsesPerSecond < 0 {
		return fmt.Errorf("RRL.ResponsesPerSecond: must be >= 0")
	}
	if o.RRL.Slip < 0 {
		return fmt.Errorf("RRL.Slip: must be >= 0")
	}
	if o.RRL.IPv4PrefixLen > 32 || o.RRL.IPv6PrefixLen > 128 {
		return fmt.Errorf("RRL: IPv4PrefixLen must be <= 32 and IPv6PrefixLen <= 128")
	}
	return nil
}

// popLocation returns the configured coordinates of a PoP.
func popLocation(p PoP) geo.Location {
	if p.Lat == 0 && p.Lon == 0 {
		r, _ := region.Lookup(p.Region)
		return geo.Location{Lat: r.Lat, Lon: r.Lon}
	}
	return geo.Location{Lat: p.Lat, Lon: p.Lon}
}

// DevOptions returns the walking-skeleton configuration of `meridian dev`:
// zone example.test serving www.example.test, three PoPs on 127.0.0.11-13
// (us-east-1, eu-west-2, ap-northeast-1) and the built-in dev geo table.
// Callers adjust the result (HealthURL, Logger, Registerer) before New.
func DevOptions() Options {
	return Options{
		Zones: []Zone{{
			Apex:  "example.test",
			Names: []string{"www"},
			NS:    []NameServer{{Name: "ns1", Addrs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}},
		}},
		PoPs: []PoP{
			{ID: "us-east-1", Region: "us-east-1", IPv4: []netip.Addr{netip.MustParseAddr("127.0.0.11")}},
			{ID: "eu-west-2", Region: "eu-west-2", IPv4: []netip.Addr{netip.MustParseAddr("127.0.0.12")}},
			{ID: "ap-northeast-1", Region: "ap-northeast-1", IPv4: []netip.Addr{netip.MustParseAddr("127.0.0.13")}},
		},
		Geo:           geo.DevTable(),
		DefaultRegion: "us-east-1",
	}
}
