package dnsrouter

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"

	"github.com/meridian-edge/meridian/dnsrouter/health"
	"github.com/miekg/dns"
)

// fenceOptions is DevOptions with names kept to some PoPs: eu to London,
// the *.apps wildcard to Virginia, an alias of eu; www stays open to all.
func fenceOptions() Options {
	o := DevOptions()
	o.Zones[0].Names = []string{"www", "eu", "*.apps"}
	o.Zones[0].Aliases = map[string]string{"cdn-eu": "eu"}
	o.Zones[0].PoPs = map[string][]string{"eu": {"eu-west-2"}, "*.apps": {"us-east-1"}}
	return o
}

// TestPoPsPerName: a name kept to some PoPs is answered with the nearest
// of those, for a client nearer to another (over UDP and TCP, through an
// alias and a wildcard, on the fast path as on the general one); an
// unlisted name still gets the nearest of all.
func TestPoPsPerName(t *testing.T) {
	s, addr := start(t, fenceOptions())
	const tokyo = "203.0.113.0/24" // nearest PoP ap-northeast-1, 127.0.0.13
	for _, netw := range []string{"udp", "tcp"} {
		for _, c := range []struct{ name, want string }{
			{"www.example.test.", "127.0.0.13"},
			{"eu.example.test.", "127.0.0.12"},
			{"cdn-eu.example.test.", "127.0.0.12"},
			{"x.apps.example.test.", "127.0.0.11"},
		} {
			r := exchange(t, netw, addr, query(c.name, dns.TypeA, tokyo))
			if got := addrs(r); len(got) != 1 || got[0] != c.want {
				t.Errorf("%s %s from Tokyo: %v, want %s", netw, c.name, got, c.want)
			}
		}
	}
	e, err := s.Explain(netip.MustParsePrefix(tokyo), "eu.example.test")
	if err != nil || len(e.Chosen) != 1 || e.Chosen[0] != "eu-west-2" || !e.Candidates[0].Excluded ||
		!strings.Contains(e.String(), "not one of the name's pops") {
		t.Errorf("explain eu from Tokyo: %v %+v\n%s", err, e, e)
	}
	for _, c := range []struct {
		pops map[string][]string
		want string
	}{
		{map[string][]string{"mail": {"eu-west-2"}}, "Zones[0].PoPs[mail]: mail.example.test. is not one of the zone's served Names"},
		{map[string][]string{"eu": {"eu-west-9"}}, `Zones[0].PoPs[eu]: "eu-west-9" is not one of the PoPs`},
		{map[string][]string{"eu": nil}, "Zones[0].PoPs[eu]: no PoPs"},
	} {
		o := fenceOptions()
		o.Zones[0].PoPs = c.pops
		if _, err := New(o); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want %q", c.pops, err, c.want)
		}
	}
}

// TestPoPsPerNameFailOpen: when none of a name's PoPs is healthy the
// nearest of them is answered, never a PoP outside the list; the fast
// path gives the general path's bytes.
func TestPoPsPerNameFailOpen(t *testing.T) {
	o := fenceOptions()
	o.defaults()
	v := buildView(o)
	src := netip.MustParseAddr("192.0.2.53")
	snap := &health.Snapshot{}
	for _, p := range o.PoPs {
		snap.PoPs = append(snap.PoPs, health.State{ID: p.ID, Served: p.ID != "eu-west-2", Keep: 1})
	}
	for _, c := range []struct{ name, want string }{
		{"eu.example.test.", "127.0.0.12"}, // London down: still London
		{"www.example.test.", "127.0.0.13"},
		{"a.b.apps.example.test.", "127.0.0.11"},
	} {
		pkt, _ := query(c.name, dns.TypeA, "203.0.113.0/24").Pack()
		general, _ := answer(v, snap, pkt, src, true, 5, nil)
		r := new(dns.Msg)
		if err := r.Unpack(general); err != nil {
			t.Fatal(err)
		}
		if got := addrs(r); len(got) != 1 || got[0] != c.want {
			t.Errorf("%s with London down: %v, want %s", c.name, got, c.want)
		}
		fast, _, ok := fastAnswer(v, snap, pkt, src, true, 5, nil)
		if !ok || !bytes.Equal(fast, general) {
			t.Errorf("%s: fast path taken=%v, or its bytes differ from the general path's", c.name, ok)
		}
	}
}
