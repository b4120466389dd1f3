package config_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/meridian-edge/meridian/deploy"
	"github.com/meridian-edge/meridian/internal/config"
)

// base is a small valid file; cases edit it with one mistake each. Line
// numbers in the expected errors refer to the edited text.
const base = `nats:
  embedded:
    listen: 127.0.0.1:4222
pops:
  - id: tokyo
    region: ap-northeast-1
    http: 127.0.0.13:8080
    admin: 127.0.0.13:9090
sites:
  - name: www
    hosts: [www.example.test]
    origins:
      - url: http://127.0.0.1:8081
dns:
  listen: 127.0.0.1:5353
  zones:
    - apex: example.test
      names: [www]
`

// withSiteTLS gives base's site a tls section (dev_ca), which a PoP with
// an https listener needs.
func withSiteTLS(text string) string {
	return strings.Replace(text, "      - url: http://127.0.0.1:8081\n", "      - url: http://127.0.0.1:8081\n    tls:\n      dev_ca: true\n", 1)
}

func TestBaseIsValid(t *testing.T) {
	cfg, err := config.Parse("base.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.PoPs[0]
	if lat, lon := p.Location(); lat != 35.7 || lon != 139.7 {
		t.Errorf("tokyo location = %v,%v; want the catalog's 35.7,139.7", lat, lon)
	}
	if len(p.Addresses) != 1 || p.Addresses[0] != "127.0.0.13" {
		t.Errorf("addresses default = %v, want the http host", p.Addresses)
	}
	if p.Cache.L1Size != config.DefaultL1Size {
		t.Errorf("l1_size default = %v", p.Cache.L1Size)
	}
	z := cfg.DNS.Zones[0]
	if z.NS[0].Name != "ns1.example.test" || z.SOA.MName != "ns1.example.test" || z.SOA.Minimum != config.DefaultSOAMinimum {
		t.Errorf("zone defaults not applied: %+v", z)
	}
}

func TestBadConfigs(t *testing.T) {
	cases := []struct {
		name        string
		old, new    string // replace old by new in base
		wantErrText string
	}{
		{"unknown key", "    region: ap-northeast-1\n", "    region: ap-northeast-1\n    colour: blue\n",
			"bad.yaml:7: pops[0].colour: unknown field; expected one of id, region, lat, lon, http, admin, addresses, https, http3, proxy_protocol, real_ip, capacity, fast_hits, cache"},
		{"bad type", "    region: ap-northeast-1\n", "    region: ap-northeast-1\n    capacity: lots\n",
			`bad.yaml:7: pops[0].capacity: expected a number, got "lots"`},
		{"list where a mapping belongs", "  embedded:\n    listen: 127.0.0.1:4222\n", "  embedded: [a]\n",
			"bad.yaml:2: nats.embedded: expected a mapping of fields, got a list"},
		{"lat out of range", "    region: ap-northeast-1\n", "    lat: 123.4\n    lon: 10\n",
			"bad.yaml:6: pops[0].lat: 123.4 is out of range [-90,90]"},
		{"lat without lon", "    region: ap-northeast-1\n", "    lat: 12\n",
			"bad.yaml:5: pops[0].region: missing; name a catalog region or set lat and lon"},
		{"unknown region", "region: ap-northeast-1", "region: mars-1",
			`bad.yaml:6: pops[0].region: unknown region "mars-1"; expected a catalog region such as us-east-1, eu-west-2 or ap-northeast-1 (` + "`meridian regions`" + ` lists all), or set lat and lon`},
		{"duplicate pop id", "sites:\n", "  - id: tokyo\n    region: ap-northeast-1\n    http: 127.0.0.14:8080\n    admin: 127.0.0.14:9090\nsites:\n",
			`bad.yaml:9: pops[1].id: duplicate PoP id "tokyo" (also pops[0]); every PoP needs its own id`},
		{"site with no origin", "    origins:\n      - url: http://127.0.0.1:8081\n", "",
			"bad.yaml:10: sites[0].origins: missing; a site needs at least one origin (url: http://host:port)"},
		{"origin with a query", "url: http://127.0.0.1:8081", "url: http://127.0.0.1:8081/app?x=1",
			`bad.yaml:13: sites[0].origins[0].url: "http://127.0.0.1:8081/app?x=1" has a query or fragment; an origin is a scheme, a host and an optional path prefix`},
		{"origin path with a dot segment", "url: http://127.0.0.1:8081", "url: http://127.0.0.1:8081/a/../b",
			`bad.yaml:13: sites[0].origins[0].url: "http://127.0.0.1:8081/a/../b" has a dot segment in its path`},
		{"served name outside the zone", "names: [www]", "names: [www, www.other.test]",
			"bad.yaml:18: dns.zones[0].names[1]: www.other.test is outside zone example.test; use a name under the apex"},
		{"port clash", "admin: 127.0.0.13:9090", "admin: 127.0.0.13:8080",
			"bad.yaml:8: pops[0].admin: address 127.0.0.13:8080 clashes with pops[0].http (127.0.0.13:8080); give each listener its own host:port"},
		{"port clash with wildcard", "  listen: 127.0.0.1:5353", "  listen: 0.0.0.0:4222",
			"bad.yaml:15: dns.listen: address 0.0.0.0:4222 clashes with nats.embedded.listen (127.0.0.1:4222); give each listener its own host:port"},
		{"bad duration", "names: [www]", "names: [www]\n      ttl: 30",
			`bad.yaml:19: dns.zones[0].ttl: "30" is not a duration; expected a number with a unit, like 30s, 5m or 1h`},
		{"ttl not whole seconds", "names: [www]", "names: [www]\n      ttl: 1500ms",
			"bad.yaml:19: dns.zones[0].ttl: 1.5s is not a whole number of seconds"},
		{"bad size", "    admin: 127.0.0.13:9090\n", "    admin: 127.0.0.13:9090\n    cache:\n      l1_size: huge\n",
			`bad.yaml:10: pops[0].cache.l1_size: "huge" is not a size; expected a number with an optional unit B, KiB, MiB, GiB, TiB, KB, MB, GB or TB, like 512MiB`},
		{"l1 large bodies too big", "    admin: 127.0.0.13:9090\n", "    admin: 127.0.0.13:9090\n    cache:\n      l1_size: 64MiB\n      l1_large_bodies: 64MiB\n",
			`bad.yaml:11: pops[0].cache.l1_large_bodies: 64MiB leaves less than 1MiB of l1_size 64MiB for BigCache; lower it or raise l1_size`},
		{"host with port", "hosts: [www.example.test]", "hosts: [www.example.test:8080]",
			`bad.yaml:11: sites[0].hosts[0]: "www.example.test:8080" has a port; hosts are matched without the port`},
		{"two default sites", "sites:\n", "sites:\n  - name: a\n    default: true\n    origins: [{url: http://127.0.0.1:1}]\n  - name: b\n    default: true\n    origins: [{url: http://127.0.0.1:1}]\n",
			"bad.yaml:14: sites[1].default: sites[0] is already the default site; at most one site may be"},
		{"no nats", "nats:\n  embedded:\n    listen: 127.0.0.1:4222\n", "",
			"bad.yaml:1: nats: no NATS: set nats.embedded.listen for a built-in server, or nats.urls for an external cluster"},
		{"bad nats url", "  embedded:\n    listen: 127.0.0.1:4222\n", "  urls: [http://x:4222]\n",
			`bad.yaml:2: nats.urls[0]: "http://x:4222" is not a NATS URL; expected nats://host:port (or tls://, ws://, wss://)`},
		{"geo cidr with host bits", "names: [www]", "names: [www]\n  geo:\n    table:\n      - {cidr: 203.0.113.7/24, region: ap-northeast-1}",
			"bad.yaml:21: dns.geo.table[0].cidr: 203.0.113.7/24 has host bits set; did you mean 203.0.113.0/24?"},
		{"key set twice", "    region: ap-northeast-1\n", "    region: ap-northeast-1\n    region: us-east-1\n",
			"bad.yaml:7: pops[0].region: set twice (first at line 6)"},
		{"tab indentation", "    region: ap-northeast-1\n", "\tregion: ap-northeast-1\n",
			"bad.yaml:6: YAML syntax: a tab in the indentation; indent with spaces"},
		{"unclosed quote", "names: [www]", "names: [\"www]",
			"bad.yaml:18: YAML syntax: found unexpected end of stream"},
		{"plain token instead of its hash", "    origins:\n", "    owner_token_sha256: hunter2\n    origins:\n",
			"bad.yaml:12: sites[0].owner_token_sha256: expected the 64 hex digits of a SHA-256, not the token itself; `meridian token` prints a token and its hash"},
		{"two certificate sources", "    origins:\n", "    tls: {acme: true, dev_ca: true}\n    origins:\n",
			"bad.yaml:12: sites[0].tls: choose one certificate source: cert_file and key_file, acme: true, or dev_ca: true"},
		{"missing PEM file", "    origins:\n", "    tls: {cert_file: /nonexistent/site.pem, key_file: /nonexistent/site.key}\n    origins:\n",
			"bad.yaml:12: sites[0].tls.cert_file: cannot read /nonexistent/site.pem: no such file or directory"},
		{"http3 without https", "    admin: 127.0.0.13:9090\n", "    admin: 127.0.0.13:9090\n    http3: true\n",
			"bad.yaml:9: pops[0].http3: HTTP/3 runs beside HTTPS; set https too"},
		{"listen without port", "  listen: 127.0.0.1:5353", "  listen: 127.0.0.1",
			`bad.yaml:15: dns.listen: "127.0.0.1" is not an address; expected host:port, like 127.0.0.1:8080`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if !strings.Contains(base, c.old) {
				t.Fatalf("test bug: %q not in base", c.old)
			}
			text := strings.Replace(base, c.old, c.new, 1)
			_, err := config.Parse("bad.yaml", []byte(text))
			if err == nil {
				t.Fatalf("accepted:\n%s", text)
			}
			if got := err.Error(); !strings.Contains(got, c.wantErrText) {
				t.Fatalf("error:\n  %s\nwant it to contain:\n  %s", got, c.wantErrText)
			}
			var ce *config.Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %T does not unwrap to *config.Error", err)
			}
		})
	}
}

