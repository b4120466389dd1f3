package cache

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/meridian-edge/meridian/gateway/cache/tier"
)

// SelectorKind says what a purge Selector matches.
type SelectorKind int

// Purge selector kinds.
const (
	// ByURL matches one absolute URL (every Vary variant of it).
	ByURL SelectorKind = iota + 1
	// ByPrefix matches every URL starting with Value (an absolute URL prefix,
	// such as "https://www.example.com/img/").
	ByPrefix
	// BySurrogateKey matches responses whose Surrogate-Key (space-separated)
	// or Cache-Tag (comma-separated) header lists Value.
	BySurrogateKey
	// BySite matches everything stored for the site.
	BySite
)

// ParseSelectorKind reads a kind as an admin API or CLI spells it: "url",
// "prefix", "surrogate-key" (or "tag") and "site".
func ParseSelectorKind(s string) (SelectorKind, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "url":
		return ByURL, nil
	case "prefix":
		return ByPrefix, nil
	case "surrogate-key", "tag":
		return BySurrogateKey, nil
	case "site":
		return BySite, nil
	}
	return 0, fmt.Errorf("purge: unknown selector kind %q; use url, prefix, surrogate-key or site", s)
}

func (k SelectorKind) String() string {
	switch k {
	case ByURL:
		return "url"
	case ByPrefix:
		return "prefix"
	case BySurrogateKey:
		return "surrogate-key"
	case BySite:
		return "site"
	}
	return fmt.Sprintf("SelectorKind(%d)", int(k))
}

// Selector chooses what Purge removes. Site is always required.
type Selector struct {
	Site  string
	Kind  SelectorKind
	Value string // the URL, prefix or surrogate key; empty for BySite
	// Soft marks matching responses stale instead of removing them: they are
	// revalidated before use and can still answer when the origin fails
	// (stale-if-error).
	Soft bool
}

// Validate reports a selector that cannot be applied, in words an admin API
// can return to its caller.
func (s Selector) Validate() error {
	if s.Site == "" {
		return errors.New("purge: site is required")
	}
	switch s.Kind {
	case ByURL, ByPrefix:
		u, err := url.Parse(s.Value)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("purge: %s %q must be an absolute http(s) URL such as https://www.example.com/path", s.Kind, s.Value)
		}
	case BySurrogateKey:
		if strings.TrimSpace(s.Value) == "" || strings.ContainsAny(s.Value, " ,") {
			return fmt.Errorf("purge: surrogate key %q must be one non-empty key without spaces or commas", s.Value)
		}
	case BySite:
		if s.Value != "" {
			return fmt.Errorf("purge: a whole-site purge takes no value (got %q)", s.Value)
		}
	default:
		return fmt.Errorf("purge: unknown selector kind %d; use ByURL, ByPrefix, BySurrogateKey or BySite", int(s.Kind))
	}
	return nil
}

// Normalize returns the selector with its URL or prefix in the form the
// cache stores (requestURL: scheme and host lower-cased, the port, a
// trailing dot and the fragment dropped, percent-encoding normalised), so
// that a purge of any spelling of a URL matches the stored copy, and a
// purge record replicated to other PoPs matches what they stored.
func (s Selector) Normalize() Selector {
	if s.Kind == ByURL || s.Kind == ByPrefix {
		s.Value = normalisePurgeURL(s.Value)
	}
	return s
}

// normalisePurgeURL applies the same normalisation as cache keys
// (requestURL); the query keeps its parameters and their order, as a key
// does for a site without IgnoreQuery and SortQuery.
func normalisePurgeURL(v string) string {
	u, err := url.Parse(v)
	if err != nil {
		return v
	}
	scheme := strings.ToLower(u.Scheme)
	p := u.EscapedPath()
	if p == "" {
		p = "/"
	}
	b := make([]byte, 0, len(v))
	b = append(append(b, scheme...), "://"...)
	b = appendNormHost(b, u.Host)
	b = appendNormEscapes(b, p)
	if u.RawQuery != "" {
		b = appendNormEscapes(append(b, '?'), u.RawQuery)
	}
	return string(b)
}

