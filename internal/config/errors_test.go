package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meridian-edge/meridian/internal/config"
)

// wantErr is one expected problem: where it is and what it says.
type wantErr struct {
	line  int
	field string
	msg   string
}

// loadErrors writes text to a file in a fresh directory, loads it and
// returns the file's path and each reported problem, in order.
func loadErrors(t *testing.T, name, text string) (string, []*config.Error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := config.Load(path)
	if err == nil {
		t.Fatalf("accepted:\n%s", text)
	}
	list := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	}
	var out []*config.Error
	for _, e := range list {
		var ce *config.Error
		if !errors.As(e, &ce) {
			t.Fatalf("error %T (%v) is not a *config.Error", e, e)
		}
		out = append(out, ce)
	}
	return path, out
}

func checkErrors(t *testing.T, name, text string, want []wantErr) {
	t.Helper()
	path, got := loadErrors(t, name, text)
	for i := 0; i < len(got) || i < len(want); i++ {
		switch {
		case i >= len(got):
			t.Errorf("missing error: %s:%d: %s: %s", path, want[i].line, want[i].field, want[i].msg)
		case i >= len(want):
			t.Errorf("unexpected error: %v", got[i])
		default:
			g, w := got[i], want[i]
			if g.File != path || g.Line != w.line || g.Field != w.field || g.Msg != w.msg {
				t.Errorf("error %d:\n  got  %s:%d: field %q: %s\n  want %s:%d: field %q: %s", i, g.File, g.Line, g.Field, g.Msg, path, w.line, w.field, w.msg)
			}
		}
	}
}

// TestSyntaxErrorLines checks that YAML syntax errors point at the line with
// the mistake, not at the start of the enclosing block as yaml.v3 does.
func TestSyntaxErrorLines(t *testing.T) {
	cases := []struct {
		name string
		text string
		want wantErr
	}{
		{"key outdented out of a list item", `pops:
  - id: tokyo
  region: ap-northeast-1
    http: 127.0.0.13:8080
`, wantErr{3, "", "YAML syntax: did not find expected '-' indicator (in the list that starts on line 2)"}},
		{"key outdented under a later list item", `nats:
  embedded:
    listen: 127.0.0.1:4222
pops:
  - id: tokyo
    region: ap-northeast-1
  - id: osaka
   region: ap-northeast-3
`, wantErr{8, "", "YAML syntax: did not find expected '-' indicator (in the list that starts on line 5)"}},
		{"key indented between two levels", `nats:
  embedded:
    listen: 127.0.0.1:4222
   urls: [nats://127.0.0.1:4222]
`, wantErr{4, "", "YAML syntax: did not find expected key (in the mapping that starts on line 2)"}},
		{"key indented wrongly in a mapping that starts on line 1", `log:
  level: info
 format: json
`, wantErr{3, "", "YAML syntax: did not find expected key (in the mapping that starts on line 1)"}},
		{"list item outdented", `# sites
sites:
  - name: www
    hosts:
      - www.example.test
     - api.example.test
`, wantErr{6, "", "YAML syntax: did not find expected key (in the mapping that starts on line 3)"}},
		{"list item where a key belongs", `log:
  level: info
- pops
`, wantErr{3, "", "YAML syntax: did not find expected key (in the mapping that starts on line 1)"}},
		{"key after a value on its line", `log:
  level: info
  format: text
pops: [a, b]
  sites: x
`, wantErr{5, "", "YAML syntax: did not find expected key (in the mapping that starts on line 1)"}},
		{"key indented under a scalar", `pops:
  - id: tokyo
    region: ap-northeast-1
      http: 127.0.0.13:8080
`, wantErr{4, "", "YAML syntax: mapping values are not allowed in this context"}},
		{"two keys on line 1", `log: level: info
`, wantErr{1, "", "YAML syntax: mapping values are not allowed in this context"}},
		{"key without colon", `pops:
  - id: tokyo
    region ap-northeast-1
    http: 127.0.0.13:8080
`, wantErr{3, "", "YAML syntax: could not find expected ':'"}},
		{"bad key after a multi-line quoted string", `log:
  level: "info"
 "format
 text"
`, wantErr{3, "", "YAML syntax: did not find expected key (in lines 3 to 4, in the mapping that starts on line 1)"}},
		{"windows line ends", "pops:\r\n  - id: tokyo\r\n  region: ap-northeast-1\r\n", wantErr{3, "", "YAML syntax: did not find expected '-' indicator (in the list that starts on line 2)"}},
		{"byte order mark", "\ufeffpops:\n  - id: tokyo\n  region: ap-northeast-1\n", wantErr{3, "", "YAML syntax: did not find expected '-' indicator (in the list that starts on line 2)"}},
		{"no line break at the end", "pops:\n  - id: tokyo\n  region: ap-northeast-1", wantErr{3, "", "YAML syntax: did not find expected '-' indicator (in the list that starts on line 2)"}},
		// yaml.v3 reports an unclosed bracket where it opens; that stays.
		{"unclosed bracket", `pops:
  - id: tokyo
    addresses: [127.0.0.13,
      127.0.0.14
    http: 127.0.0.13:8080
`, wantErr{3, "", "YAML syntax: did not find expected ',' or ']'"}},
		{"unclosed quote", `log:
  level: "info
`, wantErr{2, "", "YAML syntax: found unexpected end of stream"}},
		{"tab in the indentation", "log:\n  level: info\n\tformat: json\n", wantErr{3, "", "YAML syntax: a tab in the indentation; indent with spaces"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			checkErrors(t, "syntax.yaml", c.text, []wantErr{c.want})
		})
	}
}

