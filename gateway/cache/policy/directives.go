// Package policy holds the HTTP caching rules of RFC 9111 (and RFC 5861, RFC 9213)
// as a shared cache applies them: parsing Cache-Control style directives,
// deciding whether a response may be stored, computing its freshness lifetime
// and current age, and normalising Vary secondary keys.
//
// It owns pure functions of headers and clocks only. It must not do I/O, hold
// state, or know about storage tiers; the cache package wires these rules into
// the request path.
package policy

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Directives is a parsed Cache-Control (or CDN-Cache-Control, Surrogate-Control)
// field. Keys are lower-cased directive names; a directive without an argument
// maps to "". Unknown directives are kept but never change behaviour.
type Directives map[string]string

// ParseDirectives parses every line of a Cache-Control style field.
// Malformed parts are skipped rather than failing the whole field, because a
// cache must keep working with sloppy origins and clients.
func ParseDirectives(lines []string) Directives {
	if len(lines) == 0 {
		return nil
	}
	d := Directives{}
	for _, line := range lines {
		for len(line) > 0 {
			var part string
			part, line = nextPart(line)
			part = strings.TrimSpace(part)
			if part == "" {
				continue
			}
			name, val, _ := strings.Cut(part, "=")
			name = strings.ToLower(strings.TrimSpace(name))
			val = strings.TrimSpace(val)
			if len(val) >= 2 && val[0] == '"' && val[len(val)-1] == '"' {
				val = val[1 : len(val)-1]
			}
			if name == "" {
				continue
			}
			if _, dup := d[name]; !dup {
				d[name] = val
			}
		}
	}
	return d
}

// nextPart splits at the first comma that is not inside a quoted string.
func nextPart(s string) (part, rest string) {
	inQuote := false
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			inQuote = !inQuote
		case ',':
			if !inQuote {
				return s[:i], s[i+1:]
			}
		}
	}
	return s, ""
}

// Has reports whether the directive is present.
func (d Directives) Has(name string) bool {
	_, ok := d[name]
	return ok
}

// Seconds returns a delta-seconds argument. ok is false when the directive is
// absent or its argument is not a non-negative integer (RFC 9111 1.2.2: an
// invalid value is treated as if absent for freshness but the caller decides).
// Values beyond 2^31 are clamped as the RFC recommends.
func (d Directives) Seconds(name string) (time.Duration, bool) {
	v, ok := d[name]
	if !ok || v == "" {
		return 0, false
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, false
	}
	if n > 1<<31 {
		n = 1 << 31
	}
	return time.Duration(n) * time.Second, true
}

// ResponseDirectives returns the directives a shared CDN cache obeys for a
// response and which field they came from. Per RFC 9213, CDN-Cache-Control
// takes precedence over everything; Surrogate-Control (Edge Architecture 1.0)
// comes next; otherwise Cache-Control applies. When a targeted field is used,
// Cache-Control and Expires are ignored for this cache's own storage decision.
func ResponseDirectives(h http.Header) (d Directives, source string) {
	// Canonical keys indexed directly: Values would canonicalise
	// "CDN-Cache-Control" into a new string on every call (every hit).
	if v := h["Cdn-Cache-Control"]; len(v) > 0 {
		return ParseDirectives(v), "CDN-Cache-Control"
	}
	if v := h["Surrogate-Control"]; len(v) > 0 {
		return ParseDirectives(v), "Surrogate-Control"
	}
	return ParseDirectives(h["Cache-Control"]), "Cache-Control"
}

// RequestDirectives parses a request's Cache-Control; when the request has no
// Cache-Control, "Pragma: no-cache" counts as no-cache (RFC 9111 5.4).
func RequestDirectives(h http.Header) Directives {
	if v := h.Values("Cache-Control"); len(v) > 0 {
		return ParseDirectives(v)
	}
	for _, p := range h.Values("Pragma") {
		for _, tok := range strings.Split(p, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "no-cache") {
				return Directives{"no-cache": ""}
			}
		}
	}
	return nil
}
