package records

import (
	"strings"
	"testing"

	"github.com/miekg/dns"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		text, want string // want: the record as miekg/dns prints it, or an error's text
		ok         bool
	}{
		{"@ 300 MX 10 mail", "example.test.\t300\tIN\tMX\t10 mail.example.test.", true},
		{"@ MX 10 mx.other.net.", "example.test.\t3600\tIN\tMX\t10 mx.other.net.", true},
		{`_dmarc TXT "v=DMARC1; p=reject"`, "_dmarc.example.test.\t3600\tIN\tTXT\t\"v=DMARC1; p=reject\"", true},
		{"Mail.Example.Test. IN A 192.0.2.25", "mail.example.test.\t3600\tIN\tA\t192.0.2.25", true},
		{`@ CAA 0 issue "letsencrypt.org"`, "example.test.\t3600\tIN\tCAA\t0 issue \"letsencrypt.org\"", true},
		{"docs CNAME example.github.io.", "docs.example.test.\t3600\tIN\tCNAME\texample.github.io.", true},
		{"_sip._tcp SRV 10 5 5060 sip", "_sip._tcp.example.test.\t3600\tIN\tSRV\t10 5 5060 sip.example.test.", true},
		{"", "empty", false},
		{"$INCLUDE /etc/passwd", "zone-file directive", false},
		{"mail.other.test. A 192.0.2.1", "outside zone example.test.", false},
		{"mail CH A 192.0.2.1", "class CH", false},
		{"@ SOA ns1 hostmaster 1 2 3 4 5", "comes from its own settings", false},
		{"@ NS ns2.other.net.", "comes from its own settings", false},
		{"sub NS ns.other.net.", "sub.example.test.\t3600\tIN\tNS\tns.other.net.", true},
		{"*.sub NS ns.other.net.", "a wildcard cannot be delegated", false},
		{"@ DNSKEY 257 3 13 AQID", "type DNSKEY is not served", false},
		{"*.dev A 192.0.2.1", "*.dev.example.test.\t3600\tIN\tA\t192.0.2.1", true},
		{`* TXT "any"`, "*.example.test.\t3600\tIN\tTXT\t\"any\"", true},
		{"a.*.dev A 192.0.2.1", "not a wildcard (RFC 4592) but a literal character", false},
		{"a*.dev A 192.0.2.1", "not a wildcard (RFC 4592) but a literal character", false},
		{"mail A 192.0.2.1\nmail A 192.0.2.2", "more than one record", false},
		{"mail A 300.0.2.1", "bad A", false},
		{"mail MX ten mail", "bad MX", false},
	} {
		rr, err := Parse("Example.Test", c.text)
		switch {
		case c.ok && (err != nil || rr.String() != c.want):
			t.Errorf("Parse(%q) = %v, %v; want %q", c.text, rr, err, c.want)
		case !c.ok && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("Parse(%q) = %v, %v; want an error with %q", c.text, rr, err, c.want)
		}
	}
}

func TestCheck(t *testing.T) {
	served := map[string]bool{"example.test.": true, "www.example.test.": true}
	aliases := map[string]bool{"cdn.example.test.": true}
	glue := map[string]bool{"ns1.example.test.": true}
	parse := func(texts ...string) []dns.RR {
		var out []dns.RR
		for _, s := range texts {
			rr, err := Parse("example.test", s)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, rr)
		}
		return out
	}
	good := parse("@ MX 10 mail", "@ TXT \"v=spf1 mx -all\"", "www TXT \"site verification\"", "mail A 192.0.2.25",
		"mail AAAA 2001:db8::25", "docs CNAME example.github.io.", "ns1 TXT \"the name server\"",
		"a CNAME b", "b CNAME mail", "* CNAME www",
		"corp NS ns1.corp", "corp NS ns.other.net.", "ns1.corp A 192.0.2.53", "ns1.corp AAAA 2001:db8::53")
	if p := Check("example.test", good, served, aliases, glue); len(p) != 0 {
		t.Fatalf("good records refused: %v", p[0].Err)
	}
	for _, c := range []struct {
		records []string
		index   int
		want    string
	}{
		{[]string{"@ MX 10 mail", "www A 192.0.2.1"}, 1, "www.example.test. is a served name"},
		{[]string{"@ AAAA 2001:db8::1"}, 0, "example.test. is a served name"},
		{[]string{"cdn TXT \"x\""}, 0, "cdn.example.test. is an alias"},
		{[]string{"ns1 A 192.0.2.53"}, 0, "is a name server of the zone"},
		{[]string{"docs CNAME a.example.net.", "docs TXT \"x\""}, 0, "docs.example.test. has other records; a CNAME must stand alone"},
		{[]string{"www CNAME a.example.net."}, 0, "a CNAME must stand alone"},
		{[]string{"@ CNAME a.example.net."}, 0, "the apex cannot be a CNAME"},
		{[]string{"mail 60 A 192.0.2.1", "mail 120 A 192.0.2.2"}, 1, "TTL 120 differs from the 60"},
		{[]string{"a CNAME a"}, 0, "CNAME loop a.example.test. -> a.example.test."},
		{[]string{"corp NS ns.other.net.", "corp TXT \"x\""}, 1, "corp.example.test. is delegated (it has NS records); its TXT records are the other servers'"},
		{[]string{"corp NS ns.other.net.", "x.corp TXT \"x\""}, 1, "x.corp.example.test. is below the delegation of corp.example.test.; only the addresses of its name servers"},
		{[]string{"corp NS ns.other.net.", "a.corp NS ns.other.net."}, 1, "below the delegation of corp.example.test."},
		{[]string{"corp NS ns.other.net.", "mail.corp A 192.0.2.1"}, 1, "below the delegation of corp.example.test."},
		{[]string{"corp NS ns1.corp"}, 0, "name server ns1.corp.example.test. is inside the delegation it serves"},
		{[]string{"www NS ns.other.net."}, 0, "delegating www.example.test. would hand the served name www.example.test. to the other servers"},
		{[]string{"x CNAME y", "a CNAME b", "b CNAME A.example.test."}, 1, "CNAME loop a.example.test. -> b.example.test. -> a.example.test."},
	} {
		p := Check("example.test", parse(c.records...), served, aliases, glue)
		if len(p) == 0 || p[0].Index != c.index || !strings.Contains(p[0].Err.Error(), c.want) {
			t.Errorf("Check(%q) = %v; want records[%d] refused with %q", c.records, p, c.index, c.want)
		}
	}
}
