package dnsrouter

import (
	"bytes"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/meridian-edge/meridian/dnsrouter/health"
	"github.com/meridian-edge/meridian/dnsrouter/records"
	"github.com/meridian-edge/meridian/internal/testutil"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// chaseOptions is DevOptions with a geo-routed wildcard (*.shop), static
// wildcards, CNAME chains within and across zones, a delegation (corp,
// with glue), and a second zone
// (other.test) with a child zone of the first (sub.shop.example.test)
// whose apex a wildcard of the parent must not reach through.
func chaseOptions(t testing.TB) Options {
	t.Helper()
	o := DevOptions()
	o.Zones[0].Names = []string{"www", "*.shop"}
	o.Zones[0].Aliases = map[string]string{"*.old": "www"}
	o.Zones = append(o.Zones,
		Zone{Apex: "other.test", Names: []string{"edge"}, NS: o.Zones[0].NS, SOA: SOA{TTL: 900, Minimum: 900}},
		Zone{Apex: "sub.shop.example.test", Names: []string{"www"}, NS: o.Zones[0].NS})
	add := func(z int, texts ...string) {
		for _, s := range texts {
			rr, err := records.Parse(o.Zones[z].Apex, s)
			if err != nil {
				t.Fatal(err)
			}
			o.Zones[z].Records = append(o.Zones[z].Records, rr)
		}
	}
	add(0, `* TXT "wild"`, `exists TXT "here"`, `deep.ent TXT "below an empty non-terminal"`,
		"*.docs CNAME www", "shop-eu CNAME a.shop", "a CNAME b", "b CNAME mail", "mail A 192.0.2.25",
		"gone CNAME nothere.ent", "out CNAME example.github.io.", "cross CNAME edge.other.test.",
		"crossgone CNAME nothere.other.test.", "loop CNAME loop.other.test.",
		"corp NS ns1.corp", "corp NS ns.elsewhere.net.", "ns1.corp A 192.0.2.53", "tocorp CNAME www.corp",
		"ext NS ns1.example.test.", "ext NS ns-b.other.test.")
	add(1, "loop CNAME loop.example.test.", `info TXT "other"`, "ns-b A 192.0.2.99")
	return o
}

// TestWildcardsAndChains: wildcards answer the names under their parent
// that do not exist (RFC 4592), geo-routed ones through the nearest PoP
// as a plain name would; a static CNAME to a name in our zones is answered
// with the target's records (over UDP and TCP), ending in the target's
// NODATA or NXDOMAIN (RFC 6604); chains leaving our zones, and loops
// across zones, are left to the resolver.
func TestWildcardsAndChains(t *testing.T) {
	_, addr := start(t, chaseOptions(t))
	const tokyo = "203.0.113.0/24" // the dev table's ap-northeast-1 client, answered 127.0.0.13
	for _, netw := range []string{"udp", "tcp"} {
		for _, c := range []struct {
			name  string
			qtype uint16
			ecs   string
			rcode int
			want  []string // the answer's records as text, in order; nil: none
			soa   string   // the apex of the negative answer's SOA; "": none
			scope bool     // the answer depends on the client (ECS scope > 0)
		}{
			// A geo-routed wildcard: any depth below shop, the owner as asked.
			{"a.shop.example.test.", dns.TypeA, tokyo, dns.RcodeSuccess, []string{"a.shop.example.test.\t30\tIN\tA\t127.0.0.13"}, "", true},
			{"X.y.Shop.example.test.", dns.TypeA, tokyo, dns.RcodeSuccess, []string{"X.y.Shop.example.test.\t30\tIN\tA\t127.0.0.13"}, "", true},
			{"a.shop.example.test.", dns.TypeTXT, "", dns.RcodeSuccess, nil, "example.test.", false},
			{"shop.example.test.", dns.TypeA, "", dns.RcodeSuccess, nil, "example.test.", false}, // the wildcard's parent exists, empty
			// A static wildcard, and what it does not cover.
			{"FoO.example.test.", dns.TypeTXT, "", dns.RcodeSuccess, []string{"FoO.example.test.\t3600\tIN\tTXT\t\"wild\""}, "", false},
			{"foo.bar.example.test.", dns.TypeTXT, "", dns.RcodeSuccess, []string{"foo.bar.example.test.\t3600\tIN\tTXT\t\"wild\""}, "", false},
			{"*.example.test.", dns.TypeTXT, "", dns.RcodeSuccess, []string{"*.example.test.\t3600\tIN\tTXT\t\"wild\""}, "", false},
			{"foo.example.test.", dns.TypeMX, "", dns.RcodeSuccess, nil, "example.test.", false},
			{"exists.example.test.", dns.TypeTXT, "", dns.RcodeSuccess, []string{"exists.example.test.\t3600\tIN\tTXT\t\"here\""}, "", false},
			{"exists.example.test.", dns.TypeMX, "", dns.RcodeSuccess, nil, "example.test.", false},
			{"www.example.test.", dns.TypeTXT, "", dns.RcodeSuccess, nil, "example.test.", false},
			{"ent.example.test.", dns.TypeTXT, "", dns.RcodeSuccess, nil, "example.test.", false},
			{"x.ent.example.test.", dns.TypeTXT, "", dns.RcodeNameError, nil, "example.test.", false}, // its closest encloser has no wildcard
			// A child zone's names are its own, not the parent's wildcard's.
			{"q.sub.shop.example.test.", dns.TypeA, tokyo, dns.RcodeNameError, nil, "sub.shop.example.test.", false},
			{"www.sub.shop.example.test.", dns.TypeA, tokyo, dns.RcodeSuccess, []string{"www.sub.shop.example.test.\t30\tIN\tA\t127.0.0.13"}, "", true},
			// Chains.
			{"x.old.example.test.", dns.TypeA, tokyo, dns.RcodeSuccess, []string{
				"x.old.example.test.\t30\tIN\tCNAME\twww.example.test.", "www.example.test.\t30\tIN\tA\t127.0.0.13"}, "", true},
			{"x.docs.example.test.", dns.TypeA, tokyo, dns.RcodeSuccess, []string{
				"x.docs.example.test.\t3600\tIN\tCNAME\twww.example.test.", "www.example.test.\t30\tIN\tA\t127.0.0.13"}, "", true},
			{"shop-eu.example.test.", dns.TypeA, tokyo, dns.RcodeSuccess, []string{
				"shop-eu.example.test.\t3600\tIN\tCNAME\ta.shop.example.test.", "a.shop.example.test.\t30\tIN\tA\t127.0.0.13"}, "", true},
			{"a.example.test.", dns.TypeA, "", dns.RcodeSuccess, []string{
				"a.example.test.\t3600\tIN\tCNAME\tb.example.test.", "b.example.test.\t3600\tIN\tCNAME\tmail.example.test.",
				"mail.example.test.\t3600\tIN\tA\t192.0.2.25"}, "", false},
			{"a.example.test.", dns.TypeTXT, "", dns.RcodeSuccess, []string{
				"a.example.test.\t3600\tIN\tCNAME\tb.example.test.", "b.example.test.\t3600\tIN\tCNAME\tmail.example.test."}, "example.test.", false},
			{"a.example.test.", dns.TypeCNAME, "", dns.RcodeSuccess, []string{"a.example.test.\t3600\tIN\tCNAME\tb.example.test."}, "", false},
			{"gone.example.test.", dns.TypeA, "", dns.RcodeNameError, []string{"gone.example.test.\t3600\tIN\tCNAME\tnothere.ent.example.test."}, "example.test.", false},
			{"out.example.test.", dns.TypeA, "", dns.RcodeSuccess, []string{"out.example.test.\t3600\tIN\tCNAME\texample.github.io."}, "", false},
			{"cross.example.test.", dns.TypeA, tokyo, dns.RcodeSuccess, []string{
				"cross.example.test.\t3600\tIN\tCNAME\tedge.other.test.", "edge.other.test.\t30\tIN\tA\t127.0.0.13"}, "", true},
			{"crossgone.example.test.", dns.TypeA, "", dns.RcodeNameError, []string{"crossgone.example.test.\t3600\tIN\tCNAME\tnothere.other.test."}, "other.test.", false},
		} {
			r := exchange(t, netw, addr, query(c.name, c.qtype, c.ecs))
			var got []string
			for _, rr := range r.Answer {
				got = append(got, rr.String())
			}
			soa := ""
			if len(r.Ns) == 1 && r.Ns[0].Header().Rrtype == dns.TypeSOA {
				soa = r.Ns[0].Header().Name
			}
			scoped := ecsOf(r) != nil && ecsOf(r).SourceScope > 0
			if r.Rcode != c.rcode || !r.Authoritative || strings.Join(got, "\n") != strings.Join(c.want, "\n") || soa != c.soa || scoped != c.scope {
				t.Errorf("%s %s %s: %s aa=%v answer %q soa=%q scoped=%v; want %s answer %q soa=%q scoped=%v", netw, c.name, dns.TypeToString[c.qtype],
					dns.RcodeToString[r.Rcode], r.Authoritative, got, soa, scoped, dns.RcodeToString[c.rcode], c.want, c.soa, c.scope)
			}
		}
	}
	// A loop through two zones (records.Check sees one zone at a time)
	// is followed maxChase times and answered; the resolver gives up.
	r := exchange(t, "udp", addr, query("loop.example.test.", dns.TypeA, ""))
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != maxChase+1 {
		t.Fatalf("loop across zones: %s with %d records, want NOERROR with %d CNAMEs", dns.RcodeToString[r.Rcode], len(r.Answer), maxChase+1)
	}
}

// TestFastPathWildcard: the allocation-free fast path answers geo-routed
// wildcards too, byte for byte as the general path does, and leaves to
// the general path the names a wildcard does not cover.
func TestFastPathWildcard(t *testing.T) {
	opts := chaseOptions(t)
	opts.defaults()
	v := buildView(opts)
	snap := health.New(health.Config{PoPs: healthPoPs(opts.PoPs)}).Snapshot()
	src := netip.MustParseAddr("192.0.2.53")
	for _, c := range []struct {
		name string
		fast bool
	}{
		{"a.shop.example.test.", true},
		{"X.y.SHOP.example.test.", true},
		{"www.example.test.", true},
		{"shop.example.test.", false},         // exists (the wildcard's parent), no data
		{"q.sub.shop.example.test.", false},   // in the child zone: NXDOMAIN there
		{"www.sub.shop.example.test.", true},  // the child zone's own name
		{"foo.example.test.", false},          // a static wildcard (TXT only): NODATA
		{"x.docs.example.test.", false},       // a wildcard CNAME
		{"*.shop.example.test.", false},       // the wildcard itself, asked literally
		{"a.b.other.test.", false},            // another zone without wildcards
		{"x.corp.example.test.", false},       // delegated: a referral
		{"a.shop.example.test.other.", false}, // no zone
	} {
		pkt, err := query(c.name, dns.TypeA, "203.0.113.0/24").Pack()
		if err != nil {
			t.Fatal(err)
		}
		fast, _, ok := fastAnswer(v, snap, pkt, src, true, 9, nil)
		if ok != c.fast {
			t.Errorf("%s: fast path taken=%v, want %v", c.name, ok, c.fast)
			continue
		}
		if general, _ := answer(v, snap, pkt, src, true, 9, nil); ok && !bytes.Equal(fast, general) {
			t.Errorf("%s: fast % x\ngeneral % x", c.name, fast, general)
		}
	}
	pkt, _ := query("deep.er.shop.example.test.", dns.TypeA, "203.0.113.0/24").Pack()
	buf := make([]byte, 0, 512)
	if n := testing.AllocsPerRun(200, func() { fastAnswer(v, snap, pkt, src, true, 9, buf) }); n != 0 {
		t.Errorf("fast path allocates %v times per wildcard query", n)
	}
}

// TestExplainFollows: dns explain follows names as answers do (aliases,
// static CNAMEs, wildcards) and shows the records of names that are not
// geo-routed, so that an operator can ask about any name of a zone.
func TestExplainFollows(t *testing.T) {
	s, _ := start(t, chaseOptions(t))
	tokyo := netip.MustParsePrefix("203.0.113.0/24")
	for _, c := range []struct {
		name     string
		chain    []string
		answered string // Explanation.Name
		wildcard string
		static   []string // nil: a geo decision, which must choose Tokyo
		outside  bool
		text     string // in String()
	}{
		{"x.docs.example.test", []string{"x.docs.example.test. CNAME www.example.test."}, "www.example.test.", "", nil, false, "chosen: ap-northeast-1"},
		{"A.b.Shop.example.test", nil, "a.b.shop.example.test.", "*.shop.example.test.", nil, false, "answered by wildcard *.shop.example.test."},
		{"a.example.test", []string{"a.example.test. CNAME b.example.test.", "b.example.test. CNAME mail.example.test."}, "mail.example.test.", "",
			[]string{"mail.example.test. 3600 IN A 192.0.2.25"}, false, "not geo-routed: every client gets its static records"},
		{"foo.example.test", nil, "foo.example.test.", "*.example.test.", []string{`foo.example.test. 3600 IN TXT "wild"`}, false, `foo.example.test. 3600 IN TXT "wild"`},
		{"ns1.example.test", nil, "ns1.example.test.", "", []string{"ns1.example.test. 3600 IN A 127.0.0.1"}, false, "ns1.example.test. 3600 IN A 127.0.0.1"},
		{"out.example.test", []string{"out.example.test. CNAME example.github.io."}, "out.example.test.", "", nil, true, "outside our zones"},
	} {
		e, err := s.Explain(tokyo, c.name)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		geoOK := c.static != nil || c.outside || (len(e.Chosen) == 1 && e.Chosen[0] == "ap-northeast-1" && e.Scope == 24)
		if strings.Join(e.Chain, "|") != strings.Join(c.chain, "|") || e.Name != c.answered || e.Wildcard != c.wildcard ||
			strings.Join(e.Static, "|") != strings.Join(c.static, "|") || e.Outside != c.outside || !geoOK || !strings.Contains(e.String(), c.text) {
			t.Errorf("%s: %+v\n%s", c.name, e, e)
		}
	}
	for _, c := range []struct{ name, want string }{
		{"gone.example.test", "nothere.ent.example.test. does not exist in zone example.test. (NXDOMAIN) (via gone.example.test. CNAME nothere.ent.example.test.)"},
		{"ent.example.test", "ent.example.test. exists in zone example.test. but holds no records"},
		{"loop.example.test", "more than 8 CNAMEs from loop.example.test"},
	} {
		if _, err := s.Explain(tokyo, c.name); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Explain(%s): %v, want %q", c.name, err, c.want)
		}
	}
}

