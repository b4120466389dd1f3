package cache

import (
	"fmt"
	"html"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-edge/meridian/gateway/headers"
	"github.com/meridian-edge/meridian/gateway/pathmatch"
)

// PathRule is a site's cache behaviour for the request paths matching
// Path: CloudFront's cache behaviours, Cloudflare's cache rules, an nginx
// location with its own proxy_cache_valid. A site's rules are tried in
// order; the first match applies, and a request no rule matches gets the
// site's defaults.
type PathRule struct {
	// Path is matched against the path the cache sees (after plugins'
	// rewrites) as package pathmatch does: "/static/*", "*.css",
	// "/robots.txt".
	Path string
	// Bypass sends matching requests to the origin without looking them
	// up or storing their answers (Cache-Status: fwd=bypass;
	// detail=path-rule).
	Bypass bool
	// TTL keeps matching responses the cache stores fresh this long,
	// whatever their Cache-Control or Expires says (a CDN's edge TTL that
	// overrides the origin). As a plugin's TTL it never makes a private,
	// no-store, cookie-setting or authorised response storable, and unlike
	// one it applies to successes and redirects only (200, 203, 204, 300,
	// 301, 308): an error keeps its own freshness, so a 404 or a 500 is
	// not kept for a rule's month. A plugin's TTL wins over it.
	TTL time.Duration
	// DefaultTTL replaces the site's DefaultTTL for matching responses.
	DefaultTTL time.Duration
	// Redirect answers matching requests with a redirect there instead
	// (Cloudflare's forwarding URLs, nginx's return): a path ("/new/$1")
	// or an absolute URL, where $1 to $9 are what Path's stars matched;
	// the request's query is kept unless the target has one. Nothing is
	// looked up, stored or fetched.
	Redirect string
	// RedirectStatus is the redirect's status: 301 (the default), 302,
	// 303, 307 or 308.
	RedirectStatus int
	// StaleIfError and StaleWhileRevalidate replace the site's for
	// matching responses that set none of their own; 0 keeps the site's.
	StaleIfError, StaleWhileRevalidate time.Duration
	// ResponseHeaders are changes on top of the site's ResponseHeaders
	// for matching paths; where both name a field, the rule's apply. A
	// Cache-Control set here is what browsers get (a browser TTL apart
	// from the cache's own).
	ResponseHeaders *headers.Policy

	// headers is the site's ResponseHeaders merged with the rule's, set
	// when the site's handler is made.
	headers *headers.Policy
}

// validate reports a rule the cache cannot apply; field prefixes the
// names in its message.
func (r PathRule) validate(field string) error {
	if err := pathmatch.Check(r.Path); err != nil {
		return fmt.Errorf("%s.Path: %w", field, err)
	}
	switch {
	case r.TTL < 0 || r.DefaultTTL < 0 || r.StaleIfError < 0 || r.StaleWhileRevalidate < 0:
		return fmt.Errorf("%s: TTL %v, DefaultTTL %v, StaleIfError %v and StaleWhileRevalidate %v must not be negative",
			field, r.TTL, r.DefaultTTL, r.StaleIfError, r.StaleWhileRevalidate)
	case r.Bypass && (r.TTL > 0 || r.DefaultTTL > 0 || r.StaleIfError > 0 || r.StaleWhileRevalidate > 0):
		return fmt.Errorf("%s (%s): Bypass stores nothing, so a TTL, DefaultTTL or stale window would never apply; drop one", field, r.Path)
	case r.Redirect != "":
		return r.validateRedirect(field)
	case r.RedirectStatus != 0:
		return fmt.Errorf("%s (%s): RedirectStatus without Redirect; set the target", field, r.Path)
	case !r.Bypass && r.TTL == 0 && r.DefaultTTL == 0 && r.StaleIfError == 0 && r.StaleWhileRevalidate == 0 && r.ResponseHeaders == nil:
		return fmt.Errorf("%s (%s) does nothing; set Bypass, TTL, DefaultTTL, a stale window, ResponseHeaders or Redirect", field, r.Path)
	}
	return nil
}

// validateRedirect checks a redirect rule: a target that is a path or an
// http(s) URL, $N only for the pattern's stars, a redirect status, and
// no cache setting beside it (a redirect stores nothing).
func (r PathRule) validateRedirect(field string) error {
	if err := pathmatch.CheckTarget(r.Path, r.Redirect); err != nil {
		return fmt.Errorf("%s (%s): Redirect %w", field, r.Path, err)
	}
	if r.Bypass || r.TTL > 0 || r.DefaultTTL > 0 || r.StaleIfError > 0 || r.StaleWhileRevalidate > 0 {
		return fmt.Errorf("%s (%s): a redirect is answered at the PoP and stores nothing; drop Bypass, the TTLs and the stale windows", field, r.Path)
	}
	switch r.RedirectStatus {
	case 0, http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		return nil
	}
	return fmt.Errorf("%s (%s): RedirectStatus %d is not a redirect; use 301, 302, 303, 307 or 308", field, r.Path, r.RedirectStatus)
}

