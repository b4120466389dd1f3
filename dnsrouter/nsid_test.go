package dnsrouter

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// nsidOf returns the NSID payload of a response and whether the option
// was there at all.
func nsidOf(t testing.TB, m *dns.Msg) ([]byte, bool) {
	t.Helper()
	o := m.IsEdns0()
	if o == nil {
		return nil, false
	}
	for _, e := range o.Option {
		if n, ok := e.(*dns.EDNS0_NSID); ok {
			b, err := hex.DecodeString(n.Nsid)
			if err != nil {
				t.Fatalf("NSID %q does not decode: %v", n.Nsid, err)
			}
			return b, true
		}
	}
	return nil, false
}

// askNSID adds an (empty, as RFC 5001 asks) NSID option to m's OPT record,
// adding an OPT of 1232 bytes when m has none: what `dig +nsid` sends.
func askNSID(m *dns.Msg) *dns.Msg {
	o := m.IsEdns0()
	if o == nil {
		withOPT(m, 1232, 0)
		o = m.IsEdns0()
	}
	o.Option = append(o.Option, &dns.EDNS0_NSID{Code: dns.EDNS0NSID})
	return m
}

// TestNSID: with an NSID configured, every answer to a query that asks for
// it carries exactly the configured bytes, on UDP and TCP, whatever the
// rcode; a query that does not ask gets none, and a server without an
// NSID never sends one.
func TestNSID(t *testing.T) {
	// Not text: the option is opaque bytes and must come back byte for byte.
	id := []byte("ns1-fra\x00\xff")
	addr, addrUnset := startNSIDPair(t, confOptions, id)

	q := query
	cases := []struct {
		name  string
		msg   func() *dns.Msg
		nets  []string // default both
		rcode int
		want  bool // NSID expected in the answer
	}{
		{"geo answer (the fast path's query)", func() *dns.Msg { return askNSID(q("www.example.test.", dns.TypeA, "")) }, nil, dns.RcodeSuccess, true},
		{"geo answer with ECS", func() *dns.Msg { return askNSID(q("www.example.test.", dns.TypeA, "203.0.113.0/24")) }, nil, dns.RcodeSuccess, true},
		{"NSID option with a payload is still a request (RFC 5001 2.1)", func() *dns.Msg {
			return withOPT(q("www.example.test.", dns.TypeA, ""), 1232, 0, &dns.EDNS0_NSID{Code: dns.EDNS0NSID, Nsid: "c0ffee"})
		}, nil, dns.RcodeSuccess, true},
		{"SOA at the apex", func() *dns.Msg { return askNSID(q("example.test.", dns.TypeSOA, "")) }, nil, dns.RcodeSuccess, true},
		{"NODATA", func() *dns.Msg { return askNSID(q("www.example.test.", dns.TypeTXT, "")) }, nil, dns.RcodeSuccess, true},
		{"NXDOMAIN", func() *dns.Msg { return askNSID(q("nope.example.test.", dns.TypeA, "")) }, nil, dns.RcodeNameError, true},
		{"REFUSED outside our zones", func() *dns.Msg { return askNSID(q("www.example.org.", dns.TypeA, "")) }, nil, dns.RcodeRefused, true},
		{"REFUSED zone transfer", func() *dns.Msg { return askNSID(q("example.test.", dns.TypeAXFR, "")) }, []string{"tcp"}, dns.RcodeRefused, true},
		{"BADVERS", func() *dns.Msg {
			return withOPT(q("www.example.test.", dns.TypeA, ""), 1232, 1, &dns.EDNS0_NSID{Code: dns.EDNS0NSID})
		}, nil, dns.RcodeBadVers, true},
		{"FORMERR for a malformed ECS", func() *dns.Msg {
			return withOPT(q("www.example.test.", dns.TypeA, ""), 1232, 0, rawECS(1, 24, 203, 0, 113, 0), &dns.EDNS0_NSID{Code: dns.EDNS0NSID})
		}, nil, dns.RcodeFormatError, true},
		{"NOTIMP for NOTIFY", func() *dns.Msg {
			m := askNSID(q("example.test.", dns.TypeSOA, ""))
			m.Opcode = dns.OpcodeNotify
			return m
		}, nil, dns.RcodeNotImplemented, true},
		{"EDNS without the NSID option: none", func() *dns.Msg { return withOPT(q("www.example.test.", dns.TypeA, ""), 1232, 0) }, nil, dns.RcodeSuccess, false},
		{"EDNS with ECS but no NSID option: none", func() *dns.Msg { return q("www.example.test.", dns.TypeA, "203.0.113.0/24") }, nil, dns.RcodeSuccess, false},
		{"NXDOMAIN without the NSID option: none", func() *dns.Msg { return withOPT(q("nope.example.test.", dns.TypeA, ""), 1232, 0) }, nil, dns.RcodeNameError, false},
	}
	for _, c := range cases {
		for _, netw := range transports(c.nets) {
			t.Run(netw+"/"+c.name, func(t *testing.T) {
				r := exchange(t, netw, addr, c.msg())
				if r.Rcode != c.rcode {
					t.Errorf("rcode %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[c.rcode])
				}
				got, ok := nsidOf(t, r)
				switch {
				case c.want && !ok:
					t.Errorf("no NSID in the answer; want %q", id)
				case c.want && !bytes.Equal(got, id):
					t.Errorf("NSID %q, want %q", got, id)
				case !c.want && ok:
					t.Errorf("NSID %q sent although the query did not ask", got)
				}
				// A server without an NSID answers the same query without one.
				r = exchange(t, netw, addrUnset, c.msg())
				if r.Rcode != c.rcode {
					t.Errorf("unset: rcode %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[c.rcode])
				}
				if got, ok := nsidOf(t, r); ok {
					t.Errorf("server without an NSID sent %q", got)
				}
			})
		}
	}

	// Without EDNS there is no OPT to carry it, and none is made up.
	for _, netw := range []string{"udp", "tcp"} {
		if r := exchange(t, netw, addr, q("www.example.test.", dns.TypeA, "")); r.IsEdns0() != nil {
			t.Errorf("%s: OPT in the answer to a query without EDNS", netw)
		}
	}
}

// TestNSIDInTruncatedAnswer: a UDP answer too big for the client's buffer
// is cut to header, question and OPT; the OPT still names the node, since
// that is the answer an operator debugging truncation looks at.
func TestNSIDInTruncatedAnswer(t *testing.T) {
	o := bigOptions(100)
	o.NSID = []byte(strings.Repeat("n", MaxNSIDLen))
	_, addr := start(t, o)
	r := exchange(t, "udp", addr, askNSID(withOPT(query("www.example.test.", dns.TypeA, ""), 512, 0)))
	if !r.Truncated || len(r.Answer) != 0 {
		t.Fatalf("TC=%v with %d answers; want a truncated answer", r.Truncated, len(r.Answer))
	}
	if packed, _ := r.Pack(); len(packed) > 512 {
		t.Errorf("%d bytes, over the client's 512", len(packed))
	}
	if got, _ := nsidOf(t, r); !bytes.Equal(got, o.NSID) {
		t.Errorf("NSID %q in the truncated answer, want the configured one", got)
	}
	r = exchange(t, "tcp", addr, askNSID(query("www.example.test.", dns.TypeA, "")))
	if got, _ := nsidOf(t, r); len(r.Answer) != 100 || !bytes.Equal(got, o.NSID) {
		t.Errorf("TCP retry: %d answers, NSID %q; want 100 and the NSID", len(r.Answer), got)
	}
}

// TestNSIDReload: Reload (SIGHUP) changes the NSID for the next query, and
// a reload without one turns it off.
func TestNSIDReload(t *testing.T) {
	o := DevOptions()
	o.NSID = []byte("node-a")
	s, addr := start(t, o)
	ask := func(netw string) ([]byte, bool) {
		return nsidOf(t, exchange(t, netw, addr, askNSID(query("www.example.test.", dns.TypeA, ""))))
	}
	for _, netw := range []string{"udp", "tcp"} {
		if got, _ := ask(netw); string(got) != "node-a" {
			t.Fatalf("%s: NSID %q before reload, want node-a", netw, got)
		}
	}
	o = DevOptions()
	o.NSID = []byte("node-b")
	if err := s.Reload(o); err != nil {
		t.Fatal(err)
	}
	for _, netw := range []string{"udp", "tcp"} {
		if got, _ := ask(netw); string(got) != "node-b" {
			t.Errorf("%s: NSID %q after reload, want node-b", netw, got)
		}
	}
	// A bad NSID is refused and the running one stays.
	bad := DevOptions()
	bad.NSID = make([]byte, MaxNSIDLen+1)
	if err := s.Reload(bad); err == nil || !strings.Contains(err.Error(), "NSID: 129 bytes is too long") {
		t.Fatalf("reload with a 129-byte NSID: %v", err)
	}
	if got, _ := ask("udp"); string(got) != "node-b" {
		t.Errorf("NSID %q after a refused reload, want node-b kept", got)
	}
	if err := s.Reload(DevOptions()); err != nil {
		t.Fatal(err)
	}
	for _, netw := range []string{"udp", "tcp"} {
		if got, ok := ask(netw); ok {
			t.Errorf("%s: NSID %q after a reload without one", netw, got)
		}
	}
}

// The NSID given to New is copied: changing the caller's slice later does
// not change what the server sends.
func TestNSIDCopied(t *testing.T) {
	o := DevOptions()
	o.NSID = []byte("node-a")
	_, addr := start(t, o)
	copy(o.NSID, "XXXXXX")
	got, _ := nsidOf(t, exchange(t, "udp", addr, askNSID(query("www.example.test.", dns.TypeA, ""))))
	if string(got) != "node-a" {
		t.Errorf("NSID %q, want node-a as given to New", got)
	}
}

func TestNSIDTooLong(t *testing.T) {
	o := DevOptions()
	o.NSID = make([]byte, MaxNSIDLen+1)
	if _, err := New(o); err == nil || !strings.Contains(err.Error(), "NSID: 129 bytes is too long; at most 128") {
		t.Fatalf("New with a 129-byte NSID: %v", err)
	}
	o.NSID = o.NSID[:MaxNSIDLen]
	s, err := New(o)
	if err != nil {
		t.Fatalf("New with a 128-byte NSID: %v", err)
	}
	s.Close()
}

// chaos builds a class CH query, as `dig CH TXT id.server` sends.
func chaos(name string, qtype uint16) *dns.Msg {
	m := query(name, qtype, "")
	m.Question[0].Qclass = dns.ClassCHAOS
	return m
}

// TestIdentityInChaos: with an NSID configured, `dig CH TXT id.server`
// (RFC 4892) and `hostname.bind` name the node too, as PowerDNS's
// server-id does; other CH queries, and every one without an NSID, are
// refused as before.
func TestIdentityInChaos(t *testing.T) {
	id := []byte("ns1-fra\x00\xff\"")
	addr, addrUnset := startNSIDPair(t, DevOptions, id)
	for _, netw := range []string{"udp", "tcp"} {
		for _, name := range []string{"id.server.", "hostname.bind.", "ID.Server."} {
			for _, qtype := range []uint16{dns.TypeTXT, dns.TypeANY} {
				r := exchange(t, netw, addr, chaos(name, qtype))
				if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
					t.Fatalf("%s CH %s %s: %s %v", netw, dns.TypeToString[qtype], name, dns.RcodeToString[r.Rcode], r.Answer)
				}
				txt, ok := r.Answer[0].(*dns.TXT)
				// As dig prints it: the bytes that are not printable as \DDD.
				if !ok || txt.Hdr.Class != dns.ClassCHAOS || txt.Hdr.Name != name || len(txt.Txt) != 1 || txt.Txt[0] != `ns1-fra\000\255\"` {
					t.Errorf("%s CH %s %s: %v, want one CH TXT owned by %s holding the NSID", netw, dns.TypeToString[qtype], name, r.Answer[0], name)
				}
			}
			if r := exchange(t, netw, addrUnset, chaos(name, dns.TypeTXT)); r.Rcode != dns.RcodeRefused {
				t.Errorf("%s CH TXT %s without an NSID: %s, want REFUSED", netw, name, dns.RcodeToString[r.Rcode])
			}
		}
		for _, m := range []*dns.Msg{chaos("version.bind.", dns.TypeTXT), chaos("id.server.", dns.TypeA), chaos("www.example.test.", dns.TypeTXT)} {
			if r := exchange(t, netw, addr, m); r.Rcode != dns.RcodeRefused || len(r.Answer) != 0 {
				t.Errorf("%s %v: %s %v, want REFUSED", netw, m.Question[0], dns.RcodeToString[r.Rcode], r.Answer)
			}
		}
	}
	// On the wire the TXT string is the NSID's bytes, unescaped.
	pkt, _ := chaos("id.server.", dns.TypeTXT).Pack()
	raw := rawExchange(t, addr, pkt, 2*time.Second)
	if want := append([]byte{byte(len(id))}, id...); !bytes.HasSuffix(raw, want) {
		t.Errorf("answer % x does not end with the TXT string % x", raw, want)
	}
}
