package config_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/internal/config"
)

// TestShutdown: the shutdown section's defaults (no drain, a 10 s grace),
// its values, and refusals that name the field and the line.
func TestShutdown(t *testing.T) {
	cfg, err := config.Parse("base.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	if sd := cfg.Shutdown; sd.Drain != 0 || sd.Grace != 10*time.Second {
		t.Errorf("defaults: %+v, want no drain and a 10s grace", sd)
	}
	cfg, err = config.Parse("set.yaml", []byte(base+"shutdown:\n  drain: 30s\n  grace: 45s\n"))
	if err != nil {
		t.Fatal(err)
	}
	if sd := cfg.Shutdown; sd.Drain != 30*time.Second || sd.Grace != 45*time.Second {
		t.Errorf("set: %+v", sd)
	}
	line := strings.Count(base, "\n") + 2 // the line after "shutdown:"
	for _, c := range []struct{ yaml, want string }{
		{"  drain: -5s\n", "shutdown.drain: -5s is out of range [0s,1h]"},
		{"  grace: 2h\n", "shutdown.grace: 2h0m0s is out of range [0s,1h]"},
		{"  drian: 5s\n", "drian"},
	} {
		_, err := config.Parse("bad.yaml", []byte(base+"shutdown:\n"+c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "bad.yaml:"+strconv.Itoa(line)) {
			t.Errorf("%q: %v, want %q at bad.yaml:%d", c.yaml, err, c.want, line)
		}
	}
}

// TestPluginLimits: plugins.timeout and plugins.memory, their defaults and
// their bounds.
func TestPluginLimits(t *testing.T) {
	cfg, err := config.Parse("base.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	if p := cfg.Plugins; p.Timeout != 50*time.Millisecond || p.Memory != 32<<20 {
		t.Errorf("defaults: timeout %v memory %d, want 50ms and 32MiB", p.Timeout, p.Memory)
	}
	cfg, err = config.Parse("set.yaml", []byte(base+"plugins:\n  timeout: 200ms\n  memory: 64MiB\n"))
	if err != nil {
		t.Fatal(err)
	}
	if p := cfg.Plugins; p.Timeout != 200*time.Millisecond || p.Memory != 64<<20 {
		t.Errorf("set: timeout %v memory %d", p.Timeout, p.Memory)
	}
	for _, c := range []struct{ yaml, want string }{
		{"  timeout: 30s\n", "plugins.timeout: 30s is out of range [1ms,10s]"},
		{"  memory: 100000\n", "plugins.memory: 100000 bytes: want whole 64KiB pages from 1MiB to 4GiB"},
		{"  memory: 8GiB\n", "plugins.memory: 8589934592 bytes"},
	} {
		if _, err := config.Parse("bad.yaml", []byte(base+"plugins:\n"+c.yaml)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.yaml, err, c.want)
		}
	}
}

// TestSiteDefaultTTLSetting: sites[].cache.default_ttl, default 0 and
// bounded, with the line and field of a bad value.
func TestSiteDefaultTTLSetting(t *testing.T) {
	cfg, err := config.Parse("base.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	if d := cfg.Sites[0].Cache.DefaultTTL; d != 0 {
		t.Errorf("default: %v, want 0", d)
	}
	set := strings.Replace(base, "    hosts: [www.example.test]\n", "    hosts: [www.example.test]\n    cache:\n      default_ttl: 10m\n", 1)
	if cfg, err = config.Parse("set.yaml", []byte(set)); err != nil {
		t.Fatal(err)
	}
	if d := cfg.Sites[0].Cache.DefaultTTL; d != 10*time.Minute {
		t.Errorf("set: %v, want 10m", d)
	}
	for _, c := range []struct{ value, want string }{
		{"-1s", "sites[0].cache.default_ttl: -1s is out of range [0s,8760h] (a year); 0 keeps the RFC 9111 heuristic only"},
		{"9000h", "sites[0].cache.default_ttl: 9000h0m0s is out of range [0s,8760h]"},
		{"ten minutes", "sites[0].cache.default_ttl"},
	} {
		bad := strings.Replace(set, "default_ttl: 10m", "default_ttl: "+c.value, 1)
		_, err := config.Parse("bad.yaml", []byte(bad))
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "bad.yaml:") {
			t.Errorf("default_ttl %s: %v, want the file, line and %q", c.value, err, c.want)
		}
	}
}

