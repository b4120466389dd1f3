package dnsrouter

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"testing"

	"github.com/miekg/dns"
)

// confOptions is the fixture for the conformance table: the dev PoPs (no
// IPv6 except Tokyo), an alias, an empty non-terminal, a geo-routed
// wildcard (*.shop), and distinct SOA
// TTL/MINIMUM so that the negative TTL rule is visible.
func confOptions() Options {
	o := DevOptions()
	o.Zones = []Zone{{
		Apex:    "example.test",
		Names:   []string{"www", "app.eu", "*.shop"},
		Aliases: map[string]string{"cdn": "www"},
		NS: []NameServer{
			{Name: "ns1", Addrs: []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")}},
			{Name: "ns.provider.example."},
		},
		SOA: SOA{TTL: 300, Minimum: 120, Serial: 2026112701},
		TTL: 20,
	}, {
		Apex:  "other.test",
		Names: []string{"@"},
		NS:    []NameServer{{Name: "ns1.example.test."}},
		SOA:   SOA{TTL: 30, Minimum: 600},
	}}
	o.PoPs[2].IPv6 = []netip.Addr{netip.MustParseAddr("fd00::13")}
	return o
}

// withOPT adds an OPT record with the given UDP size, version and options.
func withOPT(m *dns.Msg, size uint16, version uint8, opts ...dns.EDNS0) *dns.Msg {
	o := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
	o.SetUDPSize(size)
	o.SetVersion(version)
	o.Option = opts
	m.Extra = append(m.Extra, o)
	return m
}

// rawECS is an ECS option with exactly the given wire bytes, so that
// malformed options reach the server as sent.
func rawECS(family uint16, source uint8, addr ...byte) dns.EDNS0 {
	b := make([]byte, 4, 4+len(addr))
	binary.BigEndian.PutUint16(b, family)
	b[2] = source
	return &dns.EDNS0_LOCAL{Code: dns.EDNS0SUBNET, Data: append(b, addr...)}
}

// ownersAsAsked checks that every answer record is owned by qname spelled
// exactly as the query did (0x20).
func ownersAsAsked(qname string) func(t *testing.T, r *dns.Msg) {
	return func(t *testing.T, r *dns.Msg) {
		for _, rr := range r.Answer {
			if rr.Header().Name != qname {
				t.Errorf("%s owned by %q, want the QNAME as asked, %q", dns.TypeToString[rr.Header().Rrtype], rr.Header().Name, qname)
			}
		}
	}
}

type want struct {
	rcode   int
	aa      bool
	tc      bool
	answer  []string // A/AAAA addresses in order (nil: not checked)
	nAnswer int      // number of answer records (-1: not checked)
	soaTTL  uint32   // SOA in authority with this TTL (0: no SOA expected)
	scope   int      // expected ECS scope; -1: no ECS option expected
	noOPT   bool     // the response must carry no OPT
	check   func(t *testing.T, r *dns.Msg)
}

func TestConformance(t *testing.T) {
	_, addr := start(t, confOptions())
	q := query
	cases := []struct {
		name string
		msg  func() *dns.Msg
		nets []string // default both
		want want
	}{
		{"SOA at apex", func() *dns.Msg { return q("example.test.", dns.TypeSOA, "") }, nil,
			want{rcode: 0, aa: true, nAnswer: 1, scope: -1, noOPT: true, check: func(t *testing.T, r *dns.Msg) {
				soa, ok := r.Answer[0].(*dns.SOA)
				if !ok || soa.Serial != 2026112701 || soa.Minttl != 120 || soa.Ns != "ns1.example.test." || soa.Mbox != "hostmaster.example.test." {
					t.Errorf("SOA = %v", r.Answer[0])
				}
			}}},
		{"NS at apex with glue", func() *dns.Msg { return q("example.test.", dns.TypeNS, "") }, nil,
			want{rcode: 0, aa: true, nAnswer: 2, scope: -1, check: func(t *testing.T, r *dns.Msg) {
				var glue []string
				for _, rr := range r.Extra {
					glue = append(glue, rr.String())
				}
				if len(r.Extra) != 2 || r.Extra[0].(*dns.A).A.String() != "127.0.0.1" || r.Extra[1].(*dns.AAAA).AAAA.String() != "::1" {
					t.Errorf("glue = %v, want ns1's A 127.0.0.1 and AAAA ::1", glue)
				}
			}}},
		{"served name, resolver address unknown: default region", func() *dns.Msg { return q("www.example.test.", dns.TypeA, "") }, nil,
			want{rcode: 0, aa: true, answer: []string{"127.0.0.11"}, nAnswer: 1, scope: -1, noOPT: true, check: func(t *testing.T, r *dns.Msg) {
				if r.Answer[0].Header().Ttl != 20 {
					t.Errorf("answer TTL %d, want the zone's 20", r.Answer[0].Header().Ttl)
				}
			}}},
		{"question echoed as asked, case-insensitive match", func() *dns.Msg { return q("WwW.ExAmPlE.TeSt.", dns.TypeA, "203.0.113.0/24") }, nil,
			want{rcode: 0, aa: true, answer: []string{"127.0.0.13"}, nAnswer: 1, scope: 24, check: func(t *testing.T, r *dns.Msg) {
				if r.Question[0].Name != "WwW.ExAmPlE.TeSt." {
					t.Errorf("question echoed as %q", r.Question[0].Name)
				}
				if r.Answer[0].Header().Name != "WwW.ExAmPlE.TeSt." {
					t.Errorf("answer owned by %q, want the QNAME as asked", r.Answer[0].Header().Name)
				}
			}}},
		{"apex SOA asked in mixed case: owner as asked", func() *dns.Msg { return q("ExAmPlE.TeSt.", dns.TypeSOA, "") }, nil,
			want{rcode: 0, aa: true, nAnswer: 1, scope: -1, check: ownersAsAsked("ExAmPlE.TeSt.")}},
		{"apex NS asked in mixed case: owners as asked", func() *dns.Msg { return q("eXaMpLe.tEsT.", dns.TypeNS, "") }, nil,
			want{rcode: 0, aa: true, nAnswer: 2, scope: -1, check: ownersAsAsked("eXaMpLe.tEsT.")}},
		{"apex ANY asked in mixed case: owner as asked", func() *dns.Msg { return q("EXAMPLE.test.", dns.TypeANY, "") }, nil,
			want{rcode: 0, aa: true, nAnswer: 1, scope: -1, check: ownersAsAsked("EXAMPLE.test.")}},
		{"alias asked in mixed case: CNAME owner as asked", func() *dns.Msg { return q("CDN.example.TEST.", dns.TypeA, "203.0.113.0/24") }, nil,
			want{rcode: 0, aa: true, nAnswer: 2, scope: 24, check: func(t *testing.T, r *dns.Msg) {
				if r.Answer[0].Header().Name != "CDN.example.TEST." {
					t.Errorf("CNAME owned by %q, want the QNAME as asked", r.Answer[0].Header().Name)
				}
			}}},
		{"ECS scope is the matched /48 for IPv6", func() *dns.Msg { return q("www.example.test.", dns.TypeA, "2001:db8:2:1::/64") }, nil,
			want{rcode: 0, aa: true, answer: []string{"127.0.0.12"}, nAnswer: 1, scope: 48}},
		{"ECS source prefix 0: resolver address decides, scope 0", func() *dns.Msg {
			return withOPT(q("www.example.test.", dns.TypeA, ""), 1232, 0, rawECS(1, 0))
		}, nil, want{rcode: 0, aa: true, answer: []string{"127.0.0.11"}, nAnswer: 1, scope: 0}},
		{"ECS family 0 source 0 (dig +subnet=0)", func() *dns.Msg {
			return withOPT(q("www.example.test.", dns.TypeA, ""), 1232, 0, rawECS(0, 0))
		}, nil, want{rcode: 0, aa: true, answer: []string{"127.0.0.11"}, nAnswer: 1, scope: 0}},
		{"ECS outside the geo table: default, scope = source", func() *dns.Msg { return q("www.example.test.", dns.TypeA, "100.64.0.0/16") }, nil,
			want{rcode: 0, aa: true, answer: []string{"127.0.0.11"}, nAnswer: 1, scope: 16}},
		{"AAAA at a PoP with IPv6", func() *dns.Msg { return q("www.example.test.", dns.TypeAAAA, "203.0.113.0/24") }, nil,
			want{rcode: 0, aa: true, answer: []string{"fd00::13"}, nAnswer: 1, scope: 24}},
		// The NODATA comes from the geo choice (Tokyo's PoP has IPv6, the
		// chosen London one not): scope 0 would let an ECS-caching
		// resolver hand it to its Tokyo clients too.
		{"AAAA at a PoP without IPv6 is NODATA with the geo scope", func() *dns.Msg { return q("www.example.test.", dns.TypeAAAA, "198.51.100.0/24") }, nil,
			want{rcode: 0, aa: true, nAnswer: 0, soaTTL: 120, scope: 24}},
		{"alias, AAAA at a PoP without IPv6: CNAME, SOA, the geo scope", func() *dns.Msg { return q("cdn.example.test.", dns.TypeAAAA, "198.51.100.0/24") }, nil,
			want{rcode: 0, aa: true, nAnswer: 1, soaTTL: 120, scope: 24}},
		{"NXDOMAIN with SOA, TTL min(SOA TTL, MINIMUM)", func() *dns.Msg { return q("nope.example.test.", dns.TypeA, "203.0.113.0/24") }, nil,
			want{rcode: dns.RcodeNameError, aa: true, nAnswer: 0, soaTTL: 120, scope: 0}},
		{"negative TTL is the SOA TTL when it is lower", func() *dns.Msg { return q("nope.other.test.", dns.TypeA, "") }, nil,
			want{rcode: dns.RcodeNameError, aa: true, nAnswer: 0, soaTTL: 30, scope: -1}},
		{"NODATA for a type the name lacks", func() *dns.Msg { return q("www.example.test.", dns.TypeTXT, "") }, nil,
			want{rcode: 0, aa: true, nAnswer: 0, soaTTL: 120, scope: -1}},
		{"empty non-terminal is NODATA, not NXDOMAIN", func() *dns.Msg { return q("eu.example.test.", dns.TypeA, "") }, nil,
			want{rcode: 0, aa: true, nAnswer: 0, soaTTL: 120, scope: -1}},
		{"deeper served name", func() *dns.Msg { return q("app.eu.example.test.", dns.TypeA, "198.51.100.0/24") }, nil,
			want{rcode: 0, aa: true, answer: []string{"127.0.0.12"}, nAnswer: 1, scope: 24}},
		{"geo-routed apex of a second zone", func() *dns.Msg { return q("other.test.", dns.TypeA, "203.0.113.0/24") }, nil,
			want{rcode: 0, aa: true, answer: []string{"127.0.0.13"}, nAnswer: 1, scope: 24}},
		{"CNAME alias followed in-zone", func() *dns.Msg { return q("cdn.example.test.", dns.TypeA, "203.0.113.0/24") }, nil,
			want{rcode: 0, aa: true, answer: []string{"127.0.0.13"}, nAnswer: 2, scope: 24, check: func(t *testing.T, r *dns.Msg) {
				c, ok := r.Answer[0].(*dns.CNAME)
				if !ok || c.Target != "www.example.test." {
					t.Errorf("first answer %v, want CNAME www.example.test.", r.Answer[0])
				}
			}}},
		{"CNAME query for an alias", func() *dns.Msg { return q("cdn.example.test.", dns.TypeCNAME, "203.0.113.0/24") }, nil,
			want{rcode: 0, aa: true, nAnswer: 1, scope: 0}},
		{"ANY answered minimally (RFC 8482)", func() *dns.Msg { return q("www.example.test.", dns.TypeANY, "203.0.113.0/24") }, nil,
			want{rcode: 0, aa: true, answer: []string{"127.0.0.13"}, nAnswer: 1, scope: 24}},
		{"ANY at apex: SOA only", func() *dns.Msg { return q("example.test.", dns.TypeANY, "") }, nil,
			want{rcode: 0, aa: true, nAnswer: 1, scope: -1}},
		{"glue name answered", func() *dns.Msg { return q("ns1.example.test.", dns.TypeA, "") }, nil,
			want{rcode: 0, aa: true, answer: []string{"127.0.0.1"}, nAnswer: 1, scope: -1}},
		{"outside our zones: REFUSED, no AA, never recursion", func() *dns.Msg {
			m := q("www.example.org.", dns.TypeA, "203.0.113.0/24")
			m.RecursionDesired = true
			return m
		}, nil, want{rcode: dns.RcodeRefused, aa: false, nAnswer: 0, scope: -1, check: func(t *testing.T, r *dns.Msg) {
			if !r.RecursionDesired {
				t.Error("RD not copied")
			}
		}}},
		{"parent of our zone: REFUSED", func() *dns.Msg { return q("test.", dns.TypeSOA, "") }, nil,
			want{rcode: dns.RcodeRefused, nAnswer: 0, scope: -1}},
		{"wrong class (CH): REFUSED", func() *dns.Msg {
			m := q("www.example.test.", dns.TypeA, "")
			m.Question[0].Qclass = dns.ClassCHAOS
			return m
		}, nil, want{rcode: dns.RcodeRefused, nAnswer: 0, scope: -1}},
		{"zone transfer refused", func() *dns.Msg { return q("example.test.", dns.TypeAXFR, "") }, []string{"tcp"},
			want{rcode: dns.RcodeRefused, nAnswer: 0, scope: -1}},
		{"unknown EDNS version: BADVERS", func() *dns.Msg { return withOPT(q("www.example.test.", dns.TypeA, ""), 1232, 1) }, nil,
			want{rcode: dns.RcodeBadVers, nAnswer: 0, scope: -1, check: func(t *testing.T, r *dns.Msg) {
				if o := r.IsEdns0(); o == nil || o.Version() != 0 {
					t.Errorf("BADVERS must carry an OPT of version 0, got %v", o)
				}
			}}},
		{"unknown opcode: NOTIMP", func() *dns.Msg {
			m := q("www.example.test.", dns.TypeA, "")
			m.Opcode = dns.OpcodeStatus
			return m
		}, nil, want{rcode: dns.RcodeNotImplemented, nAnswer: 0, scope: -1}},
		{"unknown opcode with EDNS: NOTIMP with OPT", func() *dns.Msg {
			m := withOPT(q("www.example.test.", dns.TypeA, ""), 1232, 0)
			m.Opcode = dns.OpcodeNotify
			return m
		}, nil, want{rcode: dns.RcodeNotImplemented, nAnswer: 0, scope: -1, check: func(t *testing.T, r *dns.Msg) {
			if r.IsEdns0() == nil {
				t.Error("query had an OPT, the NOTIMP answer must too")
			}
		}}},
		{"UPDATE: NOTIMP", func() *dns.Msg {
			m := new(dns.Msg)
			m.SetUpdate("example.test.")
			return m
		}, nil, want{rcode: dns.RcodeNotImplemented, nAnswer: 0, scope: -1}},
		{"two questions: FORMERR", func() *dns.Msg {
			m := q("www.example.test.", dns.TypeA, "")
			m.Question = append(m.Question, m.Question[0])
			return m
		}, nil, want{rcode: dns.RcodeFormatError, nAnswer: 0, scope: -1}},
		{"zero questions: FORMERR", func() *dns.Msg {
			m := q("www.example.test.", dns.TypeA, "")
			m.Question = nil
			return m
		}, nil, want{rcode: dns.RcodeFormatError, nAnswer: 0, scope: -1}},
		{"malformed ECS: address bytes beyond the prefix", func() *dns.Msg {
			return withOPT(q("www.example.test.", dns.TypeA, ""), 1232, 0, rawECS(1, 24, 203, 0, 113, 0))
		}, nil, want{rcode: dns.RcodeFormatError, nAnswer: 0, scope: -1}},
		{"malformed ECS: bits set past the prefix", func() *dns.Msg {
			return withOPT(q("www.example.test.", dns.TypeA, ""), 1232, 0, rawECS(1, 20, 203, 0, 113))
		}, nil, want{rcode: dns.RcodeFormatError, nAnswer: 0, scope: -1}},
		{"malformed ECS: IPv4 prefix over 32", func() *dns.Msg {
			return withOPT(q("www.example.test.", dns.TypeA, ""), 1232, 0, rawECS(1, 33, 203, 0, 113, 0, 0))
		}, nil, want{rcode: dns.RcodeFormatError, nAnswer: 0, scope: -1}},
		{"malformed ECS: IPv6 prefix over 128", func() *dns.Msg {
			return withOPT(q("www.example.test.", dns.TypeA, ""), 1232, 0, rawECS(2, 129, make([]byte, 17)...))
		}, nil, want{rcode: dns.RcodeFormatError, nAnswer: 0, scope: -1}},
		{"malformed ECS: unknown family", func() *dns.Msg {
			return withOPT(q("www.example.test.", dns.TypeA, ""), 1232, 0, rawECS(3, 8, 10))
		}, nil, want{rcode: dns.RcodeFormatError, nAnswer: 0, scope: -1}},
		{"malformed ECS: address shorter than the prefix", func() *dns.Msg {
			return withOPT(q("www.example.test.", dns.TypeA, ""), 1232, 0, rawECS(1, 24, 203, 0))
		}, nil, want{rcode: dns.RcodeFormatError, nAnswer: 0, scope: -1}},
		{"malformed ECS: scope longer than the family", func() *dns.Msg {
			return withOPT(q("www.example.test.", dns.TypeA, ""), 1232, 0, &dns.EDNS0_LOCAL{Code: dns.EDNS0SUBNET, Data: []byte{0, 1, 24, 48, 203, 0, 113}})
		}, nil, want{rcode: dns.RcodeFormatError, nAnswer: 0, scope: -1}},
		{"malformed ECS: two ECS options", func() *dns.Msg {
			return withOPT(q("www.example.test.", dns.TypeA, ""), 1232, 0, rawECS(1, 24, 203, 0, 113), rawECS(1, 24, 192, 0, 2))
		}, nil, want{rcode: dns.RcodeFormatError, nAnswer: 0, scope: -1}},
		{"EDNS without ECS: OPT back, no ECS", func() *dns.Msg { return withOPT(q("www.example.test.", dns.TypeA, ""), 4096, 0) }, nil,
			want{rcode: 0, aa: true, answer: []string{"127.0.0.11"}, nAnswer: 1, scope: -1, check: func(t *testing.T, r *dns.Msg) {
				if r.IsEdns0() == nil {
					t.Error("query had an OPT, the answer must too")
				}
			}}},
		{"CD bit copied", func() *dns.Msg {
			m := q("www.example.test.", dns.TypeA, "")
			m.CheckingDisabled = true
			return m
		}, nil, want{rcode: 0, aa: true, nAnswer: 1, scope: -1, check: func(t *testing.T, r *dns.Msg) {
			if !r.CheckingDisabled {
				t.Error("CD not copied")
			}
		}}},
	}
	for _, c := range cases {
		for _, netw := range transports(c.nets) {
			t.Run(netw+"/"+c.name, func(t *testing.T) {
				m := c.msg()
				hadOPT := m.IsEdns0() != nil
				r := exchange(t, netw, addr, m)
				w := c.want
				if r.Rcode != w.rcode {
					t.Errorf("rcode %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[w.rcode])
				}
				if r.Authoritative != w.aa {
					t.Errorf("AA=%v, want %v", r.Authoritative, w.aa)
				}
				if r.RecursionAvailable {
					t.Error("RA set; an authoritative-only server never sets it")
				}
				if r.Truncated != w.tc {
					t.Errorf("TC=%v, want %v", r.Truncated, w.tc)
				}
				if r.Id != m.Id {
					t.Errorf("id %d, want %d", r.Id, m.Id)
				}
				if w.answer != nil && !slices.Equal(addrs(r), w.answer) {
					t.Errorf("answer %v, want %v", addrs(r), w.answer)
				}
				if w.nAnswer >= 0 && len(r.Answer) != w.nAnswer {
					t.Errorf("%d answer records, want %d: %v", len(r.Answer), w.nAnswer, r.Answer)
				}
				if w.soaTTL == 0 && len(r.Ns) != 0 {
					t.Errorf("authority section %v; answers are minimal (RFC 2308 SOA only in negative ones)", r.Ns)
				}
				var soa *dns.SOA
				for _, rr := range r.Ns {
					if s, ok := rr.(*dns.SOA); ok {
						soa = s
					}
				}
				switch {
				case w.soaTTL == 0 && soa != nil:
					t.Errorf("unexpected SOA in authority: %v", soa)
				case w.soaTTL != 0 && soa == nil:
					t.Errorf("negative answer without SOA in authority")
				case w.soaTTL != 0 && soa.Hdr.Ttl != w.soaTTL:
					t.Errorf("SOA TTL %d in negative answer, want %d", soa.Hdr.Ttl, w.soaTTL)
				}
				e := ecsOf(r)
				switch {
				case w.scope < 0 && e != nil:
					t.Errorf("ECS echoed (%v) but the query had none or the answer is an error", e)
				case w.scope >= 0 && e == nil:
					t.Errorf("ECS not echoed")
				case w.scope >= 0 && int(e.SourceScope) != w.scope:
					t.Errorf("ECS scope /%d, want /%d", e.SourceScope, w.scope)
				}
				if !hadOPT && r.IsEdns0() != nil {
					t.Error("OPT in the answer although the query had none")
				}
				if w.noOPT && r.IsEdns0() != nil {
					t.Error("unexpected OPT")
				}
				if w.check != nil {
					w.check(t, r)
				}
			})
		}
	}
}

// Without a geo source every client is sent to the default location's
// PoP: the answer depends on no part of the client's address, so its ECS
// scope is 0 and a resolver may give it to all its clients.
func TestECSScopeWithoutGeo(t *testing.T) {
	o := DevOptions()
	o.Geo = nil
	_, addr := start(t, o)
	for _, netw := range []string{"udp", "tcp"} {
		for _, subnet := range []string{"203.0.113.0/24", "2001:db8:3::/48"} {
			r := exchange(t, netw, addr, query("www.example.test.", dns.TypeA, subnet))
			if got := addrs(r); !slices.Equal(got, []string{"127.0.0.11"}) {
				t.Errorf("%s %s: answer %v, want the default region's 127.0.0.11", netw, subnet, got)
			}
			e := ecsOf(r)
			if e == nil || e.SourceScope != 0 || e.SourceNetmask != uint8(netip.MustParsePrefix(subnet).Bits()) {
				t.Errorf("%s %s: ECS %v, want the query's source prefix with scope 0", netw, subnet, e)
			}
		}
	}
}

// ANY (RFC 8482) gets one RRset of the name's data: the A records, or
// the AAAA records where the nearest PoP (or a glue name) has only IPv6,
// never an empty answer for a name that holds addresses.
func TestANYWithIPv6Only(t *testing.T) {
	o := confOptions()
	o.PoPs[2].IPv4 = nil // Tokyo: fd00::13 only
	o.Zones[0].NS = append(o.Zones[0].NS, NameServer{Name: "ns2", Addrs: []netip.Addr{netip.MustParseAddr("fd00::53")}})
	_, addr := start(t, o)
	cases := []struct {
		name, qname, ecs string
		want             []string // A/AAAA in the answer
		cname            bool     // a CNAME first
	}{
		{"served name, nearest PoP IPv6-only", "www.example.test.", "203.0.113.0/24", []string{"fd00::13"}, false},
		{"served name, nearest PoP with IPv4", "www.example.test.", "198.51.100.0/24", []string{"127.0.0.12"}, false},
		{"alias, nearest PoP IPv6-only", "cdn.example.test.", "203.0.113.0/24", []string{"fd00::13"}, true},
		{"glue name with IPv6 glue only", "ns2.example.test.", "", []string{"fd00::53"}, false},
	}
	for _, c := range cases {
		for _, netw := range []string{"udp", "tcp"} {
			r := exchange(t, netw, addr, query(c.qname, dns.TypeANY, c.ecs))
			if r.Rcode != dns.RcodeSuccess || !slices.Equal(addrs(r), c.want) {
				t.Errorf("%s %s: %s %v, want NOERROR %v", netw, c.name, dns.RcodeToString[r.Rcode], r.Answer, c.want)
			}
			if len(r.Answer) > 0 {
				if _, ok := r.Answer[0].(*dns.CNAME); ok != c.cname {
					t.Errorf("%s %s: first record %v, CNAME wanted: %v", netw, c.name, r.Answer[0], c.cname)
				}
			}
			if len(r.Ns) != 0 {
				t.Errorf("%s %s: authority %v in a positive answer", netw, c.name, r.Ns)
			}
		}
	}
}
