package cache

import (
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"
)

// requestURL returns the normalised absolute URL of r (RFC 3986 6.2.2):
// lower-case scheme and host, the host without its port and a trailing
// dot, percent-encoding normalised (see appendNormEscapes) in the path and
// query, no fragment, and the query as the site's key options shape it.
// This string is both the default cache key (scoped by site) and what purge
// by URL and prefix match, so equivalent spellings of a URL share one entry
// and a purge of any of them removes it.
//
// The port is dropped because a site is chosen by host alone (gateway's
// router ignores the port): the same site's object under one Host with and
// without a port is one object. Dot segments ("/./x") and empty ones
// ("//x") are kept: whether an origin treats them as the plain path is its
// own choice (many routers do not), so merging them could serve one URL's
// response for another.
func requestURL(r *http.Request, site *SitePolicy) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	// A fragment sent in the request-target is gone (stripFragment).
	p, q := r.URL.EscapedPath(), r.URL.RawQuery
	if p == "" {
		p = "/"
	}
	b := make([]byte, 0, len(scheme)+3+len(r.Host)+len(p)+1+len(q))
	b = append(append(b, scheme...), "://"...)
	b = appendNormHost(b, r.Host)
	b = appendNormEscapes(b, p)
	return string(appendQuery(b, q, site))
}

func normHost(host string) string {
	return string(appendNormHost(nil, host))
}

// appendNormHost appends host lower-cased, without its port and without a
// trailing dot (the DNS root: "example.com." names example.com). An ASCII
// host (all but odd ones) is lowered as it is copied, which lets the fast
// path build a key in one allocation.
func appendNormHost[T ~string | ~[]byte](b []byte, host T) []byte {
	n := len(host)
	if n > 0 && host[0] == '[' {
		// An IPv6 literal: the port, if any, follows the ']'.
		for i := 0; i < n; i++ {
			if host[i] == ']' {
				n = i + 1
				break
			}
		}
	} else {
		for i := n - 1; i >= 0; i-- {
			if host[i] == ':' {
				n = i
				break
			}
		}
		for n > 0 && host[n-1] == '.' {
			n--
		}
	}
	if ascii(host[:n]) {
		for i := 0; i < n; i++ {
			ch := host[i]
			if 'A' <= ch && ch <= 'Z' {
				ch += 'a' - 'A'
			}
			b = append(b, ch)
		}
		return b
	}
	return append(b, strings.ToLower(string(host[:n]))...)
}

// appendNormEscapes appends s with its percent-encoding normalised as RFC
// 3986 6.2.2.1 and 6.2.2.2 say: an escaped unreserved character (ALPHA,
// DIGIT, '-', '.', '_', '~') is decoded, any other escape keeps its
// encoding with upper-case hex digits. So "%7e", "%7E" and "~" are one,
// and "%2f" is "%2F" but never "/" (an escaped slash is significant to
// origins). A '%' not followed by two hex digits is copied as it is.
func appendNormEscapes[T ~string | ~[]byte](b []byte, s T) []byte {
	i := 0
	for i < len(s) && s[i] != '%' {
		i++
	}
	b = append(b, s[:i]...) // the usual case: no escapes, one copy
	for ; i < len(s); i++ {
		c := s[i]
		if c != '%' || i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
			b = append(b, c)
			continue
		}
		if v := unhex(s[i+1])<<4 | unhex(s[i+2]); unreserved(v) {
			b = append(b, v)
		} else {
			b = append(b, '%', upperHex(s[i+1]), upperHex(s[i+2]))
		}
		i += 2
	}
	return b
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

func upperHex(c byte) byte {
	if 'a' <= c && c <= 'f' {
		return c - ('a' - 'A')
	}
	return c
}

// unreserved: RFC 3986 2.3.
func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

func ascii[T ~string | ~[]byte](s T) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// appendQuery appends '?' and the raw query as the site's key options
// shape it (normQuery), its percent-encoding normalised, nothing when that
// leaves it empty.
func appendQuery[T ~string | ~[]byte](b []byte, raw T, site *SitePolicy) []byte {
	if len(raw) == 0 {
		return b
	}
	if !site.rewritesQuery() {
		return appendNormEscapes(append(b, '?'), raw)
	}
	// Normalised before sorting, so that equivalent spellings sort alike.
	if q := normQuery(string(appendNormEscapes(nil, raw)), site); q != "" {
		b = append(append(b, '?'), q...)
	}
	return b
}

// rewritesQuery reports whether the site's key options change queries.
func (s *SitePolicy) rewritesQuery() bool { return len(s.IgnoreQuery) > 0 || s.SortQuery }

// normQuery applies IgnoreQuery and SortQuery. Parameters keep their raw
// encoding; only their order and presence change.
func normQuery(raw string, site *SitePolicy) string {
	if raw == "" || !site.rewritesQuery() {
		return raw
	}
	parts := strings.Split(raw, "&")
	out := parts[:0]
	for _, p := range parts {
		if p == "" {
			continue
		}
		if len(site.IgnoreQuery) > 0 {
			name, _, _ := strings.Cut(p, "=")
			if n, err := url.QueryUnescape(name); err == nil {
				name = n
			}
			if slices.Contains(site.IgnoreQuery, name) {
				continue
			}
		}
		out = append(out, p)
	}
	if site.SortQuery {
		sort.SliceStable(out, func(i, j int) bool {
			a, _, _ := strings.Cut(out[i], "=")
			b, _, _ := strings.Cut(out[j], "=")
			return a < b
		})
	}
	return strings.Join(out, "&")
}

// primaryKey returns the storage key for r: the site ID, then the plugin's
// key or the normalised URL.
func primaryKey(r *http.Request, site *SitePolicy, u string) string {
	if k, ok := r.Context().Value(keyOverride).(string); ok && k != "" {
		return site.SiteID + overrideSep + k
	}
	return site.SiteID + "\x00" + u
}

// overrideSep joins the site ID and a key set with WithKey in a primary key
// (the fast path builds the same keys: appendOverrideKey).
const overrideSep = "\x00k\x00"

// appendOverrideKey appends primaryKey's key for a key k set with WithKey.
func appendOverrideKey(b []byte, siteID, k string) []byte {
	return append(append(append(b, siteID...), overrideSep...), k...)
}

// variantKey is where the response for one Vary secondary key lives.
func variantKey(primary string, gen uint64, secondary string) string {
	var b strings.Builder
	b.WriteString(primary)
	b.WriteString("\x00v")
	b.WriteString(strconvU(gen))
	b.WriteByte(0)
	b.WriteString(secondary)
	return b.String()
}

func strconvU(v uint64) string {
	var buf [20]byte
	i := len(buf)
	for {
		i--
		buf[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			break
		}
	}
	return string(buf[i:])
}

// stripFragment returns r without the fragment a client sent in its
// request-target ("GET /a#frag"), which RFC 9112 3.2 does not allow and
// net/url leaves in the path or query of a request: it is no part of the
// resource, so neither the cache key nor the request forwarded to the
// origin may carry it. r itself when it has none (the usual case; an
// escaped "%23" is a character of the path, not a fragment).
func stripFragment(r *http.Request) *http.Request {
	i := strings.IndexByte(r.RequestURI, '#')
	if i < 0 {
		return r
	}
	u, err := url.ParseRequestURI(r.RequestURI[:i])
	if err != nil {
		return r // net/http parsed the whole target; its prefix parses too
	}
	r2 := r.WithContext(r.Context())
	r2.URL = u
	r2.RequestURI = r.RequestURI[:i]
	return r2
}
