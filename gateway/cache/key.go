package cache

import (
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"
)

// requestURL returns the normalised absolute URL of r: lower-case scheme and
// host, default port dropped, the path as sent, and the query as the site's
// key options shape it. This string is both the default cache key (scoped by
// site) and what purge by URL and prefix match.
func requestURL(r *http.Request, site *SitePolicy) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	p := r.URL.EscapedPath()
	if p == "" {
		p = "/"
	}
	b := make([]byte, 0, len(scheme)+3+len(r.Host)+len(p)+1+len(r.URL.RawQuery))
	b = append(append(b, scheme...), "://"...)
	b = appendNormHost(b, r.Host, scheme)
	b = append(b, p...)
	return string(appendQuery(b, r.URL.RawQuery, site))
}

func normHost(host, scheme string) string {
	return string(appendNormHost(nil, host, scheme))
}

// appendNormHost appends host lower-cased and without the scheme's default
// port. An ASCII host (all but odd ones) is lowered as it is copied, which
// lets the fast path build a key in one allocation.
func appendNormHost[T ~string | ~[]byte](b []byte, host T, scheme string) []byte {
	start := len(b)
	if ascii(host) {
		for i := 0; i < len(host); i++ {
			ch := host[i]
			if 'A' <= ch && ch <= 'Z' {
				ch += 'a' - 'A'
			}
			b = append(b, ch)
		}
	} else {
		b = append(b, strings.ToLower(string(host))...)
	}
	port := ":443"
	if scheme == "http" {
		port = ":80"
	}
	if len(b)-start >= len(port) && string(b[len(b)-len(port):]) == port {
		b = b[:len(b)-len(port)]
	}
	return b
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
// shape it (normQuery), nothing when that leaves it empty.
func appendQuery[T ~string | ~[]byte](b []byte, raw T, site *SitePolicy) []byte {
	if len(raw) == 0 {
		return b
	}
	if !site.rewritesQuery() {
		return append(append(b, '?'), raw...)
	}
	if q := normQuery(string(raw), site); q != "" {
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
