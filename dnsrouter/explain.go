package dnsrouter

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"

	"github.com/meridian-edge/meridian/dnsrouter/geo"
	"github.com/miekg/dns"
)

// Explanation is what `meridian dns explain` prints: how the server would
// answer name for a client in subnet, and why.
type Explanation struct {
	// Name is the name the answer is for, after following CNAMEs (an
	// alias, static CNAMEs into our zones); Zone its zone.
	Name   string       `json:"name"`
	Zone   string       `json:"zone"`
	Client netip.Prefix `json:"client"`
	// Chain are the CNAMEs followed from the name asked to Name, each
	// "owner CNAME target".
	Chain []string `json:"chain,omitempty"`
	// Wildcard is the wildcard whose records answer Name when Name does
	// not exist itself (RFC 4592).
	Wildcard string `json:"wildcard,omitempty"`
	// Static are Name's static records when it is not geo-routed: the
	// answer is the same for every client, and the fields below are
	// empty. Empty too when the chain leaves our zones (Outside).
	Static []string `json:"static,omitempty"`
	// Outside is true when the last CNAME points out of our zones, where
	// the resolver follows it.
	Outside bool `json:"outside,omitempty"`
	// Delegated is the zone cut Name lies at or under: other servers
	// answer it, and Static lists their NS records (and glue).
	Delegated string `json:"delegated,omitempty"`
	// Location is where the client was placed; LocationSource says how
	// ("table dev", "mmdb FILE", or "default" when unknown).
	Location       geo.Location `json:"location"`
	LocationSource string       `json:"location_source"`
	// Scope is the ECS scope prefix an answer would carry.
	Scope int `json:"scope"`
	// Candidates are every PoP, nearest first.
	Candidates []Candidate `json:"candidates"`
	// Chosen are the PoP ids an answer would name now (spill-over makes
	// this vary between queries when a PoP is over its threshold).
	Chosen []string `json:"chosen"`
	// FailOpen is true when no PoP is served and the nearest is answered.
	FailOpen bool `json:"fail_open"`
	// Stale is true when the health view is from before a lost NATS feed.
	Stale bool `json:"stale"`
}

// Candidate is one PoP in an Explanation.
type Candidate struct {
	PoP        string  `json:"pop"`
	DistanceKm float64 `json:"distance_km"`
	Served     bool    `json:"served"`
	Beacon     string  `json:"beacon"`
	Probe      string  `json:"probe"`
	Load       float64 `json:"load"`
	Capacity   float64 `json:"capacity"`
	// Keep is the share of its clients the PoP keeps (1: no spill).
	Keep float64 `json:"keep"`
	// Excluded is true when the name may not be answered with this PoP
	// (Zone.PoPs).
	Excluded bool   `json:"excluded,omitempty"`
	Reason   string `json:"reason"`
}

// Explain shows how name would be answered for a client in subnet, with
// the live health view: the PoP decision for a geo-routed name (a
// wildcard's included) and for a name that leads to one through an alias
// or static CNAMEs, the records of a name that has only static ones.
// It follows names as the server's answers do.
func (s *Server) Explain(subnet netip.Prefix, name string) (Explanation, error) {
	v := s.view.Load()
	if !subnet.IsValid() {
		return Explanation{}, fmt.Errorf("dns explain: invalid subnet")
	}
	subnet = subnet.Masked()
	n := strings.ToLower(dns.Fqdn(name))
	z := v.findZone(n)
	if z == nil {
		return Explanation{}, fmt.Errorf("dns explain: %s is not in any zone we serve", n)
	}
	e := Explanation{Client: subnet}
	for hop := 0; ; hop++ {
		st := v.lookup(z, n, false)
		if st.cut != "" {
			e.Name, e.Zone, e.Delegated = n, z.apex, st.cut
			resp := new(dns.Msg)
			v.referral(resp, z, st.cut)
			e.Static = recordLines(append(resp.Ns, resp.Extra...), "")
			return e, nil
		}
		if st.node == "" {
			return Explanation{}, fmt.Errorf("dns explain: %s does not exist in zone %s (NXDOMAIN)%s", n, z.apex, chainNote(e.Chain))
		}
		e.Name, e.Zone, e.Wildcard = n, z.apex, ""
		if st.node != n {
			e.Wildcard = st.node
		}
		if t, ok := z.alias[st.node]; ok {
			e.Chain = append(e.Chain, n+" CNAME "+t)
			e.Name, e.Wildcard = t, ""
			break
		}
		if st.cname == nil {
			break
		}
		e.Chain = append(e.Chain, n+" CNAME "+st.target)
		if st.tz == nil {
			e.Outside = true
			return e, nil
		}
		if hop == maxChase {
			return Explanation{}, fmt.Errorf("dns explain: more than %d CNAMEs from %s, where answers stop following (a loop through zones?)%s", maxChase, name, chainNote(e.Chain))
		}
		n, z = st.target, st.tz
	}
	node := z.node(e.Name)
	if !z.served[node] {
		var rrs []dns.RR
		for _, set := range z.static[node] {
			rrs = append(rrs, set...)
		}
		rrs = append(rrs, glueRecords(e.Name, z.glue[node], dns.TypeA, z.nsTTL)...)
		rrs = append(rrs, glueRecords(e.Name, z.glue[node], dns.TypeAAAA, z.nsTTL)...)
		e.Static = recordLines(rrs, e.Name)
		if len(e.Static) == 0 {
			return Explanation{}, fmt.Errorf("dns explain: %s exists in zone %s but holds no records (a name between others and the apex)%s", e.Name, z.apex, chainNote(e.Chain))
		}
		return e, nil
	}
	loc, rk, bits, how := v.locate(subnet.Addr())
	e.Location, e.LocationSource = loc, "default"
	if how == "geo" {
		e.LocationSource = v.geo.Name()
	}
	e.Scope = v.scope(subnet.Addr(), uint8(subnet.Bits()), bits)
	snap := s.health.Snapshot()
	e.Stale = snap.Stale
	allowed := z.allowed[z.node(e.Name)]
	for k, i := range rk.order {
		c := Candidate{PoP: v.ids[i], DistanceKm: rk.dist[k], Served: true, Keep: 1, Beacon: "unknown", Probe: "unknown"}
		if int(i) < len(snap.PoPs) && snap.PoPs[i].ID == v.ids[i] {
			st := snap.PoPs[i]
			c.Served, c.Beacon, c.Probe = st.Served, st.Beacon.String(), st.Probe.String()
			c.Load, c.Capacity, c.Keep, c.Reason = st.Load, st.Capacity, st.Keep, st.Reason
		}
		if allowed != nil && !allowed[i] {
			c.Excluded, c.Reason = true, "not one of the name's pops (dns.zones[].pops)"
		}
		e.Candidates = append(e.Candidates, c)
	}
	ch := v.choose(rk, snap, allowed, rand.Uint64())
	e.FailOpen = ch.failOpen
	for k := 0; k < ch.n; k++ {
		e.Chosen = append(e.Chosen, v.ids[ch.pops[k]])
	}
	return e, nil
}

