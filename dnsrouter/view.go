package dnsrouter

import (
	"encoding/hex"
	"net/netip"
	"slices"
	"strings"

	"github.com/meridian-edge/meridian/dnsrouter/geo"
	"github.com/meridian-edge/meridian/dnsrouter/health"
	"github.com/miekg/dns"
)

// view is one immutable generation of configuration compiled for the query
// path. Reload builds a new view and swaps it in atomically, so in-flight
// queries finish on the view they started with.
type view struct {
	opts  Options
	zones []*zone // longest apex first
	pops  []popInfo
	ids   []string
	geo   geo.Source
	def   geo.Location
	defRk *ranking
	ranks *rankings
	// nsid is Options.NSID hex-encoded, the form miekg/dns packs; "" when
	// no NSID is configured.
	nsid string
	// nsidTXT is Options.NSID as a TXT string for CH TXT id.server.
	nsidTXT string
	// fast maps the lower-case wire form of each geo-routed name to its
	// zone, for the allocation-free fast path.
	fast map[string]fastEntry
	// fastWild maps the wire form of the parent of each geo-routed
	// wildcard ("*.example.test." is under "example.test.") to its zone,
	// and fastNodes holds the wire form of every name that exists in a
	// zone with such a wildcard: a query for a name not in fastNodes
	// whose nearest existing ancestor is in fastWild is answered by the
	// wildcard (RFC 4592). Both are empty when no zone has one.
	fastWild  map[string]fastEntry
	fastNodes map[string]bool
}

type popInfo struct {
	id   string
	loc  geo.Location
	ipv4 []netip.Addr
	ipv6 []netip.Addr
}

type zone struct {
	apex   string // lower-case FQDN
	served map[string]bool
	alias  map[string]string
	glue   map[string][]netip.Addr
	ents   map[string]bool // empty non-terminals: exist, hold no data
	// static holds the zone's static records by owner and type.
	static map[string]map[uint16][]dns.RR
	// wild maps each wildcard's parent, the closest encloser it answers
	// under, to the wildcard ("example.test." -> "*.example.test.").
	wild map[string]string
	// cuts are the names delegated to other servers (static NS records
	// below the apex).
	cuts map[string]bool
	// allowed marks, by view PoP index, the PoPs that may answer a
	// geo-routed name (Zone.PoPs); a name not in it may get any.
	allowed map[string][]bool
	soa     *dns.SOA
	ns      []dns.RR
	ttl     uint32
	nsTTL   uint32
	negTTL  uint32
}

func buildView(o Options) *view {
	v := &view{opts: o, geo: o.Geo, nsid: hex.EncodeToString(o.NSID), nsidTXT: txtString(o.NSID),
		fast: map[string]fastEntry{}, fastWild: map[string]fastEntry{}, fastNodes: map[string]bool{}}
	index := map[string]int{}
	for i, p := range o.PoPs {
		index[p.ID] = i
	}
	for _, z := range o.Zones {
		bz := buildZone(z)
		for n, ids := range z.PoPs {
			marks := make([]bool, len(o.PoPs))
			for _, id := range ids {
				marks[index[id]] = true
			}
			bz.allowed[fqdn(n, bz.apex)] = marks
		}
		v.zones = append(v.zones, bz)
	}
	slices.SortStableFunc(v.zones, func(a, b *zone) int { return len(b.apex) - len(a.apex) })
	for _, z := range v.zones {
		for n := range z.served {
			// A name configured in a zone that has a delegated-looking
			// child zone is left to the general path, which resolves it
			// by the longest apex.
			if w, ok := wireLower(n); ok && v.findZone(n) == z {
				v.fast[w] = fastEntry{z: z, allowed: z.allowed[n]}
			}
		}
		v.addFastWild(z)
	}
	if len(v.fastWild) > 0 {
		// A child zone's apex ends the fast path's walk up from a name
		// there before it reaches a wildcard of the parent zone.
		for _, z := range v.zones {
			if w, ok := wireLower(z.apex); ok {
				v.fastNodes[w] = true
			}
		}
	}
	locs := make([]geo.Location, len(o.PoPs))
	for i, p := range o.PoPs {
		locs[i] = popLocation(p)
		v.pops = append(v.pops, popInfo{id: p.ID, loc: locs[i], ipv4: p.IPv4, ipv6: p.IPv6})
		v.ids = append(v.ids, p.ID)
	}
	switch {
	case o.DefaultRegion != "":
		v.def = popLocation(PoP{Region: o.DefaultRegion})
	case o.DefaultLat != 0 || o.DefaultLon != 0:
		v.def = geo.Location{Lat: o.DefaultLat, Lon: o.DefaultLon}
	default:
		v.def = locs[0]
	}
	known := []geo.Location{v.def}
	if t, ok := o.Geo.(interface{ Locations() []geo.Location }); ok {
		known = append(known, t.Locations()...)
	}
	v.ranks = newRankings(locs, known)
	v.defRk = v.ranks.lookup(v.def)
	return v
}

