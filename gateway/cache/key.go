package cache

import (
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
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
	host := normHost(r.Host, scheme)
	var b strings.Builder
	b.Grow(len(scheme) + 3 + len(host) + len(r.URL.RawPath) + len(r.URL.Path) + len(r.URL.RawQuery) + 1)
	b.WriteString(scheme)
	b.WriteString("://")
	b.WriteString(host)
	p := r.URL.EscapedPath()
	if p == "" {
		p = "/"
	}
	b.WriteString(p)
	if q := normQuery(r.URL.RawQuery, site); q != "" {
		b.WriteByte('?')
		b.WriteString(q)
	}
	return b.String()
}

func normHost(host, scheme string) string {
	host = strings.ToLower(host)
	if scheme == "http" {
		host = strings.TrimSuffix(host, ":80")
	} else {
		host = strings.TrimSuffix(host, ":443")
	}
	return host
}

// normQuery applies IgnoreQuery and SortQuery. Parameters keep their raw
// encoding; only their order and presence change.
func normQuery(raw string, site *SitePolicy) string {
	if raw == "" || (len(site.IgnoreQuery) == 0 && !site.SortQuery) {
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
		return site.SiteID + "\x00k\x00" + k
	}
	return site.SiteID + "\x00" + u
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
