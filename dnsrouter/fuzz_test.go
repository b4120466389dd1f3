package dnsrouter

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/meridian-edge/meridian/dnsrouter/health"
	"github.com/miekg/dns"
)

// FuzzQuery feeds arbitrary packets to the query path (the same function
// the UDP and TCP loops call). It must never panic, never answer a response
// packet, never answer larger than the transport allows, and answer
// anything it cannot parse with FORMERR or NOTIMP only.
func FuzzQuery(f *testing.F) {
	seed := func(m *dns.Msg) {
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, true)
	}
	seed(query("www.example.test.", dns.TypeA, "203.0.113.0/24"))
	seed(query("WWW.example.test.", dns.TypeAAAA, "2001:db8:3::/48"))
	seed(query("cdn.example.test.", dns.TypeANY, ""))
	seed(query("a.b.shop.example.test.", dns.TypeA, "203.0.113.0/24"))
	seed(query("tocorp.example.test.", dns.TypeA, ""))
	seed(query("x.docs.example.test.", dns.TypeA, "203.0.113.0/24"))
	seed(query("example.test.", dns.TypeNS, ""))
	seed(query("nope.example.test.", dns.TypeSOA, "198.51.100.0/24"))
	seed(withOPT(query("www.example.test.", dns.TypeA, ""), 1232, 1))
	seed(withOPT(query("www.example.test.", dns.TypeA, ""), 1232, 0, rawECS(1, 20, 203, 0, 113)))
	seed(withOPT(query("www.example.test.", dns.TypeA, ""), 1232, 0, rawECS(2, 129, make([]byte, 17)...)))
	seed(askNSID(query("www.example.test.", dns.TypeA, "203.0.113.0/24")))
	seed(askNSID(chaos("id.server.", dns.TypeTXT)))
	f.Add([]byte{}, true)
	f.Add(make([]byte, 12), false)
	f.Add([]byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1}, true) // pointer loop in the question

	opts := confOptions()
	opts.NSID = []byte("fuzz-node")
	opts.defaults()
	// Two views: the conformance fixture, and one with static records,
	// wildcards, CNAME chains and a delegation.
	chase := chaseOptions(f)
	chase.defaults()
	views := []*view{buildView(opts), buildView(chase)}
	snap := health.New(health.Config{PoPs: healthPoPs(opts.PoPs)}).Snapshot()
	src := netip.MustParseAddr("192.0.2.53")
	f.Fuzz(func(t *testing.T, pkt []byte, udp bool) {
		for _, v := range views {
			checkAnswer(t, v, snap, src, pkt, udp, opts.MaxUDPSize)
		}
	})
}

// checkAnswer is FuzzQuery's check of one packet against one view.
func checkAnswer(t *testing.T, v *view, snap *health.Snapshot, src netip.Addr, pkt []byte, udp bool, maxUDP int) {
	resp, out := answer(v, snap, pkt, src, udp, 7, nil)
	// The allocation-free fast path must give the general path's
	// answer, byte for byte, whenever it takes a query.
	if fast, _, ok := fastAnswer(v, snap, pkt, src, udp, 7, nil); ok && !bytes.Equal(fast, resp) {
		a, b := new(dns.Msg), new(dns.Msg)
		a.Unpack(fast)
		b.Unpack(resp)
		t.Fatalf("fast path differs from the general path:\nfast:\n%v\ngeneral:\n%v\nfast % x\ngeneral % x", a, b, fast, resp)
	}
	if resp == nil {
		return
	}
	if out.drop {
		t.Fatal("drop with a response")
	}
	if len(pkt) >= 3 && pkt[2]&0x80 != 0 {
		t.Fatal("answered a packet with QR set")
	}
	limit := 65535
	if udp {
		limit = maxUDP
	}
	if len(resp) > limit {
		t.Fatalf("response of %d bytes over the %d limit", len(resp), limit)
	}
	if len(resp) < 12 || binary.BigEndian.Uint16(resp) != binary.BigEndian.Uint16(pkt) || resp[2]&0x80 == 0 {
		t.Fatalf("response header %x does not answer query %x", resp[:min(12, len(resp))], pkt[:min(12, len(pkt))])
	}
	r := new(dns.Msg)
	if err := r.Unpack(resp); err != nil {
		t.Fatalf("our response does not parse: %v", err)
	}
	if r.RecursionAvailable {
		t.Fatal("RA set")
	}
	q := new(dns.Msg)
	if q.Unpack(pkt) != nil {
		if r.Rcode != dns.RcodeFormatError && r.Rcode != dns.RcodeNotImplemented {
			t.Fatalf("unparsable query answered %s", dns.RcodeToString[r.Rcode])
		}
		if len(resp) > len(pkt) && len(resp) > 12 {
			t.Fatalf("unparsable %d-byte query got a larger %d-byte answer", len(pkt), len(resp))
		}
	}
}