// TestSiteCompressSetting: sites[].cache.compress, default false; a value
// that is not a boolean is refused with its line and field.
func TestSiteCompressSetting(t *testing.T) {
	cfg, err := config.Parse("base.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Sites[0].Cache.Compress {
		t.Error("compress is on by default; want off")
	}
	set := strings.Replace(base, "    hosts: [www.example.test]\n", "    hosts: [www.example.test]\n    cache:\n      compress: true\n", 1)
	if cfg, err = config.Parse("set.yaml", []byte(set)); err != nil || !cfg.Sites[0].Cache.Compress {
		t.Fatalf("compress: true: %v", err)
	}
	bad := strings.Replace(set, "compress: true", "compress: gzip", 1)
	if _, err := config.Parse("bad.yaml", []byte(bad)); err == nil || !strings.Contains(err.Error(), "bad.yaml:") || !strings.Contains(err.Error(), "sites[0].cache.compress") {
		t.Errorf("compress: gzip: %v, want the file, line and field", err)
	}
}

// TestSiteClientCacheControlSetting: sites[].cache.client_cache_control,
// "ignore" unless set, "honor" or "ignore" only, with line and field.
func TestSiteClientCacheControlSetting(t *testing.T) {
	cfg, err := config.Parse("base.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Sites[0].Cache.ClientCacheControl; got != "ignore" {
		t.Errorf("default %q, want ignore", got)
	}
	set := strings.Replace(base, "    hosts: [www.example.test]\n", "    hosts: [www.example.test]\n    cache:\n      client_cache_control: honor\n", 1)
	if cfg, err = config.Parse("set.yaml", []byte(set)); err != nil || cfg.Sites[0].Cache.ClientCacheControl != "honor" {
		t.Fatalf("honor: %v", err)
	}
	bad := strings.Replace(set, "client_cache_control: honor", "client_cache_control: obey", 1)
	_, err = config.Parse("bad.yaml", []byte(bad))
	if err == nil || !strings.Contains(err.Error(), `bad.yaml:`) || !strings.Contains(err.Error(), `sites[0].cache.client_cache_control: "obey" is not allowed; expected one of ignore, honor`) {
		t.Errorf("obey: %v", err)
	}
}

// TestSiteStaleIfErrorSetting: sites[].cache.stale_if_error, default 0 and
// bounded.
func TestSiteStaleIfErrorSetting(t *testing.T) {
	cfg, err := config.Parse("base.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	if d := cfg.Sites[0].Cache.StaleIfError; d != 0 {
		t.Errorf("default: %v, want 0", d)
	}
	set := strings.Replace(base, "    hosts: [www.example.test]\n", "    hosts: [www.example.test]\n    cache:\n      stale_if_error: 1h\n", 1)
	if cfg, err = config.Parse("set.yaml", []byte(set)); err != nil {
		t.Fatal(err)
	}
	if d := cfg.Sites[0].Cache.StaleIfError; d != time.Hour {
		t.Errorf("set: %v, want 1h", d)
	}
	bad := strings.Replace(set, "stale_if_error: 1h", "stale_if_error: 800h", 1)
	if _, err := config.Parse("bad.yaml", []byte(bad)); err == nil || !strings.Contains(err.Error(), "sites[0].cache.stale_if_error: 800h0m0s is out of range [0s,720h]") {
		t.Errorf("800h: %v", err)
	}
}

