package gateway

import (
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/meridian-edge/meridian/gateway/cache"
	"github.com/meridian-edge/meridian/gateway/origin"
)

// Site is one site as a PoP serves it.
type Site struct {
	// Name identifies the site in metrics, logs and the admin API.
	Name string
	// Hosts are lower-case host names without port; "*.example.com" matches
	// one label under example.com.
	Hosts []string
	// Default makes the site answer any Host no other site claims.
	Default bool
	// Origin sends the site's misses to its origin servers.
	Origin *origin.Pool
	// Cache holds the site's cache options (cache keys, object size limits).
	// With Cache.IgnoreClientDirectives, the PoP removes the client's
	// Cache-Control and Pragma before the site's plugins and cache, on
	// every path (only-if-cached kept), as CDNs and nginx's proxy_cache
	// do: a client cannot make the cache revalidate or refetch, and a
	// plugin may still set directives.
	Cache cache.SitePolicy
}

// router finds a request's site by Host. It is immutable once built; a
// reload builds a new one and swaps it in.
type router struct {
	exact    map[string]*siteEntry
	wildcard map[string]*siteEntry // keyed by the suffix after "*."
	fallback *siteEntry
	all      []*siteEntry
}

type siteEntry struct {
	Site
	handler http.Handler // the whole per-site chain: plugins, cache
	cache   http.Handler // the cache alone, for the fast hit path
	// hooked is cache with the site's plugin hooks, for the fast hit path
	// while the site runs plugins; nil without PluginHooks.
	hooked http.Handler
}

func newRouter(sites []*siteEntry) (*router, error) {
	rt := &router{exact: map[string]*siteEntry{}, wildcard: map[string]*siteEntry{}, all: sites}
	for _, s := range sites {
		for _, h := range s.Hosts {
			h = normalizeHost(h)
			target := rt.exact
			if rest, ok := strings.CutPrefix(h, "*."); ok {
				target, h = rt.wildcard, rest
			}
			if other, dup := target[h]; dup {
				return nil, fmt.Errorf("gateway: host %s is claimed by sites %s and %s", h, other.Name, s.Name)
			}
			target[h] = s
		}
		if s.Default {
			if rt.fallback != nil {
				return nil, fmt.Errorf("gateway: sites %s and %s are both the default site", rt.fallback.Name, s.Name)
			}
			rt.fallback = s
		}
	}
	return rt, nil
}

// normalizeHost lower-cases, drops the port and a trailing dot.
func normalizeHost(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	} else if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		h = h[1 : len(h)-1]
	}
	return strings.ToLower(strings.TrimSuffix(h, "."))
}

func (rt *router) lookup(host string) *siteEntry {
	h := normalizeHost(host)
	if s, ok := rt.exact[h]; ok {
		return s
	}
	if _, rest, ok := strings.Cut(h, "."); ok {
		if s, ok := rt.wildcard[rest]; ok {
			return s
		}
	}
	return rt.fallback
}