// The fast path takes the common queries, gives the general path's bytes,
// and leaves everything else alone.
func TestFastPathMatchesGeneralPath(t *testing.T) {
	opts := confOptions()
	opts.Answers = 2
	opts.NSID = []byte("ns1-fra")
	opts.defaults()
	v := buildView(opts)
	snap := health.New(health.Config{PoPs: healthPoPs(opts.PoPs)}).Snapshot()
	src := netip.MustParseAddr("192.0.2.53")
	cases := []struct {
		name string
		m    *dns.Msg
		fast bool
	}{
		{"A, no EDNS", query("www.example.test.", dns.TypeA, ""), true},
		{"A, mixed case, ECS v4", query("WwW.Example.TEST.", dns.TypeA, "203.0.113.0/24"), true},
		{"AAAA with ECS v6", query("www.example.test.", dns.TypeAAAA, "2001:db8:3::/48"), true},
		{"A, ECS /20", query("www.example.test.", dns.TypeA, "198.51.96.0/20"), true},
		{"A, ECS source 0", withOPT(query("www.example.test.", dns.TypeA, ""), 4096, 0, rawECS(1, 0)), true},
		{"A, EDNS with DO", func() *dns.Msg { m := query("app.eu.example.test.", dns.TypeA, ""); m.SetEdns0(1232, true); return m }(), true},
		{"A, RD and CD", func() *dns.Msg {
			m := query("other.test.", dns.TypeA, "203.0.113.0/24")
			m.RecursionDesired, m.CheckingDisabled = true, true
			return m
		}(), true},
		{"AAAA NODATA", query("www.example.test.", dns.TypeAAAA, "198.51.100.0/24"), false},
		{"alias", query("cdn.example.test.", dns.TypeA, ""), false},
		{"SOA", query("example.test.", dns.TypeSOA, ""), false},
		{"NXDOMAIN", query("nope.example.test.", dns.TypeA, ""), false},
		{"bad ECS", withOPT(query("www.example.test.", dns.TypeA, ""), 1232, 0, rawECS(1, 20, 203, 0, 113)), false},
		{"BADVERS", withOPT(query("www.example.test.", dns.TypeA, ""), 1232, 1), false},
		{"A asking for the NSID", askNSID(query("www.example.test.", dns.TypeA, "203.0.113.0/24")), false},
	}
	for _, c := range cases {
		pkt, err := c.m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		for _, udp := range []bool{true, false} {
			fast, _, ok := fastAnswer(v, snap, pkt, src, udp, 9, nil)
			if ok != c.fast {
				t.Errorf("%s: fast path taken=%v, want %v", c.name, ok, c.fast)
				continue
			}
			if !ok {
				continue
			}
			general, _ := answer(v, snap, pkt, src, udp, 9, nil)
			if !bytes.Equal(fast, general) {
				t.Errorf("%s (udp=%v): fast % x\ngeneral % x", c.name, udp, fast, general)
			}
		}
	}
	pkt, _ := query("www.example.test.", dns.TypeA, "203.0.113.0/24").Pack()
	buf := make([]byte, 0, 512)
	if n := testing.AllocsPerRun(200, func() { fastAnswer(v, snap, pkt, src, true, 9, buf) }); n != 0 {
		t.Errorf("fast path allocates %v times per query", n)
	}
}