// recordLines writes rrs one per line, sorted, owned by owner unless it
// is "", with spaces between fields.
func recordLines(rrs []dns.RR, owner string) []string {
	var out []string
	for _, rr := range rrs {
		if owner != "" {
			rr = asAsked(rr, owner)
		}
		// Tabs only separate fields: miekg/dns escapes them in data.
		out = append(out, strings.ReplaceAll(rr.String(), "\t", " "))
	}
	slices.Sort(out)
	return out
}

// chainNote is " (via a CNAME b, ...)" for an error about the end of a
// chain, "" when no CNAME was followed.
func chainNote(chain []string) string {
	if len(chain) == 0 {
		return ""
	}
	return " (via " + strings.Join(chain, ", ") + ")"
}

// String renders the explanation as the CLI prints it.
func (e Explanation) String() string {
	var b strings.Builder
	for _, c := range e.Chain {
		fmt.Fprintf(&b, "%s\n", c)
	}
	if e.Outside {
		b.WriteString("the target is outside our zones; the resolver follows it\n")
		return b.String()
	}
	fmt.Fprintf(&b, "name %s (zone %s)", e.Name, e.Zone)
	if e.Wildcard != "" {
		fmt.Fprintf(&b, " answered by wildcard %s", e.Wildcard)
	}
	if e.Delegated != "" {
		fmt.Fprintf(&b, "\ndelegated at %s: these servers answer it, not this one\n", e.Delegated)
		for _, r := range e.Static {
			fmt.Fprintf(&b, "  %s\n", r)
		}
		return b.String()
	}
	if e.Static != nil {
		b.WriteString("\nnot geo-routed: every client gets its static records\n")
		for _, r := range e.Static {
			fmt.Fprintf(&b, "  %s\n", r)
		}
		return b.String()
	}
	fmt.Fprintf(&b, "\nclient %s at %s via %s, ECS scope /%d\n", e.Client, e.Location, e.LocationSource, e.Scope)
	if e.Stale {
		b.WriteString("health view is STALE (beacon feed unreachable)\n")
	}
	fmt.Fprintf(&b, "%-20s %10s  %-6s %-7s %-7s %10s %10s %5s  %s\n", "POP", "KM", "SERVED", "BEACON", "PROBE", "LOAD", "CAPACITY", "KEEP", "REASON")
	for _, c := range e.Candidates {
		fmt.Fprintf(&b, "%-20s %10.0f  %-6v %-7s %-7s %10.0f %10.0f %5.2f  %s\n", c.PoP, c.DistanceKm, c.Served, c.Beacon, c.Probe, c.Load, c.Capacity, c.Keep, c.Reason)
	}
	fmt.Fprintf(&b, "chosen: %s", strings.Join(e.Chosen, ", "))
	if e.FailOpen {
		b.WriteString(" (FAIL OPEN: no PoP is healthy)")
	}
	b.WriteString("\n")
	return b.String()
}
