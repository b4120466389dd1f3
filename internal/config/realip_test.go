package config_test

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/meridian-edge/meridian/internal/config"
)

// withRealIP is base with the PoP's real_ip (and other) sections from
// line 9 on, as withProxyProtocol.
func withRealIP(section string) string { return withProxyProtocol(section) }

// TestRealIPSetting: off by default; trusted IPs and blocks become
// prefixes; the header defaults to X-Forwarded-For; proxy_protocol may be
// set beside it.
func TestRealIPSetting(t *testing.T) {
	cfg, err := config.Parse("base.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	if ri := cfg.PoPs[0].RealIP; ri != nil || ri.TrustedPrefixes() != nil {
		t.Errorf("default: %+v, want off (nil)", ri)
	}
	cfg, err = config.Parse("set.yaml", []byte(withRealIP(`    real_ip:
      trusted: [10.0.0.0/8, 192.0.2.7, "2001:db8::/32"]
`)))
	if err != nil {
		t.Fatal(err)
	}
	ri := cfg.PoPs[0].RealIP
	if ri == nil || ri.Header != "X-Forwarded-For" {
		t.Fatalf("set: %+v, want the X-Forwarded-For default", ri)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32"), netip.MustParsePrefix("2001:db8::/32")}
	if got := ri.TrustedPrefixes(); !slices.Equal(got, want) {
		t.Errorf("prefixes %v, want %v", got, want)
	}
	for _, h := range []string{"Forwarded", "True-Client-IP", "cf-connecting-ip", "X-Real-IP"} {
		cfg, err = config.Parse("header.yaml", []byte(withRealIP("    real_ip:\n      trusted: [10.0.0.0/8]\n      header: "+h+"\n")))
		if err != nil {
			t.Fatalf("header %s: %v", h, err)
		}
		if got := cfg.PoPs[0].RealIP.Header; got != h {
			t.Errorf("header %q, want %q as written", got, h)
		}
	}
	cfg, err = config.Parse("both.yaml", []byte(withRealIP("    proxy_protocol:\n      trusted: [10.0.0.0/8]\n    real_ip:\n      trusted: [198.51.100.0/24]\n      header: CF-Connecting-IP\n")))
	if err != nil {
		t.Fatalf("proxy_protocol and real_ip together: %v", err)
	}
	if cfg.PoPs[0].ProxyProtocol == nil || cfg.PoPs[0].RealIP == nil {
		t.Errorf("both sections: %+v %+v", cfg.PoPs[0].ProxyProtocol, cfg.PoPs[0].RealIP)
	}
	if _, err := config.Parse("h3.yaml", []byte(withSiteTLS(withRealIP("    https: 127.0.0.13:8443\n    http3: true\n    real_ip:\n      trusted: [10.0.0.0/8]\n")))); err != nil {
		t.Errorf("real_ip with http3 (an HTTP header, on every protocol): %v", err)
	}
}

// TestRealIPErrors: each mistake is reported at its line, with what to
// write instead.
func TestRealIPErrors(t *testing.T) {
	const expected = "expected X-Forwarded-For (the default), Forwarded, or a header holding the client's address alone, such as True-Client-IP, CF-Connecting-IP or X-Real-IP"
	cases := []struct {
		name, section string
		want          []wantErr
	}{
		{"no trusted", "    real_ip:\n      header: X-Forwarded-For\n",
			[]wantErr{{10, "pops[0].real_ip.trusted", "missing; list the L7 proxies' addresses or CIDR blocks, e.g. [10.0.0.0/8]: only their header names the client"}}},
		{"empty section", "    real_ip: {}\n",
			[]wantErr{{9, "pops[0].real_ip.trusted", "missing; list the L7 proxies' addresses or CIDR blocks, e.g. [10.0.0.0/8]: only their header names the client"}}},
		{"bad CIDR", "    real_ip:\n      trusted:\n        - 10.0.0.0/8\n        - 10.0.0.0/40\n",
			[]wantErr{{12, "pops[0].real_ip.trusted[1]", `"10.0.0.0/40" is not an IP address or CIDR block; expected e.g. 10.0.0.0/8, 2001:db8::/32 or 10.1.2.3`}}},
		{"a host name", "    real_ip:\n      trusted: [alb.internal]\n",
			[]wantErr{{10, "pops[0].real_ip.trusted[0]", `"alb.internal" is not an IP address or CIDR block; expected e.g. 10.0.0.0/8, 2001:db8::/32 or 10.1.2.3`}}},
		{"host bits", "    real_ip:\n      trusted: [10.1.2.3/8]\n",
			[]wantErr{{10, "pops[0].real_ip.trusted[0]", "10.1.2.3/8 has host bits set; did you mean 10.0.0.0/8?"}}},
		{"not a header name", "    real_ip:\n      trusted: [10.0.0.0/8]\n      header: \"X-Forwarded-For:\"\n",
			[]wantErr{{11, "pops[0].real_ip.header", `"X-Forwarded-For:" is not a header field name; ` + expected}}},
		{"nginx's proxy_protocol", "    real_ip:\n      trusted: [10.0.0.0/8]\n      header: proxy_protocol\n",
			[]wantErr{{11, "pops[0].real_ip.header", `"proxy_protocol" is not a header: for an L4 balancer that sends PROXY protocol headers, set pops[0].proxy_protocol instead (both may be set: the PROXY header is read first)`}}},
		{"a header without an address", "    real_ip:\n      trusted: [10.0.0.0/8]\n      header: X-Forwarded-Host\n",
			[]wantErr{{11, "pops[0].real_ip.header", "X-Forwarded-Host carries no client address; " + expected}}},
		{"misspelt key", "    real_ip:\n      trusted: [10.0.0.0/8]\n      recursive: true\n",
			[]wantErr{{11, "pops[0].real_ip.recursive", "unknown field; expected one of trusted, header"}}},
		{"trusted as one string", "    real_ip:\n      trusted: 10.0.0.0/8\n",
			[]wantErr{{10, "pops[0].real_ip.trusted", "expected a list, got a scalar"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			checkErrors(t, "bad.yaml", withRealIP(c.section), c.want)
		})
	}
}