func buildZone(z Zone) *zone {
	apex := fqdn(z.Apex, "")
	out := &zone{
		apex: apex, served: map[string]bool{}, alias: map[string]string{},
		glue: map[string][]netip.Addr{}, ents: map[string]bool{}, static: map[string]map[uint16][]dns.RR{}, allowed: map[string][]bool{},
		ttl: z.TTL, nsTTL: z.NSTTL,
	}
	if out.ttl == 0 {
		out.ttl = 30
	}
	if out.nsTTL == 0 {
		out.nsTTL = 3600
	}
	s := z.SOA
	if s.MName == "" {
		s.MName = z.NS[0].Name
	}
	if s.RName == "" {
		s.RName = "hostmaster"
	}
	if s.Serial == 0 {
		s.Serial = 1
	}
	if s.Refresh == 0 {
		s.Refresh = 3600
	}
	if s.Retry == 0 {
		s.Retry = 600
	}
	if s.Expire == 0 {
		s.Expire = 86400
	}
	if s.Minimum == 0 {
		s.Minimum = 60
	}
	if s.TTL == 0 {
		s.TTL = 3600
	}
	out.negTTL = min(s.TTL, s.Minimum)
	out.soa = &dns.SOA{
		Hdr:    dns.RR_Header{Name: apex, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: s.TTL},
		Ns:     fqdn(s.MName, apex),
		Mbox:   fqdn(s.RName, apex),
		Serial: s.Serial, Refresh: s.Refresh, Retry: s.Retry, Expire: s.Expire, Minttl: s.Minimum,
	}
	for _, ns := range z.NS {
		n := fqdn(ns.Name, apex)
		out.ns = append(out.ns, &dns.NS{Hdr: dns.RR_Header{Name: apex, Rrtype: dns.TypeNS, Class: dns.ClassINET, Ttl: out.nsTTL}, Ns: n})
		if dns.IsSubDomain(apex, n) {
			out.glue[n] = append(out.glue[n], ns.Addrs...)
		}
	}
	for _, n := range z.Names {
		out.served[fqdn(n, apex)] = true
	}
	for a, t := range z.Aliases {
		out.alias[fqdn(a, apex)] = fqdn(t, apex)
	}
	for _, rr := range z.Records {
		h := rr.Header()
		if out.static[h.Name] == nil {
			out.static[h.Name] = map[uint16][]dns.RR{}
		}
		out.static[h.Name][h.Rrtype] = append(out.static[h.Name][h.Rrtype], rr)
	}
	// Every ancestor of a name between it and the apex exists (RFC 8020):
	// asking for it is NODATA, not NXDOMAIN.
	addENTs := func(n string) {
		for {
			i := strings.IndexByte(n, '.')
			if i < 0 || i+1 >= len(n) {
				return
			}
			n = n[i+1:]
			if len(n) <= len(apex) {
				return
			}
			out.ents[n] = true
		}
	}
	for n := range out.served {
		addENTs(n)
	}
	for n := range out.alias {
		addENTs(n)
	}
	for n := range out.glue {
		addENTs(n)
	}
	for n := range out.static {
		addENTs(n)
	}
	out.cuts = map[string]bool{}
	for n, rrs := range out.static {
		if rrs[dns.TypeNS] != nil {
			out.cuts[n] = true
		}
	}
	out.wild = map[string]string{}
	for _, n := range out.names() {
		if parent, ok := strings.CutPrefix(n, "*."); ok {
			out.wild[parent] = n
		}
	}
	return out
}

// names lists every name that exists in z: the apex, the names owning
// data and the empty non-terminals.
func (z *zone) names() []string {
	out := []string{z.apex}
	for _, m := range []map[string]bool{z.served, z.ents} {
		for n := range m {
			out = append(out, n)
		}
	}
	for n := range z.alias {
		out = append(out, n)
	}
	for n := range z.glue {
		out = append(out, n)
	}
	for n := range z.static {
		out = append(out, n)
	}
	return out
}

// has reports whether name (a lower-case FQDN in z) exists: it owns data
// or is an empty non-terminal.
func (z *zone) has(name string) bool {
	if name == z.apex || z.served[name] || z.ents[name] || z.static[name] != nil {
		return true
	}
	_, glue := z.glue[name]
	_, alias := z.alias[name]
	return glue || alias
}

// step is where one name stands in its zone, as answers and explanations
// follow names through our zones (one definition, so that both follow the
// same way).
type step struct {
	cut  string // the delegation name lies at or under; "" when none
	node string // the name whose data answers name (itself or a wildcard); "" when it does not exist (or cut is set)
	// cname is node's static CNAME, nil when it has none; target is its
	// target lower-case, tz the target's zone when it is one of ours.
	cname  *dns.CNAME
	target string
	tz     *zone
}

