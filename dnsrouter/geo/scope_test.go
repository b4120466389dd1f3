package geo_test

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/meridian-edge/meridian/dnsrouter/geo"
)

func table(t *testing.T, name string, cidrs ...string) *geo.Table {
	t.Helper()
	var es []geo.Entry
	for i, c := range cidrs {
		es = append(es, geo.Entry{Prefix: netip.MustParsePrefix(c), Loc: geo.Location{Lat: float64(i), Lon: float64(i)}})
	}
	tb, err := geo.NewTable(name, es)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func scopeOf(src geo.Source, client string) int {
	p := netip.MustParsePrefix(client)
	return geo.Scope(src, p.Addr(), p.Bits(), src.Lookup(p.Addr()))
}

// The scope never lets a resolver reuse an answer for a more specific
// block of the table that places clients elsewhere (RFC 7871 7.2.1).
func TestScope(t *testing.T) {
	dev := geo.DevTable()
	nested := table(t, "nested", "10.0.0.0/8", "10.1.2.0/24", "2001:db8::/32", "2001:db8:5::/48")
	cases := []struct {
		src    geo.Source
		client string
		want   int
	}{
		{dev, "203.0.0.0/16", 24},         // the /16 holds 203.0.113.0/24 (Tokyo): not specific enough
		{dev, "100.64.0.0/16", 16},        // nothing in the table: the source prefix
		{dev, "203.0.113.0/24", 24},       // the matched block
		{dev, "203.0.113.7/32", 24},       // the matched block, for a whole address
		{dev, "2001:db8::/32", 48},        // IPv6: the /32 holds the dev /48s
		{nested, "10.5.5.5/32", 14},       // 10.4.0.0/14 is the widest network without 10.1.2.0/24
		{nested, "10.0.0.0/16", 16},       // 10.1.2.0/24 lies outside the client's /16
		{nested, "10.1.0.0/16", 24},       // ... and inside this one
		{nested, "10.128.0.0/9", 9},       // nothing below the /8 on that side
		{nested, "2001:db8:4::/47", 48},   // holds 2001:db8:5::/48
		{nested, "2001:db8:8::/48", 45},   // 2001:db8:8::/45 is the widest without it
		{dev, "::ffff:203.0.0.0/112", 24}, // an IPv4-mapped subnet is scoped as the IPv4 one
	}
	for _, c := range cases {
		if got := scopeOf(c.src, c.client); got != c.want {
			t.Errorf("%s in %s: scope %d, want %d", c.client, c.src.Name(), got, c.want)
		}
	}
}

// In a chain, a block of an earlier table inside the client's network
// lengthens the scope of a later source's answer.
func TestScopeChain(t *testing.T) {
	c := geo.Chain(table(t, "overrides", "203.0.113.0/25"), table(t, "broad", "203.0.0.0/16"))
	for client, want := range map[string]int{"203.0.0.0/16": 25, "203.0.200.1/32": 32, "203.0.113.0/24": 25, "203.0.113.0/25": 25} {
		if got := scopeOf(c, client); got != want {
			t.Errorf("%s: scope %d, want %d", client, got, want)
		}
	}
}

// The indexed computation agrees with the definition, checked entry by
// entry, on random nested tables.
func TestScopeMatchesDefinition(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	rnd := func(bits int) netip.Prefix {
		a := [4]byte{10, byte(r.IntN(4)), byte(r.IntN(256)), byte(r.IntN(256))}
		return netip.PrefixFrom(netip.AddrFrom4(a), bits).Masked()
	}
	for round := 0; round < 300; round++ {
		seen := map[netip.Prefix]bool{}
		var es []geo.Entry
		for range 1 + r.IntN(12) {
			p := rnd(8 + r.IntN(25))
			if !seen[p] {
				seen[p] = true
				es = append(es, geo.Entry{Prefix: p, Loc: geo.Location{Lat: 1}})
			}
		}
		tb, err := geo.NewTable("random", es)
		if err != nil {
			t.Fatal(err)
		}
		for range 20 {
			client := rnd(1 + r.IntN(32))
			m := tb.Lookup(client.Addr())
			got := geo.Scope(tb, client.Addr(), client.Bits(), m)
			if want := naiveScope(es, client, m); got != want {
				t.Fatalf("table %v, client %s (match /%d): scope %d, want %d", es, client, m.Bits, got, want)
			}
		}
	}
}

func naiveScope(es []geo.Entry, client netip.Prefix, m geo.Match) int {
	base := m.Bits
	if base < 0 {
		base = client.Bits()
	}
	scope := base
	for _, e := range es {
		if e.Prefix.Bits() <= base {
			continue
		}
		if e.Prefix.Bits() > client.Bits() && client.Contains(e.Prefix.Addr()) {
			scope = max(scope, e.Prefix.Bits()) // inside the client's network
			continue
		}
		// Outside: the first length at which the client's network stops
		// containing it, if that is past base.
		for l := base; l <= client.Bits(); l++ {
			if !netip.PrefixFrom(client.Addr(), l).Masked().Contains(e.Prefix.Addr()) {
				if l > base {
					scope = max(scope, l)
				}
				break
			}
		}
	}
	return scope
}
