package policy

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// heuristicStatus lists the status codes that are heuristically cacheable
// (RFC 9110 15.1): a response with one of them may be stored without explicit
// freshness information.
var heuristicStatus = map[int]bool{
	200: true, 203: true, 204: true, 206: true, 300: true, 301: true, 308: true,
	404: true, 405: true, 410: true, 414: true, 501: true,
}

// MaxHeuristic caps heuristic freshness derived from Last-Modified.
const MaxHeuristic = 24 * time.Hour

// Reason says why a response is not storable, for logs and Cache-Status.
type Reason string

// Reasons a response is not stored.
const (
	Storable        Reason = ""
	NotGET          Reason = "method"
	BadStatus       Reason = "status"
	NoStore         Reason = "no-store"
	Private         Reason = "private"
	Authorization   Reason = "authorization"
	VaryStar        Reason = "vary-star"
	NoFreshness     Reason = "no-freshness"
	RequestNoStore  Reason = "request-no-store"
	PartialResponse Reason = "partial"
	SetCookie       Reason = "set-cookie"
)

// StorableResponse applies RFC 9111 section 3 for a shared cache: method,
// status, no-store (request or response), private, the Authorization rule of
// 3.5, Vary: * and the need for freshness information or a validator.
// ttlOverride > 0 (set by a site plugin) stands in for explicit freshness.
func StorableResponse(req *http.Request, status int, h http.Header, ttlOverride time.Duration) Reason {
	if req.Method != http.MethodGet {
		return NotGET
	}
	if status == http.StatusPartialContent || status == http.StatusNotModified {
		return PartialResponse
	}
	if status < 200 || status > 599 {
		return BadStatus
	}
	if RequestDirectives(req.Header).Has("no-store") {
		return RequestNoStore
	}
	d, src := ResponseDirectives(h)
	if d.Has("no-store") {
		return NoStore
	}
	// A targeted field (CDN-Cache-Control) replaces Cache-Control for our
	// own decisions, but "private" in Cache-Control is about who may see the
	// content, so it still forbids sharing unless the targeted field says
	// otherwise explicitly with public.
	cc := d
	if src != "Cache-Control" {
		cc = ParseDirectives(h.Values("Cache-Control"))
		if cc.Has("no-store") && !d.Has("public") && !d.Has("max-age") && !d.Has("s-maxage") {
			return NoStore
		}
	}
	if cc.Has("private") && !d.Has("public") {
		return Private
	}
	if HasVaryStar(h) {
		return VaryStar
	}
	// Like nginx and Varnish by default: a response that sets a cookie is
	// someone's session, unless the origin explicitly marks it shareable.
	if len(h.Values("Set-Cookie")) > 0 && !(d.Has("public") || d.Has("s-maxage") || src != "Cache-Control") {
		return SetCookie
	}
	if req.Header.Get("Authorization") != "" {
		if !(d.Has("public") || d.Has("s-maxage") || d.Has("must-revalidate")) {
			return Authorization
		}
	}
	explicit := ttlOverride > 0 || d.Has("max-age") || d.Has("s-maxage") || d.Has("public") ||
		(src == "Cache-Control" && h.Get("Expires") != "")
	if !explicit && !heuristicStatus[status] {
		return BadStatus
	}
	// Without freshness information and without a validator a stored copy
	// could never be used, so do not waste space on it.
	if !explicit && h.Get("Last-Modified") == "" && h.Get("ETag") == "" {
		return NoFreshness
	}
	return Storable
}

// DefaultTTLApplies reports whether a site's default TTL may give a
// response its freshness lifetime: the status is heuristically cacheable
// and the response states no freshness of its own (s-maxage, max-age, or
// Expires where Cache-Control governs) and does not ask for validation on
// every use (no-cache). It then stands in for the Last-Modified heuristic,
// as Varnish's default_ttl, nginx's proxy_cache_valid and a CDN's default
// TTL do; it never overrides what the origin said.
func DefaultTTLApplies(status int, h http.Header) bool {
	if !heuristicStatus[status] {
		return false
	}
	d, src := ResponseDirectives(h)
	if d.Has("s-maxage") || d.Has("max-age") || d.Has("no-cache") {
		return false
	}
	return src != "Cache-Control" || len(h.Values("Expires")) == 0
}

