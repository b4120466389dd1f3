package config_test

import (
	"net"
	"strings"
	"testing"

	"github.com/meridian-edge/meridian/internal/config"
)

// edit applies old/new pairs to the valid file, once each.
func edit(t *testing.T, pairs ...string) string {
	t.Helper()
	text := valid
	for i := 0; i < len(pairs); i += 2 {
		if !strings.Contains(text, pairs[i]) {
			t.Fatalf("test bug: %q not in the file", pairs[i])
		}
		text = strings.Replace(text, pairs[i], pairs[i+1], 1)
	}
	return text
}

// Files that used to be accepted although they mean something the
// operator did not want, or were refused with a misleading message.
func TestValidationGaps(t *testing.T) {
	const geo = "      names: [www]\n  geo:\n    table:\n"
	cases := []struct {
		name  string
		edits []string
		want  []wantErr
	}{
		{"one network placed twice", []string{"      names: [www]\n", geo +
			"      - {cidr: 203.0.113.0/24, region: ap-northeast-1}\n      - {cidr: 198.51.100.0/24, region: eu-west-2}\n      - {cidr: 203.0.113.0/24, region: eu-west-2}\n"},
			[]wantErr{{29, "dns.geo.table[2].cidr", "203.0.113.0/24 is already listed as dns.geo.table[0] (region ap-northeast-1); a network has one location: delete one of the two"}}},
		{"one network placed twice, once as IPv4-mapped IPv6", []string{"      names: [www]\n", geo +
			"      - {cidr: 203.0.113.0/24, lat: 35.7, lon: 139.7}\n      - {cidr: \"::ffff:203.0.113.0/120\", region: eu-west-2}\n"},
			[]wantErr{{28, "dns.geo.table[1].cidr", "::ffff:203.0.113.0/120 is already listed as dns.geo.table[0] (lat 35.7, lon 139.7); a network has one location: delete one of the two"}}},
		{"host with a scheme", []string{"hosts: [www.example.test]", "hosts: ['http://www.example.test']"},
			[]wantErr{{15, "sites[0].hosts[0]", `"http://www.example.test" has a scheme (http://); hosts are bare names: write www.example.test`}}},
		{"host with a scheme and a port", []string{"hosts: [www.example.test]", "hosts: [www.example.test, 'https://api.example.test:8443/']"},
			[]wantErr{{15, "sites[0].hosts[1]", `"https://api.example.test:8443/" has a scheme (https://); hosts are bare names: write api.example.test`}}},
		{"redirect to https at PoPs without https", []string{"      - url: http://127.0.0.1:8081\n", "      - url: http://127.0.0.1:8081\n    tls:\n      dev_ca: true\n      redirect_http: true\n"},
			[]wantErr{{20, "sites[0].tls.redirect_http", "pops[0] (tokyo), pops[1] (paris) have no https listener, so they would serve this site over plain HTTP without redirecting; give every PoP an https address, or set redirect_http: false"}}},
		{"redirect to https at one PoP without https", []string{
			"    admin: 127.0.0.13:9090\n", "    admin: 127.0.0.13:9090\n    https: 127.0.0.13:8443\n",
			"      - url: http://127.0.0.1:8081\n", "      - url: http://127.0.0.1:8081\n    tls:\n      dev_ca: true\n      redirect_http: true\n"},
			[]wantErr{{21, "sites[0].tls.redirect_http", "pops[1] (paris) has no https listener, so it would serve this site over plain HTTP without redirecting; give every PoP an https address, or set redirect_http: false"}}},
		{"answer TTL of 0", []string{"      names: [www]\n", "      names: [www]\n      ttl: 0s\n"},
			[]wantErr{{25, "dns.zones[0].ttl", "0s is out of range [1s, 68y]; DNS TTLs are whole seconds"}}},
		{"SOA minimum of 0", []string{"      names: [www]\n", "      names: [www]\n      soa:\n        minimum: 0s\n"},
			[]wantErr{{26, "dns.zones[0].soa.minimum", "0s is out of range [1s, 68y]; DNS TTLs are whole seconds"}}},
		{"negative TTL, for comparison", []string{"      names: [www]\n", "      names: [www]\n      ttl: -5s\n"},
			[]wantErr{{25, "dns.zones[0].ttl", "-5s is out of range [1s, 68y]; DNS TTLs are whole seconds"}}},
		{"embedded NATS and a cluster", []string{"    listen: 127.0.0.1:4222\n", "    listen: 127.0.0.1:4222\n  urls: [nats://10.0.0.1:4222]\n"},
			[]wantErr{{4, "nats.urls", "set either nats.embedded (a built-in server for this process alone) or nats.urls (an external cluster), not both; to join the cluster, delete nats.embedded"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			checkErrors(t, "gaps.yaml", edit(t, c.edits...), c.want)
		})
	}
}

// What the refusals above leave allowed.
func TestValidationGapsStillValid(t *testing.T) {
	cases := map[string][]string{
		"redirect with https everywhere": {
			"    admin: 127.0.0.13:9090\n", "    admin: 127.0.0.13:9090\n    https: 127.0.0.13:8443\n",
			"    admin: 127.0.0.14:9090\n", "    admin: 127.0.0.14:9090\n    https: 127.0.0.14:8443\n",
			"      - url: http://127.0.0.1:8081\n", "      - url: http://127.0.0.1:8081\n    tls:\n      dev_ca: true\n      redirect_http: true\n"},
		"TLS without redirect at PoPs without https": {
			"      - url: http://127.0.0.1:8081\n", "      - url: http://127.0.0.1:8081\n    tls:\n      dev_ca: true\n"},
		"nested geo networks": {"      names: [www]\n", "      names: [www]\n  geo:\n    table:\n      - {cidr: 203.0.0.0/16, region: eu-west-2}\n      - {cidr: 203.0.113.0/24, region: ap-northeast-1}\n"},
		"only a cluster":      {"  embedded:\n    listen: 127.0.0.1:4222\n", "  urls: [nats://10.0.0.1:4222]\n"},
		"TTL of 1s":           {"      names: [www]\n", "      names: [www]\n      ttl: 1s\n"},
	}
	for name, edits := range cases {
		t.Run(name, func(t *testing.T) {
			cfg, err := config.Parse("ok.yaml", []byte(edit(t, edits...)))
			if err != nil {
				t.Fatal(err)
			}
			if name == "TTL of 1s" && cfg.DNS.Zones[0].TTL.Seconds() != 1 {
				t.Fatalf("ttl = %v", cfg.DNS.Zones[0].TTL)
			}
		})
	}
}

// TestOriginIsOwnPoPRefused: a site whose origin is one of the file's own
// PoP listeners (directly, or through loopback to a PoP on a wildcard
// address) is refused with the field, the listener and what to do.
func TestOriginIsOwnPoPRefused(t *testing.T) {
	cfg, err := config.Parse("base.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	pop := cfg.PoPs[0].HTTP
	_, port, _ := net.SplitHostPort(pop)
	for _, c := range []struct{ origin, listen, want string }{
		{"http://" + pop, "", `sites[0].origins[0].url: "http://` + pop + `" is this file's own PoP listener (pops[0].http): every miss would come back to a PoP and loop`},
		{"http://127.0.0.1:" + port, "0.0.0.0:" + port, "is this file's own PoP listener (pops[0].http)"},
		{"http://localhost:" + port, ":" + port, "is this file's own PoP listener (pops[0].http)"},
	} {
		text := strings.Replace(base, "http://127.0.0.1:8081", c.origin, 1)
		if c.listen != "" {
			text = strings.Replace(text, "http: "+pop, "http: \""+c.listen+"\"", 1)
		}
		_, err := config.Parse("loop.yaml", []byte(text))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("origin %s, PoP on %q: %v; want %q", c.origin, c.listen, err, c.want)
		}
	}
	// Another port of the same host is a real origin.
	other := strings.Replace(base, "http://127.0.0.1:8081", "http://127.0.0.1:1", 1)
	if _, err := config.Parse("ok.yaml", []byte(other)); err != nil {
		t.Errorf("an origin on another port: %v", err)
	}
}

// TestHTTPSWithoutATLSSiteRefused: a PoP that listens for HTTPS while no
// site has a certificate would fail every handshake: refused, naming the
// listener and the two fixes; with a site's tls it is accepted.
func TestHTTPSWithoutATLSSiteRefused(t *testing.T) {
	text := strings.Replace(base, "    admin: 127.0.0.13:9090\n", "    admin: 127.0.0.13:9090\n    https: 127.0.0.13:8443\n", 1)
	_, err := config.Parse("https.yaml", []byte(text))
	if err == nil || !strings.Contains(err.Error(), "https.yaml:9: pops[0].https: 127.0.0.13:8443 listens for HTTPS but no site has a tls section") ||
		!strings.Contains(err.Error(), "give a site tls, or remove https") {
		t.Fatalf("https without a TLS site: %v", err)
	}
	if _, err := config.Parse("ok.yaml", []byte(withSiteTLS(text))); err != nil {
		t.Fatalf("https with a dev_ca site: %v", err)
	}
}
