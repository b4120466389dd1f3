package dnsrouter

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/dnsrouter/geo"
	"github.com/meridian-edge/meridian/dnsrouter/geo/geotest"
	"github.com/meridian-edge/meridian/internal/testutil"
	"github.com/miekg/dns"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
)

// worldPoPs is a fleet on five continents; each PoP's address ends in its
// index + 1 so answers are easy to read. Lagos has no PoP of its own.
func worldPoPs() []PoP {
	ids := []string{"ap-northeast-1", "ap-southeast-1", "ap-southeast-2", "us-east-1", "eu-west-2", "eu-central-1", "sa-brazil-south", "af-south-africa", "af-kenya", "af-egypt"}
	var pops []PoP
	for i, id := range ids {
		pops = append(pops, PoP{ID: id, Region: id, IPv4: []netip.Addr{netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)})}})
	}
	return pops
}

func popAddr(pops []PoP, id string) string {
	for _, p := range pops {
		if p.ID == id {
			return p.IPv4[0].String()
		}
	}
	panic(id)
}

// worldMMDB places test networks in Seoul, Lagos and São Paulo.
func worldMMDB(t *testing.T) string {
	return geotest.WriteCity(t, []geotest.Network{
		{CIDR: "211.0.0.0/16", Lat: 37.57, Lon: 126.98, Country: "KR"},
		{CIDR: "197.210.0.0/16", Lat: 6.45, Lon: 3.39, Country: "NG"},
		{CIDR: "177.0.0.0/16", Lat: -23.55, Lon: -46.63, Country: "BR"},
		{CIDR: "2001:db8:82::/48", Lat: 37.57, Lon: 126.98, Country: "KR"},
		{CIDR: "10.0.0.0/8", NoLocation: true, Country: "US"},
	})
}

func worldOptions(t *testing.T) Options {
	db, err := geo.OpenMMDB(worldMMDB(t))
	if err != nil {
		t.Fatal(err)
	}
	o := DevOptions()
	o.PoPs = worldPoPs()
	o.Geo = db
	o.DefaultRegion = "eu-west-2"
	return o
}

func TestGeoChoosesNearestPoP(t *testing.T) {
	o := worldOptions(t)
	pops := o.PoPs
	hz := newHealthEndpoint(t)
	for i := range o.PoPs {
		if o.PoPs[i].ID == "ap-northeast-1" {
			o.PoPs[i].HealthURL = hz.srv.URL + "/healthz"
		}
	}
	o.ProbeInterval, o.Fall, o.Rise = 20*time.Millisecond, 1, 1
	_, addr := start(t, o)
	cases := []struct {
		who, ecs, want string
		scope          uint8
	}{
		{"Seoul goes to Tokyo", "211.0.5.0/24", "ap-northeast-1", 16},
		{"Seoul over IPv6 goes to Tokyo", "2001:db8:82:1::/56", "ap-northeast-1", 48},
		{"Lagos goes to the nearest African PoP (Nairobi, 3,807 km; Cairo 3,907)", "197.210.33.0/24", "af-kenya", 16},
		{"São Paulo goes to São Paulo", "177.0.1.0/24", "sa-brazil-south", 16},
		{"a record without coordinates gets the default region", "10.20.0.0/16", "eu-west-2", 8},
		// The database's empty block around 192.0.2.0 is 192.0.0.0/6.
		{"an address the database lacks gets the default region", "192.0.2.0/24", "eu-west-2", 6},
	}
	for _, c := range cases {
		t.Run(c.who, func(t *testing.T) {
			r := exchange(t, "udp", addr, query("www.example.test.", dns.TypeA, c.ecs))
			if got := addrs(r); len(got) != 1 || got[0] != popAddr(pops, c.want) {
				t.Fatalf("answer %v, want %s (%s)", got, popAddr(pops, c.want), c.want)
			}
			if e := ecsOf(r); e == nil || e.SourceScope != c.scope {
				t.Errorf("ECS %v, want scope /%d (the database block)", e, c.scope)
			}
		})
	}
	hz.status.Store(http.StatusServiceUnavailable)
	eventually(t, "unhealthy Tokyo sends Seoul to the next nearest (Singapore)", func() bool {
		r := exchange(t, "udp", addr, query("www.example.test.", dns.TypeA, "211.0.5.0/24"))
		got := addrs(r)
		return len(got) == 1 && got[0] == popAddr(pops, "ap-southeast-1")
	})
}

// Several answers: the N nearest served PoPs, nearest first.
func TestNNearestAnswers(t *testing.T) {
	o := worldOptions(t)
	o.Answers = 3
	_, addr := start(t, o)
	r := exchange(t, "tcp", addr, query("www.example.test.", dns.TypeA, "211.0.5.0/24"))
	want := []string{popAddr(o.PoPs, "ap-northeast-1"), popAddr(o.PoPs, "ap-southeast-1"), popAddr(o.PoPs, "ap-southeast-2")}
	if got := addrs(r); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("Seoul with Answers=3: %v, want Tokyo, Singapore, Sydney %v", got, want)
	}
}

// An overloaded PoP sheds part of its clients, in proportion to how far
// past its threshold it is; below the threshold it sheds nothing.
func TestCapacitySpillOver(t *testing.T) {
	ns := testutil.StartNATS(t)
	o := DevOptions()
	o.BeaconInterval, o.MissedBeacons = 50*time.Millisecond, 10
	s, addr := start(t, o)
	if err := s.WatchBeacons(testutil.Connect(t, ns)); err != nil {
		t.Fatal(err)
	}
	f := startFleet(t, testutil.Connect(t, ns), o.BeaconInterval, "us-east-1", "eu-west-2", "ap-northeast-1")
	share := func() float64 {
		const n = 400
		tokyo := 0
		for range n {
			r := exchange(t, "udp", addr, query("www.example.test.", dns.TypeA, "203.0.113.0/24"))
			switch got := addrs(r); {
			case len(got) == 1 && got[0] == "127.0.0.13":
				tokyo++
			case len(got) == 1 && got[0] == "127.0.0.12":
			default:
				t.Fatalf("answer %v: spill must go to the next nearest (London)", got)
			}
		}
		return float64(tokyo) / n
	}
	setLoad := func(load float64) {
		f.mu.Lock()
		f.load["ap-northeast-1"] = load
		f.mu.Unlock()
		eventually(t, fmt.Sprintf("Tokyo load %g seen", load), func() bool { return s.Health().PoPs[2].Load == load })
	}
	// Capacity 100 (from the beacons), threshold 0.9 (default).
	cases := []struct {
		load     float64
		min, max float64 // Tokyo's share of its own clients
	}{
		{50, 1, 1},       // far below: keeps everyone
		{90, 1, 1},       // at the threshold: sheds nothing yet
		{95, 0.38, 0.62}, // half way to full: keeps half
		{99, 0.02, 0.22}, // nearly full: keeps a tenth
		{120, 0, 0},      // over capacity: keeps no new clients
	}
	for _, c := range cases {
		setLoad(c.load)
		if got := share(); got < c.min || got > c.max {
			t.Errorf("load %g/100: Tokyo kept %.2f of its clients, want %.2f..%.2f", c.load, got, c.min, c.max)
		}
	}
	if n := promtest.ToFloat64(s.met.spilled.WithLabelValues("ap-northeast-1")); n < 100 {
		t.Errorf("meridian_dns_spilled_total{pop=ap-northeast-1} = %v, want the shed queries counted", n)
	}
}