// TestSiteCacheRules: sites[].cache.rules, read in order, and each bad
// rule refused with the line and field that make it so.
func TestSiteCacheRules(t *testing.T) {
	rules := "    cache:\n      rules:\n" +
		"        - path: /api/*\n          bypass: true\n" +
		"        - path: /static/*\n          ttl: 720h\n" +
		"        - path: \"*.html\"\n          default_ttl: 1m\n"
	set := strings.Replace(base, "    hosts: [www.example.test]\n", "    hosts: [www.example.test]\n"+rules, 1)
	cfg, err := config.Parse("set.yaml", []byte(set))
	if err != nil {
		t.Fatal(err)
	}
	want := []config.CacheRule{{Path: "/api/*", Bypass: true}, {Path: "/static/*", TTL: 720 * time.Hour}, {Path: "*.html", DefaultTTL: time.Minute}}
	if got := cfg.Sites[0].Cache.Rules; !reflect.DeepEqual(got, want) {
		t.Fatalf("rules: %+v, want %+v", got, want)
	}
	first := strings.Count(base[:strings.Index(base, "    hosts: [www.example.test]\n")], "\n") + 4 // "- path: /api/*"
	for _, c := range []struct {
		from, to string
		line     int // offset from the first rule's line
		want     string
	}{
		{"- path: /api/*", "- path: api/*", 0, `sites[0].cache.rules[0].path: "api/*" must start with / or *`},
		{"- path: /api/*", "- path: /api/*?x=1", 0, `sites[0].cache.rules[0].path: "/api/*?x=1" holds ? or #`},
		{"- path: /static/*", "- path: /api/*", 2, `sites[0].cache.rules[1].path: "/api/*" is already rules[0]'s, which matches first: this rule would never apply`},
		{"          bypass: true\n", "          bypass: true\n          ttl: 1h\n", 1, "sites[0].cache.rules[0].bypass: bypass stores nothing, so ttl, default_ttl and the stale windows would never apply; keep one"},
		{"          ttl: 720h\n", "          ttl: -1h\n", 3, "sites[0].cache.rules[1].ttl: -1h0m0s is out of range [0s,8760h] (a year)"},
		{"          ttl: 720h\n", "          ttl: 0s\n", 2, "sites[0].cache.rules[1]: does nothing; set bypass: true, ttl, default_ttl, stale_if_error, stale_while_revalidate, headers or redirect"},
		{"          ttl: 720h\n", "          redirect: /new/$2\n", 3, `sites[0].cache.rules[1].redirect: "/new/$2" uses $2, but path "/static/*" has 1 stars`},
		{"          ttl: 720h\n", "          redirect: new\n", 3, `sites[0].cache.rules[1].redirect: "new" must be a path (/new/$1) or an http(s) URL`},
		{"          ttl: 720h\n", "          redirect: /new/$1\n          redirect_status: 200\n", 4, "sites[0].cache.rules[1].redirect_status: 200 is not a redirect"},
		{"          ttl: 720h\n", "          ttl: 720h\n          redirect: /new/$1\n", 4, "sites[0].cache.rules[1].redirect: a redirect is answered at the PoP and stores nothing"},
		{"          ttl: 720h\n", "          stale_if_error: 1000h\n", 3, "sites[0].cache.rules[1].stale_if_error: 1000h0m0s is out of range [0s,720h]"},
		{"          bypass: true\n", "          bypass: true\n          stale_while_revalidate: 1m\n", 1, "sites[0].cache.rules[0].bypass: bypass stores nothing"},
		{"          ttl: 720h\n", "          headers: {set: {Content-Length: \"1\"}}\n", 3, "sites[0].cache.rules[1].headers: Content-Length is written by the PoP"},
		{"          default_ttl: 1m\n", "          default_tll: 1m\n", 5, "default_tll"},
	} {
		bad := strings.Replace(set, c.from, c.to, 1)
		_, err := config.Parse("bad.yaml", []byte(bad))
		if at := "bad.yaml:" + strconv.Itoa(first+c.line) + ":"; err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), at) {
			t.Errorf("%q: %v, want %q at %s", c.to, err, c.want, at)
		}
	}
}