// StoreTTL is the freshness lifetime the cache records with a response it
// stores (0: the response's own): a plugin's TTL wins; otherwise
// siteDefault when DefaultTTLApplies.
func StoreTTL(status int, h http.Header, pluginTTL, siteDefault time.Duration) time.Duration {
	if pluginTTL > 0 {
		return pluginTTL
	}
	if siteDefault > 0 && DefaultTTLApplies(status, h) {
		return siteDefault
	}
	return 0
}

// HasVaryStar reports whether any Vary line contains "*" as a member.
func HasVaryStar(h http.Header) bool {
	for _, f := range VaryFields(h) {
		if f == "*" {
			return true
		}
	}
	return false
}

// Lifetime computes the freshness lifetime of a stored response for a shared
// cache (RFC 9111 4.2.1): s-maxage, then max-age, then Expires minus Date,
// then a heuristic (10% of Date minus Last-Modified, capped) for heuristically
// cacheable statuses. responseTime stands in for a missing Date.
func Lifetime(status int, h http.Header, responseTime time.Time, ttlOverride time.Duration) time.Duration {
	d, src := ResponseDirectives(h)
	return lifetime(status, h, d, src, DateOf(h, responseTime), ttlOverride)
}

func lifetime(status int, h http.Header, d Directives, src string, date time.Time, ttlOverride time.Duration) time.Duration {
	if ttlOverride > 0 {
		return ttlOverride
	}
	if v, ok := d.Seconds("s-maxage"); ok {
		return v
	}
	if v, ok := d.Seconds("max-age"); ok {
		return v
	}
	if d.Has("max-age") || d.Has("s-maxage") {
		return 0 // present but invalid: treat as stale (RFC 9111 4.2.1)
	}
	if src == "Cache-Control" {
		if ev := h.Values("Expires"); len(ev) > 0 {
			exp, err := http.ParseTime(ev[0])
			if err != nil || len(ev) > 1 {
				return 0 // invalid Expires means already expired
			}
			if l := exp.Sub(date); l > 0 {
				return l
			}
			return 0
		}
	}
	if heuristicStatus[status] && !d.Has("no-cache") {
		if lm, err := http.ParseTime(h.Get("Last-Modified")); err == nil && date.After(lm) {
			l := date.Sub(lm) / 10
			if l > MaxHeuristic {
				l = MaxHeuristic
			}
			return l
		}
	}
	return 0
}

// DateOf returns the response's Date, or fallback when it is missing or bad.
func DateOf(h http.Header, fallback time.Time) time.Time {
	if t, err := http.ParseTime(h.Get("Date")); err == nil {
		return t
	}
	return fallback
}

// AgeValue parses the Age field; a bad value counts as absent.
func AgeValue(h http.Header) time.Duration {
	v := strings.TrimSpace(h.Get("Age"))
	if v == "" {
		return 0
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0
	}
	if n > 1<<31 {
		n = 1 << 31
	}
	return time.Duration(n) * time.Second
}

// CurrentAge implements RFC 9111 4.2.3: the age a stored response has now,
// counting the Age it arrived with, the apparent age from its Date, the
// request/response delay and the time it has been resident here.
func CurrentAge(h http.Header, requestTime, responseTime, now time.Time) time.Duration {
	return currentAge(h, DateOf(h, responseTime), requestTime, responseTime, now)
}

func currentAge(h http.Header, date, requestTime, responseTime, now time.Time) time.Duration {
	apparent := responseTime.Sub(date)
	if apparent < 0 {
		apparent = 0
	}
	delay := responseTime.Sub(requestTime)
	if delay < 0 {
		delay = 0
	}
	corrected := AgeValue(h) + delay
	initial := apparent
	if corrected > initial {
		initial = corrected
	}
	resident := now.Sub(responseTime)
	if resident < 0 {
		resident = 0
	}
	return initial + resident
}

