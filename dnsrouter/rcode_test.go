package dnsrouter

import (
	"testing"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
)

// TestBADVERSCountedAsBADVERS: a query with an unknown EDNS version gets
// BADVERS (extended rcode 16 in the OPT record), and the query counter says
// BADVERS, not BADSIG (TSIG's 16, which miekg/dns's RcodeToString names).
func TestBADVERSCountedAsBADVERS(t *testing.T) {
	reg := prometheus.NewRegistry()
	o := DevOptions()
	o.Registerer = reg
	s, addr := start(t, o)
	for _, netw := range []string{"udp", "tcp"} {
		r := exchange(t, netw, addr, withOPT(query("www.example.test.", dns.TypeA, ""), 1232, 1))
		if r.Rcode != dns.RcodeBadVers {
			t.Fatalf("%s: rcode %d, want BADVERS (16)", netw, r.Rcode)
		}
	}
	if got := promtest.ToFloat64(s.met.queries.WithLabelValues("A", "BADVERS", "")); got != 2 {
		t.Errorf("queries{A,BADVERS} = %v, want 2", got)
	}
	if n := promtest.CollectAndCount(s.met.queries); n != 1 {
		t.Errorf("%d query series, want only the BADVERS one (no BADSIG)", n)
	}
}
