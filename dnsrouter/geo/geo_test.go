package geo_test

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meridian-edge/meridian/dnsrouter/geo"
	"github.com/meridian-edge/meridian/dnsrouter/geo/geotest"
)

func TestTableLongestPrefixWins(t *testing.T) {
	tb, err := geo.ParseTable("t.yaml", []byte(`
networks:
  - cidr: 10.0.0.0/8
    region: us-east-1
  - cidr: 10.1.0.0/16
    region: eu-west-2
  - cidr: 10.1.2.0/24
    lat: 35.7
    lon: 139.7
  - cidr: 2001:db8::/32
    region: us-east-1
  - cidr: 2001:db8:5::/48
    region: eu-west-2
  - cidr: ::/0
    region: sa-brazil-south
`))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		addr  string
		found bool
		lat   float64
		bits  int
	}{
		{"10.9.9.9", true, 39.0, 8},
		{"10.1.9.9", true, 51.5, 16},
		{"10.1.2.3", true, 35.7, 24},
		{"::ffff:10.1.2.3", true, 35.7, 24},
		{"11.0.0.1", false, 0, -1}, // ::/0 is IPv6 only
		{"2001:db8:5:1::1", true, 51.5, 48},
		{"2001:db8:6::1", true, 39.0, 32},
		{"2002::1", true, -23.6, 0},
	}
	for _, c := range cases {
		m := tb.Lookup(netip.MustParseAddr(c.addr))
		if m.Found != c.found || m.Loc.Lat != c.lat || m.Bits != c.bits {
			t.Errorf("%s: %+v, want found=%v lat=%g bits=%d", c.addr, m, c.found, c.lat, c.bits)
		}
	}
	if n := testing.AllocsPerRun(100, func() { tb.Lookup(netip.MustParseAddr("10.1.2.3")) }); n != 0 {
		t.Errorf("table lookup allocates %v times", n)
	}
}

func TestTableErrorsNameTheLine(t *testing.T) {
	cases := []struct{ name, yaml, want string }{
		{"bad cidr", "networks:\n  - cidr: 10.0.0/8\n    region: us-east-1\n", `t.yaml:2: cidr: want a network like 192.0.2.0/24, got "10.0.0/8"`},
		{"host bits", "networks:\n  - cidr: 10.0.0.1/8\n    region: us-east-1\n", "t.yaml:2: cidr: 10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?"},
		{"unknown region", "networks:\n  - cidr: 10.0.0.0/8\n    region: us-east-1\n  - cidr: 11.0.0.0/8\n    region: moon\n", `t.yaml:4: region: unknown region "moon"`},
		{"lat range", "networks:\n  - cidr: 10.0.0.0/8\n    lat: 95\n    lon: 1\n", "t.yaml:2: lat: want -90..90, got 95"},
		{"both", "networks:\n  - cidr: 10.0.0.0/8\n    lat: 5\n    lon: 1\n    region: us-east-1\n", "t.yaml:2: give either region or lat/lon, not both"},
		{"neither", "networks:\n  - cidr: 10.0.0.0/8\n    lat: 5\n", "t.yaml:2: want region or both lat and lon"},
		{"unknown key", "networks:\n  - cidr: 10.0.0.0/8\n    regoin: us-east-1\n", "field regoin not found"},
		{"duplicate", "networks:\n  - cidr: 10.0.0.0/8\n    region: us-east-1\n  - cidr: 10.0.0.0/8\n    region: eu-west-2\n", "prefix 10.0.0.0/8 listed twice"},
		{"empty", "", "empty geo table"},
		{"wrong type", "networks:\n  - cidr: [1]\n", "t.yaml"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := geo.ParseTable("t.yaml", []byte(c.yaml))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to contain %q", err, c.want)
			}
		})
	}
	if _, err := geo.LoadTable(filepath.Join(t.TempDir(), "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("missing file: %v", err)
	}
}

func TestDevTable(t *testing.T) {
	tb := geo.DevTable()
	for addr, lat := range map[string]float64{"192.0.2.1": 39.0, "198.51.100.1": 51.5, "203.0.113.1": 35.7, "2001:db8:1::1": 39.0, "2001:db8:2::1": 51.5, "2001:db8:3::1": 35.7} {
		if m := tb.Lookup(netip.MustParseAddr(addr)); !m.Found || m.Loc.Lat != lat {
			t.Errorf("%s: %+v, want lat %g", addr, m, lat)
		}
	}
}

func TestMMDB(t *testing.T) {
	path := geotest.WriteCity(t, []geotest.Network{
		{CIDR: "211.0.0.0/16", Lat: 37.57, Lon: 126.98, Country: "KR"},
		{CIDR: "211.0.7.0/24", Lat: 35.18, Lon: 129.08, Country: "KR"}, // Busan, more specific
		{CIDR: "2001:db8:aa::/48", Lat: -23.55, Lon: -46.63, Country: "BR"},
		{CIDR: "10.0.0.0/8", NoLocation: true, Country: "US"},
	})
	db, err := geo.OpenMMDB(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	cases := []struct {
		addr  string
		found bool
		lat   float64
		bits  int
	}{
		// Carving Busan's /24 out of Seoul's /16 splits the tree: the
		// block that holds 211.0.1.1 is 211.0.0.0/22, the widest network
		// with one answer, which is the right ECS scope.
		{"211.0.1.1", true, 37.57, 22},
		{"211.0.7.9", true, 35.18, 24},
		{"::ffff:211.0.1.1", true, 37.57, 22},
		{"211.0.200.1", true, 37.57, 17},
		{"2001:db8:aa:1::1", true, -23.55, 48},
		{"10.1.1.1", false, 0, 8}, // country-only: unknown location, but the block is known
	}
	for _, c := range cases {
		m := db.Lookup(netip.MustParseAddr(c.addr))
		if m.Found != c.found || m.Loc.Lat != c.lat || m.Bits != c.bits {
			t.Errorf("%s: %+v, want found=%v lat=%g bits=%d", c.addr, m, c.found, c.lat, c.bits)
		}
	}
	a := netip.MustParseAddr("211.0.1.1")
	if n := testing.AllocsPerRun(100, func() { db.Lookup(a) }); n != 0 {
		t.Errorf("mmdb lookup of a cached record allocates %v times", n)
	}
	if !strings.Contains(db.Name(), path) {
		t.Errorf("Name() = %q", db.Name())
	}
}

func TestMMDBBadFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.mmdb")
	os.WriteFile(p, []byte("not a database"), 0o644)
	if _, err := geo.OpenMMDB(p); err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "City") {
		t.Fatalf("garbage file: %v", err)
	}
}

func TestOpenByExtension(t *testing.T) {
	dir := t.TempDir()
	yml := filepath.Join(dir, "t.yaml")
	os.WriteFile(yml, []byte("networks:\n  - cidr: 10.0.0.0/8\n    region: us-east-1\n"), 0o644)
	mm := geotest.WriteCity(t, []geotest.Network{{CIDR: "10.0.0.0/8", Lat: 1, Lon: 2}})
	for _, p := range []string{yml, mm} {
		s, err := geo.Open(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if m := s.Lookup(netip.MustParseAddr("10.1.1.1")); !m.Found {
			t.Errorf("%s: 10.1.1.1 not found", p)
		}
		s.Close()
	}
	if _, err := geo.Open(filepath.Join(dir, "x.csv")); err == nil || !strings.Contains(err.Error(), "want a .mmdb database or a .yaml CIDR table") {
		t.Fatalf("csv: %v", err)
	}
}