// TestDelegation: NS records below the apex delegate that name and all
// under it: queries there get a referral (RFC 1034 4.3.2; not
// authoritative, the cut's NS in the authority section, the glue in the
// additional), over UDP and TCP, even where a wildcard of the zone would
// match; DS at the cut is the parent's to answer (NODATA, unsigned); a
// CNAME into the delegation is answered alone, for the resolver to
// follow; dns explain names the cut.
func TestDelegation(t *testing.T) {
	s, addr := start(t, chaseOptions(t))
	ns := []string{"corp.example.test.\t3600\tIN\tNS\tns.elsewhere.net.", "corp.example.test.\t3600\tIN\tNS\tns1.corp.example.test."}
	glue := []string{"ns1.corp.example.test.\t3600\tIN\tA\t192.0.2.53"}
	for _, netw := range []string{"udp", "tcp"} {
		for _, c := range []struct {
			name   string
			qtype  uint16
			aa     bool
			answer []string
			auth   []string // authority section, sorted; nil: none
			extra  []string // additional section without the OPT, sorted
		}{
			{"corp.example.test.", dns.TypeA, false, nil, ns, glue},
			{"www.Corp.example.test.", dns.TypeA, false, nil, ns, glue},
			{"a.b.corp.example.test.", dns.TypeTXT, false, nil, ns, glue}, // not the zone's "*" TXT
			{"corp.example.test.", dns.TypeNS, false, nil, ns, glue},
			{"ns1.corp.example.test.", dns.TypeA, false, nil, ns, glue}, // glue is not an authoritative answer
			{"corp.example.test.", dns.TypeDS, true, nil, []string{"example.test.\t60\tIN\tSOA\tns1.example.test. hostmaster.example.test. 1 3600 600 86400 60"}, nil},
			{"tocorp.example.test.", dns.TypeA, true, []string{"tocorp.example.test.\t3600\tIN\tCNAME\twww.corp.example.test."}, nil, nil},
			// Servers named elsewhere in our zones: their addresses ride along
			// (the zone's own name server's glue, another zone's record).
			{"x.ext.example.test.", dns.TypeA, false, nil, []string{"ext.example.test.\t3600\tIN\tNS\tns-b.other.test.", "ext.example.test.\t3600\tIN\tNS\tns1.example.test."},
				[]string{"ns-b.other.test.\t3600\tIN\tA\t192.0.2.99", "ns1.example.test.\t3600\tIN\tA\t127.0.0.1"}},
		} {
			r := exchange(t, netw, addr, query(c.name, c.qtype, ""))
			text := func(rrs []dns.RR) []string {
				var out []string
				for _, rr := range rrs {
					if rr.Header().Rrtype != dns.TypeOPT {
						out = append(out, rr.String())
					}
				}
				slices.Sort(out)
				return out
			}
			if r.Rcode != dns.RcodeSuccess || r.Authoritative != c.aa || !slices.Equal(text(r.Answer), c.answer) ||
				!slices.Equal(text(r.Ns), c.auth) || !slices.Equal(text(r.Extra), c.extra) {
				t.Errorf("%s %s %s: %s aa=%v\nanswer %q\nauthority %q\nadditional %q\nwant aa=%v answer %q authority %q additional %q", netw, c.name,
					dns.TypeToString[c.qtype], dns.RcodeToString[r.Rcode], r.Authoritative, text(r.Answer), text(r.Ns), text(r.Extra), c.aa, c.answer, c.auth, c.extra)
			}
		}
	}
	e, err := s.Explain(netip.MustParsePrefix("203.0.113.0/24"), "www.corp.example.test")
	if err != nil || e.Delegated != "corp.example.test." || len(e.Static) != 3 ||
		!strings.Contains(e.String(), "delegated at corp.example.test.: these servers answer it") ||
		!strings.Contains(e.String(), "ns1.corp.example.test. 3600 IN A 192.0.2.53") {
		t.Errorf("explain: %v %+v\n%s", err, e, e)
	}
}