// TestSyntaxErrorLineInALongFile checks the line far below the block start,
// where the locator bisects rather than trying every line.
func TestSyntaxErrorLineInALongFile(t *testing.T) {
	var b strings.Builder
	b.WriteString("sites:\n")
	for range 300 {
		b.WriteString("  - name: www\n    hosts: [www.example.test]\n")
	}
	b.WriteString("   origins: []\n")
	checkErrors(t, "long.yaml", b.String(), []wantErr{{602, "", "YAML syntax: did not find expected '-' indicator (in the list that starts on line 2)"}})
}

// valid is a small valid file; TestAllErrorsTogether edits it.
const valid = `nats:
  embedded:
    listen: 127.0.0.1:4222
pops:
  - id: tokyo
    region: ap-northeast-1
    http: 127.0.0.13:8080
    admin: 127.0.0.13:9090
  - id: paris
    region: eu-west-2
    http: 127.0.0.14:8080
    admin: 127.0.0.14:9090
sites:
  - name: www
    hosts: [www.example.test]
    origins:
      - url: http://127.0.0.1:8081
plugins:
  sdk_sites: [www]
dns:
  listen: 127.0.0.1:5353
  zones:
    - apex: example.test
      names: [www]
`

// TestAllErrorsTogether checks that shape errors (unknown or repeated keys,
// wrong types) and validation errors are reported in one run, sorted by line,
// without the spurious errors a rejected value would cause.
func TestAllErrorsTogether(t *testing.T) {
	const popFields = "id, region, lat, lon, http, admin, addresses, https, http3, proxy_protocol, real_ip, capacity, fast_hits, cache"
	cases := []struct {
		name  string
		edits []string // pairs: replace old by new in valid, once
		want  []wantErr
	}{
		{"typo, latitude out of range and bad zone name", []string{
			"    region: ap-northeast-1\n", "    colour: blue\n    lat: 123.4\n    lon: 139.7\n",
			"apex: example.test", "apex: example..test",
		}, []wantErr{
			{6, "pops[0].colour", "unknown field; expected one of " + popFields},
			{7, "pops[0].lat", "123.4 is out of range [-90,90]"},
			{25, "dns.zones[0].apex", `"example..test" is not a domain name; expected a zone such as example.com`},
		}},
		// The typo is the cause; "region: missing" only follows from it and
		// would be read first, so it is left out.
		{"typo of a required field", []string{"region: eu-west-2", "regoin: eu-west-2"}, []wantErr{
			{10, "pops[1].regoin", "unknown field; did you mean region? expected one of " + popFields},
		}},
		{"typo of another required field", []string{"admin: 127.0.0.14:9090", "admn: 127.0.0.14:9090"}, []wantErr{
			{12, "pops[1].admn", "unknown field; did you mean admin? expected one of " + popFields},
		}},
		// An unknown key that is no misspelling of the missing field does
		// not hide it.
		{"unrelated unknown key and a missing field", []string{"region: eu-west-2", "colour: blue"}, []wantErr{
			{9, "pops[1].region", "missing; name a catalog region or set lat and lon"},
			{10, "pops[1].colour", "unknown field; expected one of " + popFields},
		}},
		{"wrong type hides only what depends on it", []string{
			"    region: ap-northeast-1\n", "    lat: north\n    lon: 139.7\n",
			"admin: 127.0.0.14:9090", "admin: 127.0.0.14:8080",
			"  listen: 127.0.0.1:5353\n", "  listen: 127.0.0.1:5353\n  answers: 9\n",
		}, []wantErr{
			{6, "pops[0].lat", `expected a number, got "north"`},
			{13, "pops[1].admin", "address 127.0.0.14:8080 clashes with pops[1].http (127.0.0.14:8080); give each listener its own host:port"},
			{23, "dns.answers", "9 is out of range [1,8]"},
		}},
		{"key set twice", []string{
			"    http: 127.0.0.13:8080\n", "    http: 127.0.0.13:8080\n    http: 127.0.0.13:8081\n",
			"names: [www]", "names: [www.other.test]",
		}, []wantErr{
			{8, "pops[0].http", "set twice (first at line 7)"},
			{25, "dns.zones[0].names[0]", "www.other.test is outside zone example.test; use a name under the apex"},
		}},
		{"section of the wrong shape", []string{
			"  embedded:\n    listen: 127.0.0.1:4222\n", "  - nats://127.0.0.1:4222\n",
			"url: http://127.0.0.1:8081", "url: ftp://127.0.0.1",
		}, []wantErr{
			{2, "nats", "expected a mapping of fields, got a list"},
			{16, "sites[0].origins[0].url", `"ftp://127.0.0.1" is not an origin URL; expected http://host:port or https://host`},
		}},
		{"bad site name is not also an unknown sdk site", []string{
			"  - name: www\n", "  - name: [www]\n",
			"region: eu-west-2", "region: mars-1",
		}, []wantErr{
			{10, "pops[1].region", `unknown region "mars-1"; expected a catalog region such as us-east-1, eu-west-2 or ap-northeast-1 (` + "`meridian regions`" + ` lists all), or set lat and lon`},
			{14, "sites[0].name", "expected a string, got a list"},
		}},
		{"bad size and a missing origin", []string{
			"    admin: 127.0.0.13:9090\n", "    admin: 127.0.0.13:9090\n    cache:\n      l1_size: huge\n",
			"    origins:\n      - url: http://127.0.0.1:8081\n", "",
		}, []wantErr{
			{10, "pops[0].cache.l1_size", `"huge" is not a size; expected a number with an optional unit B, KiB, MiB, GiB, TiB, KB, MB, GB or TB, like 512MiB`},
			{16, "sites[0].origins", "missing; a site needs at least one origin (url: http://host:port)"},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			text := valid
			for i := 0; i < len(c.edits); i += 2 {
				if !strings.Contains(text, c.edits[i]) {
					t.Fatalf("test bug: %q not in the file", c.edits[i])
				}
				text = strings.Replace(text, c.edits[i], c.edits[i+1], 1)
			}
			checkErrors(t, "all.yaml", text, c.want)
		})
	}
}

func TestValidIsValid(t *testing.T) {
	if _, err := config.Parse("valid.yaml", []byte(valid)); err != nil {
		t.Fatal(err)
	}
}