// Purge removes (or, with Soft, marks stale) every stored response matching
// sel in every tier that can enumerate its objects, and returns how many
// responses it affected. Fills in flight when Purge is called do not store
// their result. A Vary index matching a hard URL, prefix or site purge is
// dropped too.
func (c *Cache) Purge(ctx context.Context, sel Selector) (int, error) {
	if err := sel.Validate(); err != nil {
		return 0, err
	}
	sel = sel.Normalize()
	c.purges.purgeSite(sel.Site)
	n := 0
	for _, t := range c.purgeTiers() {
		sc, ok := t.(tier.Scanner)
		if !ok {
			continue
		}
		var hits []string
		var metas []*tier.Meta
		err := sc.Scan(ctx, func(key string, m *tier.Meta) bool {
			if matches(sel, m) {
				hits = append(hits, key)
				metas = append(metas, m)
			}
			return true
		})
		if err != nil {
			return n, fmt.Errorf("purge: scan tier %s: %w", t.Name(), err)
		}
		for i, key := range hits {
			m := metas[i]
			if sel.Soft {
				if m.Kind != tier.KindResponse || m.Invalidated {
					continue
				}
				m.Invalidated = true
				if err := updateMeta(ctx, t, key, m); err != nil && !errors.Is(err, tier.ErrNotFound) {
					return n, fmt.Errorf("purge: mark %q stale in tier %s: %w", m.URL, t.Name(), err)
				}
			} else if err := t.Delete(ctx, key); err != nil {
				return n, fmt.Errorf("purge: delete %q from tier %s: %w", m.URL, t.Name(), err)
			}
			if m.Kind == tier.KindResponse {
				n++
			}
		}
	}
	mode := "hard"
	if sel.Soft {
		mode = "soft"
	}
	c.metrics.purged.WithLabelValues(sel.Site, mode).Add(float64(n))
	// Debug: the PoP logs each purge once at INFO with its id and origin
	// ("purge requested", "replicated purge applied"), objects included.
	c.log.Debug("cache: purged", "site", sel.Site, "kind", sel.Kind.String(), "value", sel.Value, "soft", sel.Soft, "objects", n)
	return n, nil
}

func updateMeta(ctx context.Context, t tier.Tier, key string, m *tier.Meta) error {
	if mu, ok := t.(tier.MetaUpdater); ok {
		return mu.UpdateMeta(ctx, key, m)
	}
	return t.Delete(ctx, key) // cannot mark stale: removing is the safe side
}

func matches(sel Selector, m *tier.Meta) bool {
	if m.Site != sel.Site {
		return false
	}
	switch sel.Kind {
	case BySite:
		return true
	case ByURL:
		return m.URL == sel.Value
	case ByPrefix:
		return strings.HasPrefix(m.URL, sel.Value)
	case BySurrogateKey:
		if m.Kind != tier.KindResponse {
			return false
		}
		return hasTag(m.Header, sel.Value)
	}
	return false
}

// surrogateKeys lists a stored response's Surrogate-Key and Cache-Tag
// values; nil (no allocation) when it has none, the common case.
func surrogateKeys(h http.Header) []string {
	sk, ct := h["Surrogate-Key"], h["Cache-Tag"]
	if len(sk) == 0 && len(ct) == 0 {
		return nil
	}
	var keys []string
	for _, v := range sk {
		keys = append(keys, strings.Fields(v)...)
	}
	for _, v := range ct {
		for _, t := range strings.Split(v, ",") {
			if t = strings.TrimSpace(t); t != "" {
				keys = append(keys, t)
			}
		}
	}
	return keys
}

func hasTag(h http.Header, tag string) bool {
	for _, v := range h.Values("Surrogate-Key") {
		for _, t := range strings.Fields(v) {
			if t == tag {
				return true
			}
		}
	}
	for _, v := range h.Values("Cache-Tag") {
		for _, t := range strings.Split(v, ",") {
			if strings.TrimSpace(t) == tag {
				return true
			}
		}
	}
	return false
}

// purgeTiers returns the tiers a purge scans: the cache's storage, which for
// a composition scans, deletes and marks stale in every tier below it.
func (c *Cache) purgeTiers() []tier.Tier {
	return []tier.Tier{c.store.t}
}
