package geo_test

import (
	"net/netip"
	"testing"

	"github.com/meridian-edge/meridian/dnsrouter/geo"
)

func TestChain(t *testing.T) {
	overrides, err := geo.NewTable("overrides", []geo.Entry{{Prefix: netip.MustParsePrefix("203.0.113.0/25"), Loc: geo.Location{Lat: 1, Lon: 2}}})
	if err != nil {
		t.Fatal(err)
	}
	broad, err := geo.NewTable("broad", []geo.Entry{{Prefix: netip.MustParsePrefix("203.0.0.0/16"), Loc: geo.Location{Lat: 3, Lon: 4}}})
	if err != nil {
		t.Fatal(err)
	}
	c := geo.Chain(overrides, broad)
	defer c.Close()

	if m := c.Lookup(netip.MustParseAddr("203.0.113.5")); !m.Found || m.Loc.Lat != 1 || m.Bits != 25 {
		t.Errorf("override block: %+v, want the first source's answer with its /25 scope", m)
	}
	// The /16 holds the /25 of the first source: its prefix is no safe ECS
	// scope, so the chain leaves the scope to the query (-1).
	if m := c.Lookup(netip.MustParseAddr("203.0.200.1")); !m.Found || m.Loc.Lat != 3 || m.Bits != -1 {
		t.Errorf("fallback block: %+v, want the second source's answer with scope -1", m)
	}
	if m := c.Lookup(netip.MustParseAddr("198.51.100.1")); m.Found {
		t.Errorf("unknown address found: %+v", m)
	}
	if got, want := c.Name(), "table overrides then table broad"; got != want {
		t.Errorf("Name = %q, want %q", got, want)
	}
}