// redirectTarget is where a redirect rule sends a request for u: the
// rule's target with $1..$9 replaced by what the path's stars matched,
// and u's query when the target has none.
func (r *PathRule) redirectTarget(u *url.URL) string {
	t := pathmatch.Expand(r.Path, r.Redirect, u.EscapedPath())
	if u.RawQuery != "" && !strings.Contains(r.Redirect, "?") {
		t += "?" + u.RawQuery
	}
	return t
}

// writeRedirect answers r with a redirect to target as written: not
// http.Redirect, which cleans a path target ("//" and dot segments would
// collapse, changing what the site configured).
func writeRedirect(w http.ResponseWriter, r *http.Request, target string, code int) {
	h := w.Header()
	h.Set("Location", target)
	h.Set("Cache-Status", "meridian; detail=path-redirect")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.WriteHeader(code)
		return
	}
	body := "<a href=\"" + html.EscapeString(target) + "\">" + http.StatusText(code) + "</a>.\n"
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	if r.Method == http.MethodGet {
		io.WriteString(w, body)
	}
}

// redirectStatus is the rule's status, 301 by default.
func (r *PathRule) redirectStatus() int {
	if r.RedirectStatus == 0 {
		return http.StatusMovedPermanently
	}
	return r.RedirectStatus
}

// ruleFor returns s's first rule whose pattern matches path, nil when
// none does. (A function, as methods cannot take type parameters: the
// fast path matches its request bytes without a copy.)
func ruleFor[P string | []byte](s *SitePolicy, path P) *PathRule {
	for i := range s.Rules {
		if pathmatch.Match(s.Rules[i].Path, path) {
			return &s.Rules[i]
		}
	}
	return nil
}

// responseHeaders is the header policy for a response to a request that
// matched rl (nil: no rule).
func (s *SitePolicy) responseHeaders(rl *PathRule) *headers.Policy {
	if rl != nil {
		return rl.headers
	}
	return s.ResponseHeaders
}

// staleWindows returns the stale-if-error and stale-while-revalidate
// windows for a response to a request that matched rl (nil: no rule): the
// rule's where it sets one, else the site's.
func (s *SitePolicy) staleWindows(rl *PathRule) (ifError, whileRevalidate time.Duration) {
	ifError, whileRevalidate = s.StaleIfError, s.StaleWhileRevalidate
	if rl != nil {
		if rl.StaleIfError > 0 {
			ifError = rl.StaleIfError
		}
		if rl.StaleWhileRevalidate > 0 {
			whileRevalidate = rl.StaleWhileRevalidate
		}
	}
	return ifError, whileRevalidate
}

// staleIfError is the stale-if-error window for a request to path, for
// the origin's failures (rare enough to match the rules again).
func (s *SitePolicy) staleIfError(path string) time.Duration {
	var rl *PathRule
	if len(s.Rules) > 0 {
		rl = ruleFor(s, path)
	}
	d, _ := s.staleWindows(rl)
	return d
}

// compileRules gives s a copy of its rules, each with the site's response
// header changes merged with its own, so that the caller's slice is left
// as it was.
func (s *SitePolicy) compileRules() {
	s.Rules = slices.Clone(s.Rules)
	for i := range s.Rules {
		s.Rules[i].headers = headers.Merge(s.ResponseHeaders, s.Rules[i].ResponseHeaders)
	}
}

// ttls returns the TTL that overrides a response's own freshness (0:
// none) and the default TTL for one that states none, for a response of
// status to r: a plugin's TTL (WithTTL) wins over the path rule's, which
// applies to successes and redirects only; the rule's default replaces
// the site's.
func (s *SitePolicy) ttls(r *http.Request, status int) (override, def time.Duration) {
	override, def = ttlFrom(r.Context()), s.DefaultTTL
	if len(s.Rules) == 0 {
		return override, def
	}
	if rl := ruleFor(s, r.URL.EscapedPath()); rl != nil {
		if override == 0 && ruleTTLStatus(status) {
			override = rl.TTL
		}
		if rl.DefaultTTL > 0 {
			def = rl.DefaultTTL
		}
	}
	return override, def
}

// ruleTTLStatus reports whether a rule's TTL applies to a response of
// status: the successes and permanent answers a cache may keep without
// being told (RFC 9110 15.1), not the errors among them.
func ruleTTLStatus(status int) bool {
	switch status {
	case http.StatusOK, http.StatusNonAuthoritativeInfo, http.StatusNoContent,
		http.StatusMultipleChoices, http.StatusMovedPermanently, http.StatusPermanentRedirect:
		return true
	}
	return false
}
