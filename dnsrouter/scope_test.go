package dnsrouter

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/miekg/dns"
)

// RFC 7871 7.2.1: a client subnet that holds a more specific block of the
// geo table (203.0.0.0/16 holds 203.0.113.0/24, Tokyo) gets the default
// answer with a scope longer than its source prefix, so that no resolver
// caches that answer for the Tokyo clients inside the /16. Over UDP and
// TCP, on the fast path (A) and the general one (AAAA NODATA, ANY).
func TestECSScopeCoversNestedBlocks(t *testing.T) {
	_, addr := start(t, DevOptions())
	for _, netw := range []string{"udp", "tcp"} {
		for _, c := range []struct {
			qtype  uint16
			subnet string
			answer []string
			scope  uint8
		}{
			{dns.TypeA, "203.0.0.0/16", []string{"127.0.0.11"}, 24},
			{dns.TypeAAAA, "203.0.0.0/16", nil, 24},
			{dns.TypeANY, "203.0.0.0/16", []string{"127.0.0.11"}, 24},
			{dns.TypeA, "2001:db8::/32", []string{"127.0.0.11"}, 48},
			{dns.TypeA, "203.0.113.0/24", []string{"127.0.0.13"}, 24},
			{dns.TypeA, "100.64.0.0/16", []string{"127.0.0.11"}, 16},
		} {
			r := exchange(t, netw, addr, query("www.example.test.", c.qtype, c.subnet))
			e := ecsOf(r)
			if r.Rcode != dns.RcodeSuccess || !slices.Equal(addrs(r), c.answer) || e == nil || e.SourceScope != c.scope {
				t.Errorf("%s %s +subnet=%s: %s %v, ECS %v; want %v with scope /%d",
					netw, dns.TypeToString[c.qtype], c.subnet, dns.RcodeToString[r.Rcode], addrs(r), e, c.answer, c.scope)
			}
		}
	}
}

// dns explain reports the same scope as the answers.
func TestExplainScopeCoversNestedBlocks(t *testing.T) {
	s, _ := start(t, DevOptions())
	e, err := s.Explain(netip.MustParsePrefix("203.0.0.0/16"), "www.example.test")
	if err != nil {
		t.Fatal(err)
	}
	if e.Scope != 24 || !slices.Equal(e.Chosen, []string{"us-east-1"}) {
		t.Fatalf("explain 203.0.0.0/16: scope /%d, chosen %v; want /24 and us-east-1", e.Scope, e.Chosen)
	}
}
