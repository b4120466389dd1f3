package dnsrouter

import (
	"net/netip"
	"testing"

	"github.com/meridian-edge/meridian/dnsrouter/geo"
	"github.com/meridian-edge/meridian/dnsrouter/health"
	"github.com/miekg/dns"
)

func benchView(b *testing.B) (*view, *health.Snapshot) {
	o := DevOptions()
	o.PoPs = worldPoPs()
	o.defaults()
	v := buildView(o)
	return v, health.New(health.Config{PoPs: healthPoPs(o.PoPs)}).Snapshot()
}

// BenchmarkChoose is the choose step for a precomputed ranking: health,
// spill-over and N answers. Must report 0 allocs/op.
func BenchmarkChoose(b *testing.B) {
	v, snap := benchView(b)
	rk := v.ranks.lookup(geo.Location{Lat: 35.7, Lon: 139.7})
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		v.choose(rk, snap, nil, uint64(i))
	}
}

// BenchmarkDecide is the whole decision for a client address: geo table
// lookup, ranking cache, choose. Must report 0 allocs/op.
func BenchmarkDecide(b *testing.B) {
	v, snap := benchView(b)
	a := netip.MustParseAddr("203.0.113.9")
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		_, rk, _, _ := v.locate(a)
		v.choose(rk, snap, nil, uint64(i))
	}
}

// BenchmarkFastAnswer is the common query (A with ECS for a geo-routed
// name) from wire bytes to wire bytes on the fast path: parse, ECS,
// decision, write. Must report 0 allocs/op.
// The wildcard case is a name two labels under a geo-routed "*.shop",
// found by walking up its labels after the exact lookup misses.
func BenchmarkFastAnswer(b *testing.B) {
	for _, c := range []struct{ bench, name string }{
		{"exact", "www.example.test."},
		{"wildcard", "a.b.shop.example.test."},
	} {
		b.Run(c.bench, func(b *testing.B) {
			o := DevOptions()
			o.PoPs = worldPoPs()
			o.Zones[0].Names = append(o.Zones[0].Names, "*.shop")
			o.defaults()
			v := buildView(o)
			snap := health.New(health.Config{PoPs: healthPoPs(o.PoPs)}).Snapshot()
			pkt, _ := query(c.name, dns.TypeA, "203.0.113.0/24").Pack()
			src := netip.MustParseAddr("127.0.0.1")
			buf := make([]byte, 0, 4096)
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				resp, _, ok := fastAnswer(v, snap, pkt, src, true, uint64(i), buf)
				if !ok || len(resp) == 0 {
					b.Fatal("not answered on the fast path")
				}
			}
		})
	}
}

// BenchmarkAnswer is the same query on the general path (miekg/dns parse
// and pack), which serves everything the fast path leaves.
func BenchmarkAnswer(b *testing.B) {
	v, snap := benchView(b)
	pkt, _ := query("www.example.test.", dns.TypeA, "203.0.113.0/24").Pack()
	src := netip.MustParseAddr("127.0.0.1")
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		resp, _ := answer(v, snap, pkt, src, true, uint64(i), buf)
		if len(resp) == 0 {
			b.Fatal("no answer")
		}
	}
}

// BenchmarkServe is everything a UDP worker does per query except the two
// system calls: fast path, time budget, metrics.
func BenchmarkServe(b *testing.B) {
	o := DevOptions()
	o.PoPs = worldPoPs()
	s, err := New(o)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	pkt, _ := query("www.example.test.", dns.TypeA, "203.0.113.0/24").Pack()
	src := netip.MustParseAddr("127.0.0.1")
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		if resp := s.serve(pkt, src, true, buf); len(resp) == 0 {
			b.Fatal("no answer")
		}
	}
}
