package dnsrouter

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"

	"github.com/meridian-edge/meridian/dnsrouter/geo"
	"github.com/miekg/dns"
)

// Explanation is what `meridian dns explain` prints: how the server would
// answer name for a client in subnet, and why.
type Explanation struct {
	// Name is the served name the decision is for (after following a
	// CNAME alias); Zone its zone.
	Name   string       `json:"name"`
	Zone   string       `json:"zone"`
	Client netip.Prefix `json:"client"`
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
	Keep   float64 `json:"keep"`
	Reason string  `json:"reason"`
}

// Explain shows the decision for name (a served name or an alias of one)
// for a client in subnet, with the live health view.
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
	if t, ok := z.alias[n]; ok {
		n = t
	}
	if !z.served[n] {
		return Explanation{}, fmt.Errorf("dns explain: %s is not a geo-routed name of zone %s", n, z.apex)
	}
	loc, rk, bits, how := v.locate(subnet.Addr())
	e := Explanation{Name: n, Zone: z.apex, Client: subnet, Location: loc, LocationSource: "default"}
	if how == "geo" {
		e.LocationSource = v.geo.Name()
	}
	e.Scope = v.scope(subnet.Addr(), uint8(subnet.Bits()), bits)
	snap := s.health.Snapshot()
	e.Stale = snap.Stale
	for k, i := range rk.order {
		c := Candidate{PoP: v.ids[i], DistanceKm: rk.dist[k], Served: true, Keep: 1, Beacon: "unknown", Probe: "unknown"}
		if int(i) < len(snap.PoPs) && snap.PoPs[i].ID == v.ids[i] {
			st := snap.PoPs[i]
			c.Served, c.Beacon, c.Probe = st.Served, st.Beacon.String(), st.Probe.String()
			c.Load, c.Capacity, c.Keep, c.Reason = st.Load, st.Capacity, st.Keep, st.Reason
		}
		e.Candidates = append(e.Candidates, c)
	}
	ch := v.choose(rk, snap, rand.Uint64())
	e.FailOpen = ch.failOpen
	for k := 0; k < ch.n; k++ {
		e.Chosen = append(e.Chosen, v.ids[ch.pops[k]])
	}
	return e, nil
}

// String renders the explanation as the CLI prints it.
func (e Explanation) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "name %s (zone %s)\nclient %s at %s via %s, ECS scope /%d\n", e.Name, e.Zone, e.Client, e.Location, e.LocationSource, e.Scope)
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
