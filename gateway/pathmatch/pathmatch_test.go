package pathmatch

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
)

func TestMatch(t *testing.T) {
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
		if got := Match(c.pattern, c.path); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.pattern, c.path, got, c.want)
		}
		if got := Match(c.pattern, []byte(c.path)); got != c.want {
			t.Errorf("Match(%q, []byte %q) = %v, want %v", c.pattern, c.path, got, c.want)
		}
	}
}

// TestMatchAgainstRegexp compares Match with the regular
// expression each pattern means, on random patterns and paths over a
// small alphabet (where backtracking cases are common).
func TestMatchAgainstRegexp(t *testing.T) {
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
		if got, want := Match(pattern, path), re.MatchString(path); got != want {
			t.Fatalf("Match(%q, %q) = %v, the pattern's regexp says %v", pattern, path, got, want)
		}
	}
}

func TestMatchesAll(t *testing.T) {
	for pattern, want := range map[string]bool{"*": true, "/*": true, "/**": true, "**": true, "/": false, "/a*": false, "*/": false, "*.css": false} {
		if got := MatchesAll(pattern); got != want {
			t.Errorf("MatchesAll(%q) = %v, want %v", pattern, got, want)
		}
	}
}

func TestCheck(t *testing.T) {
	for pattern, want := range map[string]string{
		"/api/*": "", "*.css": "", "": "missing", "api/*": `"api/*" must start with / or *`, "/a?b": "without the query", "/a#b": "without the query",
	} {
		err := Check(pattern)
		if (want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), want) {
			t.Errorf("Check(%q) = %v, want %q", pattern, err, want)
		}
	}
}
