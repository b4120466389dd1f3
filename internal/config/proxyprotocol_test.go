package config_test

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/internal/config"
)

// withProxyProtocol is base with the PoP's proxy_protocol section from
// line 9 on (after admin, line 8). A problem with the section as a whole
// is reported at its first line inside, as for every section.
func withProxyProtocol(section string) string {
	return strings.Replace(base, "    admin: 127.0.0.13:9090\n", "    admin: 127.0.0.13:9090\n"+section, 1)
}

// TestProxyProtocolSetting: off by default; trusted IPs and blocks become
// prefixes, the header timeout defaults to 10s.
func TestProxyProtocolSetting(t *testing.T) {
	cfg, err := config.Parse("base.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	if pp := cfg.PoPs[0].ProxyProtocol; pp != nil || pp.TrustedPrefixes() != nil {
		t.Errorf("default: %+v, want off (nil)", pp)
	}
	cfg, err = config.Parse("set.yaml", []byte(withProxyProtocol(`    proxy_protocol:
      trusted: [10.0.0.0/8, 192.0.2.7, "2001:db8::/32", "2001:db8:1::5"]
      required: true
`)))
	if err != nil {
		t.Fatal(err)
	}
	pp := cfg.PoPs[0].ProxyProtocol
	if pp == nil || !pp.Required || pp.HeaderTimeout != 10*time.Second {
		t.Fatalf("set: %+v, want required with the 10s default timeout", pp)
	}
	want := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32"),
		netip.MustParsePrefix("2001:db8::/32"), netip.MustParsePrefix("2001:db8:1::5/128"),
	}
	if got := pp.TrustedPrefixes(); !slices.Equal(got, want) {
		t.Errorf("prefixes %v, want %v", got, want)
	}
	cfg, err = config.Parse("timeout.yaml", []byte(withProxyProtocol("    proxy_protocol:\n      trusted: [10.0.0.0/8]\n      header_timeout: 3s\n")))
	if err != nil {
		t.Fatal(err)
	}
	if d := cfg.PoPs[0].ProxyProtocol.HeaderTimeout; d != 3*time.Second {
		t.Errorf("header_timeout %v, want 3s", d)
	}
}

// TestProxyProtocolErrors: each mistake is reported at its line, with what
// was expected.
func TestProxyProtocolErrors(t *testing.T) {
	cases := []struct {
		name, section string
		want          []wantErr
	}{
		{"no trusted", "    proxy_protocol:\n      required: true\n",
			[]wantErr{{10, "pops[0].proxy_protocol.trusted", "missing; list the balancers' addresses or CIDR blocks, e.g. [10.0.0.0/8]: only they may send a PROXY header"}}},
		{"empty section", "    proxy_protocol: {}\n",
			[]wantErr{{9, "pops[0].proxy_protocol.trusted", "missing; list the balancers' addresses or CIDR blocks, e.g. [10.0.0.0/8]: only they may send a PROXY header"}}},
		{"not an address", "    proxy_protocol:\n      trusted:\n        - 10.0.0.0/8\n        - nlb.internal\n",
			[]wantErr{{12, "pops[0].proxy_protocol.trusted[1]", `"nlb.internal" is not an IP address or CIDR block; expected e.g. 10.0.0.0/8, 2001:db8::/32 or 10.1.2.3`}}},
		{"prefix too long", "    proxy_protocol:\n      trusted: [10.0.0.0/33]\n",
			[]wantErr{{10, "pops[0].proxy_protocol.trusted[0]", `"10.0.0.0/33" is not an IP address or CIDR block; expected e.g. 10.0.0.0/8, 2001:db8::/32 or 10.1.2.3`}}},
		{"address with a zone", "    proxy_protocol:\n      trusted: [\"fe80::1%eth0\"]\n",
			[]wantErr{{10, "pops[0].proxy_protocol.trusted[0]", `"fe80::1%eth0" is not an IP address or CIDR block; expected e.g. 10.0.0.0/8, 2001:db8::/32 or 10.1.2.3`}}},
		{"host bits", "    proxy_protocol:\n      trusted: [10.1.2.3/8]\n",
			[]wantErr{{10, "pops[0].proxy_protocol.trusted[0]", "10.1.2.3/8 has host bits set; did you mean 10.0.0.0/8?"}}},
		{"timeout too long", "    proxy_protocol:\n      trusted: [10.0.0.0/8]\n      header_timeout: 5m\n",
			[]wantErr{{11, "pops[0].proxy_protocol.header_timeout", "5m0s is out of range [1ms,1m]; a balancer sends its header at once"}}},
		{"negative timeout", "    proxy_protocol:\n      trusted: [10.0.0.0/8]\n      header_timeout: -1s\n",
			[]wantErr{{11, "pops[0].proxy_protocol.header_timeout", "-1s is out of range [1ms,1m]; a balancer sends its header at once"}}},
		{"with http3", "    https: 127.0.0.13:8443\n    http3: true\n    proxy_protocol:\n      trusted: [10.0.0.0/8]\n",
			[]wantErr{{12, "pops[0].proxy_protocol", "cannot be used with http3: HTTP/3 (QUIC over UDP) carries no PROXY header, so h3 clients would be seen as the balancer; set http3: false on this PoP"}}},
		{"trusted as one string", "    proxy_protocol:\n      trusted: 10.0.0.0/8\n",
			[]wantErr{{10, "pops[0].proxy_protocol.trusted", "expected a list, got a scalar"}}},
		{"misspelt key", "    proxy_protocol:\n      trusted: [10.0.0.0/8]\n      requried: true\n",
			[]wantErr{{11, "pops[0].proxy_protocol.requried", "unknown field; did you mean required? expected one of trusted, required, header_timeout"}}},
		{"required not a bool", "    proxy_protocol:\n      trusted: [10.0.0.0/8]\n      required: yes please\n",
			[]wantErr{{11, "pops[0].proxy_protocol.required", `expected true or false, got "yes please"`}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			text := withProxyProtocol(c.section)
			if strings.Contains(c.section, "https:") {
				text = withSiteTLS(text)
			}
			checkErrors(t, "bad.yaml", text, c.want)
		})
	}
}
