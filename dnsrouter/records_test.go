package dnsrouter

import (
	"strings"
	"testing"

	"github.com/meridian-edge/meridian/dnsrouter/records"
	"github.com/miekg/dns"
)

// withRecords is DevOptions whose zone holds texts as static records.
func withRecords(t *testing.T, texts ...string) Options {
	t.Helper()
	o := DevOptions()
	for _, s := range texts {
		rr, err := records.Parse(o.Zones[0].Apex, s)
		if err != nil {
			t.Fatal(err)
		}
		o.Zones[0].Records = append(o.Zones[0].Records, rr)
	}
	return o
}

// TestStaticRecords: a zone's static records are answered over UDP and
// TCP beside its geo-routed names, as an authoritative server must for a
// delegated domain (mail, verification, CAA, a CNAME to a hosted
// service): the asked type's RRset, the owner spelled as asked, NODATA
// with the SOA for a type the name lacks, NOERROR for the names between
// a record and the apex, NXDOMAIN elsewhere; and a reload replaces them.
func TestStaticRecords(t *testing.T) {
	s, addr := start(t, withRecords(t,
		"@ 300 MX 10 mail", "@ 300 MX 20 mx2.other.net.", `@ TXT "v=spf1 mx -all"`, `@ CAA 0 issue "letsencrypt.org"`,
		"mail A 192.0.2.25", `www TXT "google-site-verification=abc"`, "docs CNAME example.github.io.",
		`sel._domainkey TXT "v=DKIM1; p=MIGf"`))
	for _, netw := range []string{"udp", "tcp"} {
		for _, c := range []struct {
			name  string
			qtype uint16
			rcode int
			want  []string // the answer's records as text, in order; nil: none
			soa   bool     // an SOA in the authority section (negative answer)
		}{
			{"example.test.", dns.TypeMX, dns.RcodeSuccess, []string{"example.test.\t300\tIN\tMX\t10 mail.example.test.", "example.test.\t300\tIN\tMX\t20 mx2.other.net."}, false},
			{"ExAmPlE.TeSt.", dns.TypeTXT, dns.RcodeSuccess, []string{"ExAmPlE.TeSt.\t3600\tIN\tTXT\t\"v=spf1 mx -all\""}, false},
			{"example.test.", dns.TypeCAA, dns.RcodeSuccess, []string{"example.test.\t3600\tIN\tCAA\t0 issue \"letsencrypt.org\""}, false},
			{"mail.example.test.", dns.TypeA, dns.RcodeSuccess, []string{"mail.example.test.\t3600\tIN\tA\t192.0.2.25"}, false},
			{"mail.example.test.", dns.TypeAAAA, dns.RcodeSuccess, nil, true},
			{"mail.example.test.", dns.TypeANY, dns.RcodeSuccess, []string{"mail.example.test.\t3600\tIN\tA\t192.0.2.25"}, false},
			{"www.example.test.", dns.TypeTXT, dns.RcodeSuccess, []string{"www.example.test.\t3600\tIN\tTXT\t\"google-site-verification=abc\""}, false},
			{"docs.example.test.", dns.TypeA, dns.RcodeSuccess, []string{"docs.example.test.\t3600\tIN\tCNAME\texample.github.io."}, false},
			{"docs.example.test.", dns.TypeTXT, dns.RcodeSuccess, []string{"docs.example.test.\t3600\tIN\tCNAME\texample.github.io."}, false},
			{"sel._domainkey.example.test.", dns.TypeTXT, dns.RcodeSuccess, []string{"sel._domainkey.example.test.\t3600\tIN\tTXT\t\"v=DKIM1; p=MIGf\""}, false},
			{"_domainkey.example.test.", dns.TypeTXT, dns.RcodeSuccess, nil, true}, // between a record and the apex
			{"nothere.example.test.", dns.TypeTXT, dns.RcodeNameError, nil, true},
		} {
			r := exchange(t, netw, addr, query(c.name, c.qtype, ""))
			var got []string
			for _, rr := range r.Answer {
				got = append(got, rr.String())
			}
			hasSOA := len(r.Ns) == 1 && r.Ns[0].Header().Rrtype == dns.TypeSOA
			if r.Rcode != c.rcode || !r.Authoritative || strings.Join(got, "\n") != strings.Join(c.want, "\n") || hasSOA != c.soa {
				t.Errorf("%s %s %s: %s aa=%v answer %q soa=%v; want %s answer %q soa=%v", netw, c.name, dns.TypeToString[c.qtype],
					dns.RcodeToString[r.Rcode], r.Authoritative, got, hasSOA, dns.RcodeToString[c.rcode], c.want, c.soa)
			}
		}
	}
	// The geo-routed name still answers its PoP, also through the fast path.
	if r := exchange(t, "udp", addr, query("www.example.test.", dns.TypeA, "203.0.113.0/24")); len(addrs(r)) != 1 || addrs(r)[0] != "127.0.0.13" {
		t.Fatalf("www A beside a static TXT: %v", r)
	}

	if err := s.Reload(withRecords(t, "@ MX 5 newmail")); err != nil {
		t.Fatal(err)
	}
	r := exchange(t, "udp", addr, query("example.test.", dns.TypeMX, ""))
	if len(r.Answer) != 1 || r.Answer[0].(*dns.MX).Mx != "newmail.example.test." {
		t.Fatalf("MX after the reload: %v", r.Answer)
	}
	if r := exchange(t, "udp", addr, query("mail.example.test.", dns.TypeA, "")); r.Rcode != dns.RcodeNameError {
		t.Fatalf("mail A after a reload that dropped it: %s", dns.RcodeToString[r.Rcode])
	}
}

// TestStaticRecordsRefused: records that cannot stand in the zone are
// refused when the server is made, naming the record.
func TestStaticRecordsRefused(t *testing.T) {
	for _, c := range []struct {
		records []string
		want    string
	}{
		{[]string{`docs CNAME a.example.net.`, `docs TXT "x"`}, "Zones[0].Records[0]: docs.example.test. has other records; a CNAME must stand alone"},
		{[]string{`www A 192.0.2.1`}, "Zones[0].Records[0]: www.example.test. is a served name"},
	} {
		if _, err := New(withRecords(t, c.records...)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.records, err, c.want)
		}
	}
}
