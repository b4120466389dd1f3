package stack_test

import (
	"testing"

	"github.com/meridian-edge/meridian/internal/stack"
	"github.com/miekg/dns"
)

// TestZoneRecordsServed: a zone's static records in the configuration are
// answered by the DNS role, and so are its wildcards ("*" in names: a PoP
// address for any name under the apex that does not exist), kept to the
// PoPs its pops lists.
func TestZoneRecordsServed(t *testing.T) {
	cfg := devConfig(t, "http://127.0.0.1:1")
	cfg.DNS.Zones[0].Names = append(cfg.DNS.Zones[0].Names, "*")
	cfg.DNS.Zones[0].PoPs = map[string][]string{"*": {"eu-west-2"}}
	cfg.DNS.Zones[0].Records = []string{"@ MX 10 mail", `_dmarc TXT "v=DMARC1; p=reject"`, `*.mail TXT "under mail"`}
	st := runStack(t, cfg, stack.Roles{DNS: true}, nil)
	for _, q := range []struct {
		name  string
		qtype uint16
		want  string
	}{
		{"example.test.", dns.TypeMX, "example.test.\t3600\tIN\tMX\t10 mail.example.test."},
		{"_dmarc.example.test.", dns.TypeTXT, "_dmarc.example.test.\t3600\tIN\tTXT\t\"v=DMARC1; p=reject\""},
		{"x.mail.example.test.", dns.TypeTXT, "x.mail.example.test.\t3600\tIN\tTXT\t\"under mail\""},
		{"customer-1.example.test.", dns.TypeA, "customer-1.example.test.\t30\tIN\tA\t127.0.0.12"}, // kept to eu-west-2
	} {
		m := new(dns.Msg)
		m.SetQuestion(q.name, q.qtype)
		r, err := dns.Exchange(m, st.DNS().Addr())
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Answer) != 1 || r.Answer[0].String() != q.want {
			t.Errorf("%s %s: %v, want %s", q.name, dns.TypeToString[q.qtype], r.Answer, q.want)
		}
	}
}
