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
	randomCases(1, func(pattern, path string) {
		parts := strings.Split(pattern, "*")
		for i := range parts {
			parts[i] = regexp.QuoteMeta(parts[i])
		}
		re := regexp.MustCompile("^" + strings.Join(parts, ".*") + "$")
		if got, want := Match(pattern, path), re.MatchString(path); got != want {
			t.Fatalf("Match(%q, %q) = %v, the pattern's regexp says %v", pattern, path, got, want)
		}
	})
}

// randomCases calls check with 20,000 random patterns and paths over a
// small alphabet, where backtracking cases are common.
func randomCases(seed uint64, check func(pattern, path string)) {
	rng := rand.New(rand.NewPCG(seed, seed+1))
	word := func(alphabet string, n int) string {
		var b strings.Builder
		for range rng.IntN(n + 1) {
			b.WriteByte(alphabet[rng.IntN(len(alphabet))])
		}
		return b.String()
	}
	for range 20000 {
		check("/"+word("ab*/", 6), "/"+word("ab/", 8))
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

func TestCaptures(t *testing.T) {
	for _, c := range []struct {
		pattern, path string
		want          []string
		ok            bool
	}{
		{"/old/*", "/old/a/b.html", []string{"a/b.html"}, true},
		{"/old/*", "/new/a", nil, false},
		{"/a/*/*", "/a/b/c/d", []string{"b", "c/d"}, true},
		{"*.php", "/x/index.php", []string{"/x/index"}, true},
		{"/exact", "/exact", []string{}, true},
		{"/blog/*/comments", "/blog/2026/11/post/comments", []string{"2026/11/post"}, true},
	} {
		got, ok := Captures(c.pattern, c.path)
		if ok != c.ok || strings.Join(got, "|") != strings.Join(c.want, "|") {
			t.Errorf("Captures(%q, %q) = %q, %v; want %q, %v", c.pattern, c.path, got, ok, c.want, c.ok)
		}
	}
	// Captures agrees with Match on whether a path matches.
	randomCases(3, func(pattern, path string) {
		caps, ok := Captures(pattern, path)
		if ok != Match(pattern, path) {
			t.Fatalf("Captures(%q, %q) matched %v, Match says %v", pattern, path, ok, !ok)
		}
		if ok {
			// Putting the captures back in the stars gives the path.
			rebuilt := pattern
			for _, c := range caps {
				rebuilt = strings.Replace(rebuilt, "*", "\x00"+c, 1)
			}
			if strings.ReplaceAll(rebuilt, "\x00", "") != path {
				t.Fatalf("Captures(%q, %q) = %q, which does not rebuild the path", pattern, path, caps)
			}
		}
	})
}

func TestCheckTargetAndExpand(t *testing.T) {
	for target, want := range map[string]string{
		"/new/$1": "", "https://example.org/$1?x=1": "", "new/$1": "must be a path", "/a b": "white space", "/new/$2": `uses $2, but path "/old/*" has 1 stars`,
	} {
		err := CheckTarget("/old/*", target)
		if (want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), want) {
			t.Errorf("CheckTarget(/old/*, %q) = %v, want %q", target, err, want)
		}
	}
	if got := Expand("/blog/*/*", "/posts/$2/$1/$$", "/blog/2026/hello"); got != "/posts/hello/2026/$$" {
		t.Errorf("Expand = %q", got)
	}
}