// refusedAt checks that text with its first from replaced by to is
// refused by config.Parse with want at line of bad.yaml.
func refusedAt(t *testing.T, text, from, to string, line int, want string) {
	t.Helper()
	_, err := config.Parse("bad.yaml", []byte(strings.Replace(text, from, to, 1)))
	if at := "bad.yaml:" + strconv.Itoa(line) + ": " + want; err == nil || !strings.Contains(err.Error(), at) {
		t.Errorf("%q: %v, want %q", to, err, at)
	}
}

// TestSiteRoutes: sites[].routes send paths to named origins; a route
// naming no origin or an unknown one, a pattern hidden by an earlier
// route, duplicate origin names and routes that leave no origin for the
// other paths are refused with their line and field.
func TestSiteRoutes(t *testing.T) {
	origins := "    origins:\n" +
		"      - {name: web, url: http://127.0.0.1:8081}\n" +
		"      - {name: api, url: http://127.0.0.1:8082}\n" +
		"    routes:\n" +
		"      - {path: /api/*, origins: [api]}\n"
	set := strings.Replace(base, "    origins:\n      - url: http://127.0.0.1:8081\n", origins, 1)
	cfg, err := config.Parse("set.yaml", []byte(set))
	if err != nil {
		t.Fatal(err)
	}
	if r := cfg.Sites[0].Routes; len(r) != 1 || r[0].Path != "/api/*" || len(r[0].Origins) != 1 || r[0].Origins[0] != "api" {
		t.Fatalf("routes: %+v", r)
	}
	route := strings.Count(set[:strings.Index(set, "      - {path: /api/*")], "\n") + 1
	for _, c := range []struct {
		from, to string
		line     int
		want     string
	}{
		{"origins: [api]}", "origins: [apis]}", route, `sites[0].routes[0].origins[0]: "apis" is not the name of one of the site's origins (named: web, api)`},
		{"origins: [api]}", "origins: []}", route, "sites[0].routes[0].origins: missing"},
		{"{path: /api/*,", "{path: api/*,", route, `sites[0].routes[0].path: "api/*" must start with / or *`},
		{"      - {path: /api/*, origins: [api]}\n", "      - {path: /api/*, origins: [api]}\n      - {path: /api/*, origins: [web]}\n", route + 1,
			`sites[0].routes[1].path: "/api/*" is already routes[0]'s, which matches first`},
		{"      - {path: /api/*, origins: [api]}\n", "      - {path: /api/*, origins: [api]}\n      - {path: /www/*, origins: [web]}\n", route,
			"sites[0].routes: every origin is named by a route, so a request no route matches would have no origin"},
		{"{name: api,", "{name: web,", route - 2, `sites[0].origins[1].name: "web" is already origins[0]'s`},
		{"url: http://127.0.0.1:8082}", "url: http://127.0.0.1:8082, backup: true}", route, "sites[0].routes[0].origins: names only backup origins"},
		{"url: http://127.0.0.1:8082}", "url: http://127.0.0.1:8082, weight: 101}", route - 2, "sites[0].origins[1].weight: 101 is out of range [0,100]"},
		{"url: http://127.0.0.1:8082}", "url: http://127.0.0.1:8082, max_conns: -1}", route - 2, "sites[0].origins[1].max_conns: -1 is out of range [0,1000000]"},
		{"url: http://127.0.0.1:8081}", "url: http://127.0.0.1:8081, backup: true}", route, "sites[0].routes: the origins no route names are all backups"},
	} {
		refusedAt(t, set, c.from, c.to, c.line, c.want)
	}
	catchAll := strings.Replace(set, "      - {path: /api/*, origins: [api]}\n", "      - {path: /api/*, origins: [api]}\n      - {path: /*, origins: [web]}\n", 1)
	if _, err := config.Parse("all.yaml", []byte(catchAll)); err != nil {
		t.Errorf("every origin routed, with a catch-all: %v", err)
	}
	withBackup := strings.Replace(set, "      - {name: api, url: http://127.0.0.1:8082}\n", "      - {name: api, url: http://127.0.0.1:8082}\n      - {name: static, url: http://127.0.0.1:8083, backup: true}\n", 1)
	if cfg, err := config.Parse("backup.yaml", []byte(withBackup)); err != nil || !cfg.Sites[0].Origins[2].Backup {
		t.Errorf("a backup origin: %v", err)
	}
	line := strings.Count(base[:strings.Index(base, "      - url: http://127.0.0.1:8081")], "\n") + 1
	refusedAt(t, base, "      - url: http://127.0.0.1:8081\n", "      - url: http://127.0.0.1:8081\n        backup: true\n", line, "sites[0].origins: every origin is a backup")
}

