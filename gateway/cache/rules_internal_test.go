package cache

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
)

func TestMatchPath(t *testing.T) {
	for _, c := range []struct {
		pattern, path string
		want          bool
	}{
		{"/static/*", "/static/a/b.css", true},
		{"/static/*", "/static/", true},
		{"/static/*", "/static", false},
		{"/static/*", "/Static/a", false}, // case-sensitive
		{"*.css", "/a.css", true},
		{"*.css", "/a/b/c.css", true},
		{"*.css", "/a.css.map", false},
		{"/robots.txt", "/robots.txt", true},
		{"/robots.txt", "/robots.txt2", false},
		{"/a*b*c", "/aXbYc", true},
		{"/a*b*c", "/abc", true},
		{"/a*b*c", "/aXbY", false},
		{"/a*b*c", "/acbc", true},
		{"*", "/", true},
		{"/**/x", "/a/b/x", true},
		{"/%7E*", "/%7Euser", true}, // as sent: percent-encoded
	} {
		if got := matchPath(c.pattern, c.path); got != c.want {
			t.Errorf("matchPath(%q, %q) = %v, want %v", c.pattern, c.path, got, c.want)
		}
		if got := matchPath(c.pattern, []byte(c.path)); got != c.want {
			t.Errorf("matchPath(%q, []byte %q) = %v, want %v", c.pattern, c.path, got, c.want)
		}
	}
}

// TestMatchPathAgainstRegexp compares matchPath with the regular
// expression each pattern means, on random patterns and paths over a
// small alphabet (where backtracking cases are common).
func TestMatchPathAgainstRegexp(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	word := func(alphabet string, n int) string {
		var b strings.Builder
		for range rng.IntN(n + 1) {
			b.WriteByte(alphabet[rng.IntN(len(alphabet))])
		}
		return b.String()
	}
	for range 20000 {
		pattern, path := "/"+word("ab*/", 6), "/"+word("ab/", 8)
		parts := strings.Split(pattern, "*")
		for i := range parts {
			parts[i] = regexp.QuoteMeta(parts[i])
		}
		re := regexp.MustCompile("^" + strings.Join(parts, ".*") + "$")
		if got, want := matchPath(pattern, path), re.MatchString(path); got != want {
			t.Fatalf("matchPath(%q, %q) = %v, the pattern's regexp says %v", pattern, path, got, want)
		}
	}
}

func TestSitePolicyValidateRules(t *testing.T) {
	for _, c := range []struct {
		rule PathRule
		want string // "" = valid
	}{
		{PathRule{Path: "/api/*", Bypass: true}, ""},
		{PathRule{Path: "*.css", TTL: 1}, ""},
		{PathRule{Path: "", Bypass: true}, "Rules[0].Path is empty"},
		{PathRule{Path: "api/*", Bypass: true}, `Rules[0].Path "api/*" must start with / or *`},
		{PathRule{Path: "/a?b", Bypass: true}, "without the query"},
		{PathRule{Path: "/a", Bypass: true, TTL: 1}, "Bypass stores nothing"},
		{PathRule{Path: "/a"}, "does nothing"},
		{PathRule{Path: "/a", TTL: -1}, "must not be negative"},
	} {
		err := SitePolicy{SiteID: "s", Rules: []PathRule{c.rule}}.Validate()
		if (c.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%+v: %v, want %q", c.rule, err, c.want)
		}
	}
}