// Freshness is everything the cache needs to decide how to use a stored
// response for one request.
type Freshness struct {
	Age      time.Duration // current age
	Lifetime time.Duration // freshness lifetime
	// MustRevalidate: must-revalidate, proxy-revalidate or s-maxage present:
	// once stale, never served without successful validation.
	MustRevalidate bool
	// NoCache: the response requires validation before every use.
	NoCache bool
	// StaleWhileRevalidate and StaleIfError are the RFC 5861 windows from the
	// response (0 when absent).
	StaleWhileRevalidate time.Duration
	StaleIfError         time.Duration
}

// Fresh reports whether the response is fresh now.
func (f Freshness) Fresh() bool { return f.Age < f.Lifetime }

// Staleness is how long ago the response became stale (0 while fresh).
func (f Freshness) Staleness() time.Duration {
	if f.Age <= f.Lifetime {
		return 0
	}
	return f.Age - f.Lifetime
}

// TTL is the remaining freshness (negative when stale).
func (f Freshness) TTL() time.Duration { return f.Lifetime - f.Age }

// Evaluate computes Freshness for a stored response.
func Evaluate(status int, h http.Header, requestTime, responseTime, now time.Time, ttlOverride time.Duration) Freshness {
	d, src := ResponseDirectives(h)
	date := DateOf(h, responseTime)
	f := Freshness{
		Age:      currentAge(h, date, requestTime, responseTime, now),
		Lifetime: lifetime(status, h, d, src, date, ttlOverride),
		MustRevalidate: d.Has("must-revalidate") || d.Has("proxy-revalidate") ||
			(d.Has("s-maxage") && ttlOverride == 0),
		NoCache: d.Has("no-cache") && ttlOverride == 0,
	}
	f.StaleWhileRevalidate, _ = d.Seconds("stale-while-revalidate")
	f.StaleIfError, _ = d.Seconds("stale-if-error")
	return f
}

// Use is the decision for a stored response and a request.
type Use int

// Possible uses of a stored response.
const (
	// UseFresh: serve it as is.
	UseFresh Use = iota
	// UseStaleRevalidate: serve it stale and revalidate in the background.
	UseStaleRevalidate
	// Revalidate: validate with the origin before serving.
	Revalidate
)

// Decide applies the request's directives (RFC 9111 5.2.1) to a stored
// response's freshness. Unknown request directives are ignored, so they never
// bypass the cache.
func Decide(f Freshness, req Directives) Use {
	if f.NoCache || req.Has("no-cache") {
		return Revalidate
	}
	if ma, ok := req.Seconds("max-age"); ok && f.Age > ma {
		return Revalidate
	}
	if mf, ok := req.Seconds("min-fresh"); ok && f.TTL() < mf {
		return Revalidate
	}
	if f.Fresh() {
		return UseFresh
	}
	if f.MustRevalidate {
		return Revalidate
	}
	if req.Has("max-stale") {
		ms, ok := req.Seconds("max-stale")
		if !ok && req["max-stale"] == "" { // max-stale without value: any staleness
			return UseFresh
		}
		if ok && f.Staleness() <= ms {
			return UseFresh
		}
	}
	if f.StaleWhileRevalidate > 0 && f.Staleness() <= f.StaleWhileRevalidate {
		return UseStaleRevalidate
	}
	return Revalidate
}

// StaleIfErrorAllowed reports whether a stale response may be served because
// the origin failed (RFC 5861 section 4): the response's or the request's
// stale-if-error window covers the staleness and must-revalidate is absent.
// siteDefault is the site operator's window for responses that set none
// (nginx's proxy_cache_use_stale error, a CDN's "serve stale"): the origin's
// own stale-if-error, when present, wins, and must-revalidate still forbids.
func StaleIfErrorAllowed(f Freshness, req Directives, siteDefault time.Duration) bool {
	if f.MustRevalidate {
		return false
	}
	st := f.Staleness()
	if f.StaleIfError > 0 && st <= f.StaleIfError {
		return true
	}
	if f.StaleIfError == 0 && siteDefault > 0 && st <= siteDefault {
		return true
	}
	if v, ok := req.Seconds("stale-if-error"); ok && st <= v {
		return true
	}
	return false
}