// TestSiteHealthCheck: sites[].health_check, with its line and field for
// each bad value.
func TestSiteHealthCheck(t *testing.T) {
	hc := "    health_check:\n      path: /healthz\n      interval: 2s\n      timeout: 1s\n      fails: 3\n"
	set := strings.Replace(base, "    hosts: [www.example.test]\n", "    hosts: [www.example.test]\n"+hc, 1)
	cfg, err := config.Parse("set.yaml", []byte(set))
	if err != nil {
		t.Fatal(err)
	}
	if h := cfg.Sites[0].HealthCheck; h.Path != "/healthz" || h.Interval != 2*time.Second || h.Timeout != time.Second || h.Fails != 3 || h.Passes != 0 {
		t.Fatalf("health_check: %+v", h)
	}
	first := strings.Count(set[:strings.Index(set, "      path: /healthz")], "\n") + 1
	for _, c := range []struct {
		from, to string
		line     int
		want     string
	}{
		{"path: /healthz", "path: healthz", first, `sites[0].health_check.path: "healthz" is not a request path`},
		{"      path: /healthz\n", "", first, "sites[0].health_check.path: missing"}, // at the section's first line left
		{"interval: 2s", "interval: 10ms", first + 1, "sites[0].health_check.interval: 10ms is out of range [100ms,1h]"},
		{"timeout: 1s", "timeout: 3s", first + 2, "sites[0].health_check.timeout: 3s is out of range [0s,2s]"},
		{"fails: 3", "fails: 11", first + 3, "sites[0].health_check.fails: 11 is out of range [0,10]"},
	} {
		refusedAt(t, set, c.from, c.to, c.line, c.want)
	}
}

// TestSiteHeaders: sites[].headers, with the line and field of a change
// the PoP refuses.
func TestSiteHeaders(t *testing.T) {
	hd := "    headers:\n      response:\n        set: {X-Frame-Options: DENY}\n        remove: [Server]\n" +
		"      request:\n        set: {X-Origin-Secret: s3cret}\n"
	set := strings.Replace(base, "    hosts: [www.example.test]\n", "    hosts: [www.example.test]\n"+hd, 1)
	cfg, err := config.Parse("set.yaml", []byte(set))
	if err != nil {
		t.Fatal(err)
	}
	if h := cfg.Sites[0].Headers; h.Response.Set["X-Frame-Options"] != "DENY" || h.Response.Remove[0] != "Server" || h.Request.Set["X-Origin-Secret"] != "s3cret" {
		t.Fatalf("headers: %+v", h)
	}
	resp := strings.Count(set[:strings.Index(set, "        set: {X-Frame")], "\n") + 1
	for _, c := range []struct {
		from, to string
		line     int
		want     string
	}{
		{"set: {X-Frame-Options: DENY}", "set: {Content-Length: \"5\"}", resp, "sites[0].headers.response: Content-Length is written by the PoP"},
		{"set: {X-Origin-Secret: s3cret}", "set: {Host: other}", resp + 3, "sites[0].headers.request: Host is written by the PoP"},
	} {
		refusedAt(t, set, c.from, c.to, c.line, c.want)
	}
}

