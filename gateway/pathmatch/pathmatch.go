// Package pathmatch matches request paths against a site's path patterns,
// the ones its cache rules and origin routes are written with: "*"
// matches any run of characters, "/" included, and every other character
// matches itself ("/static/*", "*.css", "/robots.txt"). Patterns are
// matched against the path as sent: percent-encoded, case-sensitive,
// without the query.
package pathmatch

import (
	"errors"
	"fmt"
	"strings"
)

// Check reports why pattern cannot match a request path, or nil.
func Check(pattern string) error {
	switch {
	case pattern == "":
		return errors.New("missing; expected a path pattern such as /static/*, *.css or /robots.txt")
	case pattern[0] != '/' && pattern[0] != '*':
		return fmt.Errorf("%q must start with / or * (it is matched against the request path)", pattern)
	case strings.ContainsAny(pattern, "?#"):
		return fmt.Errorf("%q holds ? or #; a pattern matches the path alone, without the query", pattern)
	}
	return nil
}

// MatchesAll reports whether pattern matches every request path: "*",
// "/*" and the like.
func MatchesAll(pattern string) bool {
	return pattern != "/" && strings.Trim(strings.TrimPrefix(pattern, "/"), "*") == ""
}

// Match reports whether path matches pattern. It backtracks only to the
// last star, so it runs in O(len(pattern)·len(path)) at worst. (Generic
// so that the cache's fast path matches its request bytes without a
// copy.)
func Match[P string | []byte](pattern string, path P) bool {
	p, s := 0, 0
	star, mark := -1, 0
	for s < len(path) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, s
			p++
		case p < len(pattern) && pattern[p] == path[s]:
			p++
			s++
		case star >= 0:
			p = star + 1
			mark++
			s = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// Captures returns what each "*" of pattern matched in path, in order,
// and whether path matches: each star but the last takes as little as it
// can (so "/a/*/*" splits "/a/b/c/d" into "b" and "c/d"). Placing each
// literal piece at its first occurrence leaves the most room for the
// pieces after it, so this finds a split whenever there is one, without
// backtracking: linear in len(path) per piece. For rewriting a matched
// path (a redirect's "$1").
func Captures(pattern, path string) ([]string, bool) {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return []string{}, pattern == path
	}
	first, last := parts[0], parts[len(parts)-1]
	if len(path) < len(first)+len(last) || !strings.HasPrefix(path, first) || !strings.HasSuffix(path, last) {
		return nil, false
	}
	rest := path[len(first) : len(path)-len(last)]
	caps := make([]string, 0, len(parts)-1)
	for _, lit := range parts[1 : len(parts)-1] {
		i := strings.Index(rest, lit)
		if i < 0 {
			return nil, false
		}
		caps = append(caps, rest[:i])
		rest = rest[i+len(lit):]
	}
	return append(caps, rest), true
}

// CheckTarget reports why target cannot be a rewrite of the paths pattern
// matches (a redirect's): it must be a path or an http(s) URL, hold no
// white space, and use $1 to $9 only for stars pattern has.
func CheckTarget(pattern, target string) error {
	switch {
	case !strings.HasPrefix(target, "/") && !strings.HasPrefix(target, "https://") && !strings.HasPrefix(target, "http://"):
		return fmt.Errorf("%q must be a path (/new/$1) or an http(s) URL", target)
	case strings.ContainsAny(target, " \t\r\n"):
		return fmt.Errorf("%q holds white space; percent-encode it", target)
	}
	stars := strings.Count(pattern, "*")
	for i := 0; i+1 < len(target); i++ {
		if target[i] == '$' && target[i+1] >= '1' && target[i+1] <= '9' && int(target[i+1]-'0') > stars {
			return fmt.Errorf("%q uses $%c, but path %q has %d stars", target, target[i+1], pattern, stars)
		}
	}
	return nil
}

// Expand writes target with $1 to $9 replaced by what pattern's stars
// matched in path (see Captures); path must match pattern.
func Expand(pattern, target, path string) string {
	caps, _ := Captures(pattern, path)
	var b strings.Builder
	for i := 0; i < len(target); i++ {
		if target[i] == '$' && i+1 < len(target) && target[i+1] >= '1' && target[i+1] <= '9' {
			if n := int(target[i+1] - '1'); n < len(caps) {
				b.WriteString(caps[n])
			}
			i++
			continue
		}
		b.WriteByte(target[i])
	}
	return b.String()
}