// lookup places name (a lower-case FQDN in z). ds asks for a DS query,
// which at the cut itself is the parent's to answer (RFC 4035 3.1.4.1),
// so it is looked up as a name of z rather than referred.
func (v *view) lookup(z *zone, name string, ds bool) step {
	var s step
	if s.cut = z.cut(name); s.cut != "" && (name != s.cut || !ds) {
		return s
	}
	s.cut = ""
	if s.node = z.node(name); s.node == "" {
		return s
	}
	if cn := z.static[s.node][dns.TypeCNAME]; cn != nil {
		// Alone at its name (records.Check): the answer to every type.
		s.cname = cn[0].(*dns.CNAME)
		s.target = strings.ToLower(s.cname.Target)
		s.tz = v.findZone(s.target)
	}
	return s
}

// cut returns the delegation point at or above name (a lower-case FQDN
// in z), "" when name is this zone's to answer. records.Check allows no
// delegation below another, so the first found is the only one.
func (z *zone) cut(name string) string {
	for n := name; len(z.cuts) > 0 && len(n) > len(z.apex); {
		if z.cuts[n] {
			return n
		}
		i, end := dns.NextLabel(n, 0)
		if end {
			break
		}
		n = n[i:]
	}
	return ""
}

// node is the name whose data answers name (a lower-case FQDN in z):
// name itself when it exists, else the wildcard child of its closest
// encloser when there is one (RFC 4592 3.3.1: "*.example.test." answers
// "a.b.example.test." unless "a.b" or "b" exists), else "" (NXDOMAIN).
func (z *zone) node(name string) string {
	if z.has(name) {
		return name
	}
	for n := name; len(n) > len(z.apex); {
		i, end := dns.NextLabel(n, 0)
		if end {
			return ""
		}
		n = n[i:]
		if z.has(n) {
			return z.wild[n] // "" when the closest encloser has no wildcard
		}
	}
	return ""
}

// addFastWild enters z's geo-routed wildcards into the fast path's
// tables, with every name of z, so that the fast path can tell that a
// name does not exist before it answers it from a wildcard.
func (v *view) addFastWild(z *zone) {
	found := false
	for parent, w := range z.wild {
		if !z.served[w] || v.findZone(w) != z {
			continue
		}
		if wp, ok := wireLower(parent); ok {
			v.fastWild[wp] = fastEntry{z: z, allowed: z.allowed[w]}
			found = true
		}
	}
	if !found {
		return
	}
	for _, n := range z.names() {
		if v.findZone(n) != z {
			continue // occluded by a child zone, which findZone answers from
		}
		if w, ok := wireLower(n); ok {
			v.fastNodes[w] = true
		}
	}
}

// findZone returns the zone that holds name (lower-case FQDN).
func (v *view) findZone(name string) *zone {
	for _, z := range v.zones {
		if name == z.apex || (len(name) > len(z.apex) && strings.HasSuffix(name, z.apex) && name[len(name)-len(z.apex)-1] == '.') {
			return z
		}
	}
	return nil
}

// locate places a client: its location, the precomputed ranking for it,
// the prefix length of the geo block that decided (the ECS scope; -1 when
// the source cannot tell) and "geo" or "default" for where it came from.
// Without a geo source every client is at the default location, so the
// answer depends on no part of the address: scope 0, which lets a
// resolver cache one answer for all its clients.
func (v *view) locate(addr netip.Addr) (geo.Location, *ranking, int, string) {
	if v.geo == nil {
		return v.def, v.defRk, 0, "default"
	}
	if addr.IsValid() {
		m := v.geo.Lookup(addr)
		if m.Found {
			return m.Loc, v.ranks.lookup(m.Loc), m.Bits, "geo"
		}
		return v.def, v.defRk, m.Bits, "default"
	}
	return v.def, v.defRk, -1, "default"
}

// scope is the ECS scope of an answer for a client in the network
// client/source that locate placed with block length bits: see geo.Scope.
// Without a geo source the answer depends on no part of the address.
func (v *view) scope(client netip.Addr, source uint8, bits int) int {
	if v.geo == nil || !client.IsValid() {
		if bits < 0 {
			return int(source)
		}
		return bits
	}
	return geo.Scope(v.geo, client, int(source), geo.Match{Bits: bits})
}

// choose picks the PoPs for a ranking under a health snapshot with the
// view's answer count, among allowed (nil: all).
func (v *view) choose(rk *ranking, snap *health.Snapshot, allowed []bool, rnd uint64) choice {
	return choose(rk, v.ids, snap, allowed, v.opts.Answers, rnd)
}