func TestEveryErrorReported(t *testing.T) {
	text := strings.Replace(base, "region: ap-northeast-1", "region: mars-1\n    capacity: -1", 1)
	text = strings.Replace(text, "names: [www]", "names: [www.nope.test]", 1)
	_, err := config.Parse("bad.yaml", []byte(text))
	if err == nil {
		t.Fatal("accepted")
	}
	msg := err.Error()
	for _, want := range []string{"pops[0].region", "pops[0].capacity", "dns.zones[0].names[0]"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not mention %s:\n%s", want, msg)
		}
	}
	if lines := strings.Count(msg, "\n") + 1; lines != 3 {
		t.Errorf("got %d errors, want 3:\n%s", lines, msg)
	}
}

func TestEmptyFile(t *testing.T) {
	_, err := config.Parse("empty.yaml", nil)
	if err == nil || !strings.HasPrefix(err.Error(), "empty.yaml: file is empty") {
		t.Fatalf("err = %v", err)
	}
}

// TestShippedConfigsAreValid keeps deploy/*.yaml loadable.
func TestShippedConfigsAreValid(t *testing.T) {
	names, err := deploy.Files()
	if err != nil {
		t.Fatal(err)
	}
	if len(names) < 2 {
		t.Fatalf("deploy ships %v; want the dev stack and a larger example", names)
	}
	for _, n := range names {
		data, _ := deploy.File(n)
		if _, err := config.Parse("deploy/"+n, data); err != nil {
			t.Errorf("%v", err)
		}
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]config.ByteSize{"512MiB": 512 << 20, "10GB": 10e9, "4096": 4096, "1.5KiB": 1536, "0": 0} {
		got, err := config.ParseByteSize(in)
		if err != nil || got != want {
			t.Errorf("ParseByteSize(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "-1MiB", "12 parsecs", "MiB"} {
		if _, err := config.ParseByteSize(bad); err == nil {
			t.Errorf("ParseByteSize(%q) accepted", bad)
		}
	}
}

func TestNATSPasswordNeverInErrors(t *testing.T) {
	text := strings.Replace(base, "  embedded:\n    listen: 127.0.0.1:4222\n", "  urls: [\"http://pop:s3cret@nats-1:4222\"]\n", 1)
	_, err := config.Parse("bad.yaml", []byte(text))
	if err == nil || strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "nats.urls[0]") {
		t.Fatalf("err = %v; want the bad URL reported without its password", err)
	}
}