// TestAnswerKindsCounted: meridian_dns_answers_total counts what answered
// each query (geo, static, zone, referral, negative), on the fast path as
// on the general one; wildcard answers and the CNAMEs followed have
// counters of their own.
func TestAnswerKindsCounted(t *testing.T) {
	o := chaseOptions(t)
	reg := prometheus.NewRegistry()
	o.Registerer = reg
	_, addr := start(t, o)
	for _, q := range []struct {
		name  string
		qtype uint16
	}{
		{"www.example.test.", dns.TypeA},         // geo, fast path
		{"a.shop.example.test.", dns.TypeA},      // geo, a wildcard, fast path
		{"a.shop.example.test.", dns.TypeAAAA},   // negative (no IPv6 PoP for this client), a wildcard
		{"exists.example.test.", dns.TypeTXT},    // static
		{"foo.example.test.", dns.TypeTXT},       // static, a wildcard
		{"a.example.test.", dns.TypeA},           // static, after two CNAMEs followed
		{"example.test.", dns.TypeNS},            // zone
		{"corp.example.test.", dns.TypeA},        // referral
		{"nothere.ent.example.test.", dns.TypeA}, // negative
	} {
		exchange(t, "udp", addr, query(q.name, q.qtype, "203.0.113.0/24"))
	}
	for kind, want := range map[string]float64{"geo": 2, "static": 3, "zone": 1, "referral": 1, "negative": 2} {
		if got := testutil.CounterSum(t, reg, "meridian_dns_answers_total", "kind", kind); got != want {
			t.Errorf("answers_total{kind=%q} = %v, want %v", kind, got, want)
		}
	}
	for name, want := range map[string]float64{"meridian_dns_wildcard_answers_total": 3, "meridian_dns_cnames_chased_total": 2} {
		if got := testutil.MetricSum(t, reg, name, nil); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}