// TestSiteStaleWhileRevalidateSetting: sites[].cache.stale_while_revalidate,
// default 0 and bounded, with the line and field of a bad value.
func TestSiteStaleWhileRevalidateSetting(t *testing.T) {
	set := strings.Replace(base, "    hosts: [www.example.test]\n", "    hosts: [www.example.test]\n    cache:\n      stale_while_revalidate: 30s\n", 1)
	cfg, err := config.Parse("set.yaml", []byte(set))
	if err != nil {
		t.Fatal(err)
	}
	if d := cfg.Sites[0].Cache.StaleWhileRevalidate; d != 30*time.Second {
		t.Errorf("set: %v, want 30s", d)
	}
	if cfg, err = config.Parse("base.yaml", []byte(base)); err != nil || cfg.Sites[0].Cache.StaleWhileRevalidate != 0 {
		t.Errorf("default: %v %v, want 0", cfg.Sites[0].Cache.StaleWhileRevalidate, err)
	}
	line := strings.Count(set[:strings.Index(set, "stale_while_revalidate")], "\n") + 1
	bad := strings.Replace(set, "30s", "800h", 1)
	if _, err := config.Parse("bad.yaml", []byte(bad)); err == nil || !strings.Contains(err.Error(), "bad.yaml:"+strconv.Itoa(line)+": sites[0].cache.stale_while_revalidate: 800h0m0s is out of range [0s,720h]") {
		t.Errorf("800h: %v", err)
	}
}

// TestZoneRecords: dns.zones[].records, kept as written; a record that
// does not parse, or cannot stand beside the zone's other names, is
// refused with its line and the reason.
func TestZoneRecords(t *testing.T) {
	recs := "      records:\n" +
		"        - \"@ MX 10 mail\"\n" +
		"        - '@ TXT \"v=spf1 mx -all\"'\n" +
		"        - mail A 192.0.2.25\n"
	cfg, err := config.Parse("set.yaml", []byte(base+recs))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.DNS.Zones[0].Records; len(got) != 3 || got[1] != `@ TXT "v=spf1 mx -all"` {
		t.Fatalf("records: %q", got)
	}
	first := strings.Count(base, "\n") + 2 // the line of "@ MX 10 mail"
	for _, c := range []struct {
		from, to string
		line     int // offset from the first record's line
		want     string
	}{
		{"mail A 192.0.2.25", "mail A 300.1.1.1", 2, `dns.zones[0].records[2]: "mail A 300.1.1.1": bad A A`},
		{"mail A 192.0.2.25", "www A 192.0.2.25", 2, "dns.zones[0].records[2]: www.example.test. is a served name, answered with the nearest PoP's addresses"},
		{"mail A 192.0.2.25", "sub NS ns1.sub", 2, "dns.zones[0].records[2]: name server ns1.sub.example.test. is inside the delegation it serves"},
		{"mail A 192.0.2.25", "www NS ns.other.net.", 2, "delegating www.example.test. would hand the served name www.example.test. to the other servers"},
		{"mail A 192.0.2.25", "mail.other.test. A 192.0.2.25", 2, "outside zone example.test."},
		{"\"@ MX 10 mail\"", "\"@ CNAME elsewhere.net.\"", 0, "dns.zones[0].records[0]: the apex cannot be a CNAME"},
		{"mail A 192.0.2.25", "a.*.b A 192.0.2.25", 2, "dns.zones[0].records[2]: \"a.*.b A 192.0.2.25\": a * that is not the whole first label is not a wildcard"},
		{"mail A 192.0.2.25", "loop CNAME loop", 2, "dns.zones[0].records[2]: CNAME loop loop.example.test. -> loop.example.test."},
	} {
		bad := strings.Replace(base+recs, c.from, c.to, 1)
		_, err := config.Parse("bad.yaml", []byte(bad))
		if at := "bad.yaml:" + strconv.Itoa(first+c.line) + ":"; err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), at) {
			t.Errorf("%q: %v, want %q at %s", c.to, err, c.want, at)
		}
	}
}

