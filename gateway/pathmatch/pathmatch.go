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