// TestZoneWildcards: "*" in names (a geo-routed wildcard under the
// apex), and wildcard owners in records, are accepted; a static address
// on a geo-routed wildcard is refused with its line, as on any served
// name.
func TestZoneWildcards(t *testing.T) {
	text := strings.Replace(base, "      names: [www]\n", "      names: [www, \"*\", \"*.shop.example.test\"]\n"+
		"      records:\n        - '* TXT \"any name\"'\n        - \"*.mail MX 10 mx\"\n", 1)
	cfg, err := config.Parse("wild.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if got := config.FQDN(cfg.DNS.Zones[0].Names[1], "example.test"); got != "*.example.test" {
		t.Errorf("FQDN(*) = %q, want *.example.test", got)
	}
	line := strings.Count(text[:strings.Index(text, "\"*.mail")], "\n") + 1
	refusedAt(t, text, "\"*.mail MX 10 mx\"", "\"* A 192.0.2.1\"", line, "dns.zones[0].records[1]: *.example.test. is a served name")
}

// TestZonePoPs: dns.zones[].pops keeps names to some PoPs; an unknown
// PoP or a name that is not served is refused with its line.
func TestZonePoPs(t *testing.T) {
	text := strings.Replace(base, "      names: [www]\n", "      names: [www]\n      pops:\n        www: [tokyo]\n", 1)
	cfg, err := config.Parse("pops.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.DNS.Zones[0].PoPs["www"]; len(got) != 1 || got[0] != "tokyo" {
		t.Fatalf("pops: %v", cfg.DNS.Zones[0].PoPs)
	}
	line := strings.Count(text[:strings.Index(text, "        www: [tokyo]")], "\n") + 1
	for _, c := range []struct{ from, to, want string }{
		{"www: [tokyo]", "www: [london]", `dns.zones[0].pops.www[0]: "london" is not the id of one of the pops`},
		{"www: [tokyo]", "mail: [tokyo]", "dns.zones[0].pops.mail: mail is not one of the zone's names"},
		{"www: [tokyo]", "www: []", "dns.zones[0].pops.www: no PoPs"},
	} {
		refusedAt(t, text, c.from, c.to, line, c.want)
	}
}

// TestSiteErrorPageSetting: sites[].error_page must name a readable file
// of at most 64 KiB; otherwise the line and field say which.
func TestSiteErrorPageSetting(t *testing.T) {
	dir := t.TempDir()
	small, big := filepath.Join(dir, "ok.html"), filepath.Join(dir, "big.html")
	if err := os.WriteFile(small, []byte("<p>{{status}}</p>"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(big, make([]byte, config.MaxErrorPage+1), 0o644); err != nil {
		t.Fatal(err)
	}
	with := func(path string) string {
		return strings.Replace(base, "    hosts: [www.example.test]\n", "    hosts: [www.example.test]\n    error_page: "+path+"\n", 1)
	}
	cfg, err := config.Parse("set.yaml", []byte(with(small)))
	if err != nil || cfg.Sites[0].ErrorPage != small {
		t.Fatalf("set: %v %q", err, cfg.Sites[0].ErrorPage)
	}
	line := strings.Count(base[:strings.Index(base, "    hosts: [www.example.test]\n")], "\n") + 2
	for _, c := range []struct{ path, want string }{
		{filepath.Join(dir, "missing.html"), "sites[0].error_page: cannot read " + filepath.Join(dir, "missing.html") + ": no such file or directory"},
		{big, "sites[0].error_page: " + big + " is 65537 bytes; an error page may be at most 65536 (64 KiB)"},
	} {
		_, err := config.Parse("bad.yaml", []byte(with(c.path)))
		if at := "bad.yaml:" + strconv.Itoa(line) + ": "; err == nil || !strings.Contains(err.Error(), at+c.want) {
			t.Errorf("%s: %v, want %q", c.path, err, at+c.want)
		}
	}
}
