// Package cache is the PoP's shared HTTP cache (RFC 9111) in front of a
// site's origin: cache keys, lookup through the storage tiers, freshness and
// revalidation, request collapsing, streaming fills, stale-while-revalidate
// and stale-if-error (RFC 5861), Range and HEAD from stored responses, the
// Cache-Status header (RFC 9211), purge, and metrics.
//
// It owns the caching decisions and the flow between client, tiers and
// origin. It must not choose origin servers or apply origin timeouts (the
// origin RoundTripper does), rewrite forwarding headers (package proxy does),
// or know how a tier stores bytes (package tier and its implementations).
package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-edge/meridian/gateway/cache/failurelog"
	"github.com/meridian-edge/meridian/gateway/cache/l1"
	"github.com/meridian-edge/meridian/gateway/cache/tier"
	"github.com/meridian-edge/meridian/gateway/headers"
	"github.com/meridian-edge/meridian/middleware"
)

// Options configures a Cache. The zero value of every field has a default.
type Options struct {
	// L1Bytes is the memory budget of the L1 tier (BigCache; whole MiB).
	// Default 512 MiB.
	L1Bytes int64
	// L1MaxObject is the largest object (headers and body) L1 holds; larger
	// responses stream through without being stored in L1. Default 1 MiB.
	L1MaxObject int64
	// L1LargeBody is the size (headers and body) from which L1 keeps a body
	// outside BigCache, shared by hits without a copy; default 8 KiB,
	// negative keeps every body in BigCache. See package l1.
	L1LargeBody int64
	// L1LargeBytes is the part of L1Bytes for those bodies; default half of
	// L1Bytes when L1Bytes is at least 64 MiB, else none.
	L1LargeBytes int64
	// L1Preallocate reserves L1's BigCache queues at full size up front
	// instead of letting them double as they fill: less memory per object,
	// provided the process also applies GCPercent. See package l1.
	L1Preallocate bool
	// L1Admission is l1.AdmitTinyLFU (default) or l1.AdmitAlways.
	L1Admission string
	// Store, when set, replaces the built-in L1 tier as the cache's storage:
	// for example a gateway/cache/tiered composition of L1, L2 and L3. The
	// L1* options are then ignored, and Close does not close Store (its
	// creator owns it). Purge reaches every tier of it that implements
	// tier.Scanner.
	Store tier.Tier
	// Logger receives cache events; nil discards.
	Logger *slog.Logger
	// Registerer receives the cache's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// PoPID is the PoP's id, as in its config, beacons, logs and the DNS
	// server's metrics (e.g. "ap-northeast-1"): the pop label of the cache's
	// metrics, so dashboards can join them with the rest. Via names the PoP
	// "meridian-<PoPID>" (see ViaName). Empty: the metrics carry no pop
	// label and Via says "meridian".
	PoPID string
	// PurgeCheck, when set, is asked on every read whether a stored response
	// was purged after it was stored (by a purge replicated from another PoP
	// that this PoP's tiers may not have applied yet): purged responses are
	// never served, stale ones only revalidated or as stale-if-error. The
	// replicated purge log (internal/statesync) provides it.
	PurgeCheck func(site, url string, keys []string, storedAt time.Time) (purged, stale bool)
	// Now is the clock; default time.Now. Tests may shift it.
	Now func() time.Time
}

// Cache is one PoP's HTTP cache, shared by all its sites. Create it with New
// and stop it with Close.
type Cache struct {
	opts     Options
	log      *slog.Logger
	failures *failurelog.Log // store failures, rate-limited
	own      *l1.Tier        // the built-in L1, nil when Options.Store is set
	store    store
	flights  group
	fresh    freshMemo
	headers  headerMemo // serialised headers for the fast path
	encoders *encoders  // compressors for SitePolicy.Compress
	metrics  *metrics
	now      func() time.Time
	// realClock: now is time.Now (Options.Now unset), so a time the caller
	// just read can stand for it (nowOr).
	realClock bool

	// purges moves on every purge and invalidation; a fill that started
	// before one of its key does not store its result, so a purged object
	// can never come back from an in-flight fetch.
	purges purgeClock
	gen    atomic.Uint64 // Vary index generations

	ctx    context.Context // cancelled by Close: stops fills and revalidations
	cancel context.CancelFunc
	mu     sync.Mutex // orders goBackground's wg.Add before Close's Wait
	wg     sync.WaitGroup
	closed bool
}

// New creates a Cache with its L1 tier.
func New(opts Options) (*Cache, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	realClock := opts.Now == nil
	if realClock {
		opts.Now = time.Now
	}
	if opts.L1MaxObject < 0 {
		return nil, fmt.Errorf("cache: L1MaxObject %d must not be negative", opts.L1MaxObject)
	}
	c := &Cache{opts: opts, log: opts.Logger, now: opts.Now, realClock: realClock, encoders: newEncoders(),
		failures: failurelog.New(opts.Logger, failurelog.DefaultEvery, nil)}
	if opts.Store != nil {
		c.store = store{t: opts.Store}
	} else {
		t1, err := l1.New(l1.Options{Bytes: opts.L1Bytes, MaxObject: opts.L1MaxObject, LargeBody: opts.L1LargeBody,
			LargeBytes: opts.L1LargeBytes, Preallocate: opts.L1Preallocate, Admission: opts.L1Admission, Logger: opts.Logger})
		if err != nil {
			return nil, fmt.Errorf("cache: %w", err)
		}
		c.own = t1
		c.store = store{t: t1}
	}
	if c.opts.L1MaxObject == 0 {
		c.opts.L1MaxObject = 1 << 20
	}
	c.flights.m = map[string]*flight{}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	var err error
	c.metrics, err = newMetrics(opts.Registerer, opts.PoPID, &c.store)
	if err != nil {
		if c.own != nil {
			_ = c.own.Close()
		}
		return nil, err
	}
	c.gen.Store(uint64(c.now().UnixNano()))
	return c, nil
}

// ViaName is the pseudonym a PoP with id popID gives itself in Via
// ("1.1 meridian-<popID>"): "meridian" without an id.
func ViaName(popID string) string {
	if popID == "" {
		return "meridian"
	}
	return "meridian-" + popID
}

// Close stops background fills and revalidations, waits for them, and
// releases the tiers. Handlers must not be used afterwards.
func (c *Cache) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
	if c.own != nil {
		return c.own.Close()
	}
	return nil
}

// goBackground runs fn on a goroutine owned by the cache; false when closed.
func (c *Cache) goBackground(fn func(ctx context.Context)) bool {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return false
	}
	c.wg.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.wg.Done()
		defer func() {
			if p := recover(); p != nil && p != http.ErrAbortHandler {
				c.log.Error("cache: background task panicked", "panic", p)
			}
		}()
		fn(c.ctx)
	}()
	return true
}

// backgroundContext is the context of an origin fetch the cache makes for
// a request that does not wait for it (revalidateInBackground): the
// request's values, its ID included, without its cancellation (the fetch
// outlives the request) nor its record (middleware.Detach), so the fetch
// is not logged as the client's origin exchange (origin, origin_time),
// and cannot write to that record while the client's line is logged.
func backgroundContext(ctx context.Context) context.Context {
	return context.WithoutCancel(middleware.Detach(ctx))
}

// SitePolicy holds one site's cache options.
type SitePolicy struct {
	// SiteID identifies the site in keys, purges, metrics and error pages.
	SiteID string
	// IgnoreQuery lists query parameter names left out of the cache key
	// (for example utm_source).
	IgnoreQuery []string
	// SortQuery sorts query parameters by name in the key, so that ?a=1&b=2
	// and ?b=2&a=1 share one entry.
	SortQuery bool
	// MaxObject is the largest response this site stores in any tier;
	// larger ones stream through without being stored (counted too_large
	// in meridian_cache_stores_total). 0 means the storage's own limit: the
	// largest any of its tiers takes.
	MaxObject int64
	// MaxL1Object is the largest response body this site keeps in the
	// memory tier (L1): larger ones bypass it and are stored in the lower
	// tiers of a composition (Options.Store, such as gateway/cache/tiered
	// with L2 and L3), which a lookup then answers from. Applies to bodies
	// of unknown length too (they leave L1 once they outgrow it). When the
	// cache has L1 alone, nothing larger is stored. 0: the L1 tier's own
	// limit.
	MaxL1Object int64
	// Bypass turns caching off for the site: every request goes to the
	// origin through the proxy.
	Bypass bool
	// StaleIfError serves a stored copy up to this long past its freshness
	// when the origin fails (5xx, unreachable, timeout) and the response set
	// no stale-if-error of its own; must-revalidate still forbids it. 0:
	// only what the origin's and the client's stale-if-error allow.
	StaleIfError time.Duration
	// StaleWhileRevalidate serves a stored copy up to this long past its
	// freshness while it is revalidated in the background, when the
	// response set no stale-while-revalidate of its own (Varnish's grace,
	// nginx's proxy_cache_use_stale updating with
	// proxy_cache_background_update): a popular object going stale costs
	// its clients no wait for the origin. must-revalidate, no-cache and a
	// soft purge still forbid it. 0: only what the origin allows.
	StaleWhileRevalidate time.Duration
	// DefaultTTL is the freshness lifetime of a stored response that
	// states none of its own (no s-maxage, max-age or Expires, no no-cache;
	// see policy.DefaultTTLApplies), in place of the Last-Modified
	// heuristic: Varnish's default_ttl, a CDN's default TTL. Such a
	// response is then stored even without a validator. It never makes
	// private, no-store, Set-Cookie or Authorization responses storable. 0:
	// only the heuristic (RFC 9111 4.2.2).
	DefaultTTL time.Duration
	// Compress compresses a text-like response (HTML, CSS, JavaScript,
	// JSON, SVG, ...; see compressCandidate) the origin sent without a
	// Content-Encoding. A storable one is compressed once, when it is
	// fetched, in brotli, zstd or gzip (the first the client accepts), and
	// stored so: the origin keeps serving plain bytes (an S3 bucket, a
	// simple server) and clients get them compressed from every tier at no
	// per-hit cost. One the cache may not store is compressed for each
	// client as it streams through, in zstd, gzip or brotli. Such
	// responses gain Vary: Accept-Encoding and a weak ETag. no-transform
	// is respected.
	Compress bool
	// IgnoreClientDirectives has the fast path drop a client's
	// Cache-Control and Pragma and serve a fresh hit, as the gateway
	// removes them before the site's plugins and cache on net/http
	// (gateway.PoP reads this field too); only-if-cached still goes to the
	// server. False: the server applies them (RFC 9111 5.2.1), so the
	// fast path hands such requests on.
	IgnoreClientDirectives bool
	// Rules give paths of the site their own cache behaviour (PathRule),
	// first match first.
	Rules []PathRule
	// ErrorPage is the site's own HTML page for the answers the PoP makes
	// for it itself (proxy.Options.ErrorPage); nil: the PoP's plain text.
	ErrorPage []byte
	// ResponseHeaders are the site's header changes on what its clients
	// get from the cache and its origin, the PoP's pages about them
	// (502, 504) included, on both paths; the site's plugins run after
	// and see them. Nil: none.
	ResponseHeaders *headers.Policy
}

// Validate reports a site policy the cache cannot apply, naming the field.
// Call it when loading configuration; Handler assumes a valid policy.
func (s SitePolicy) Validate() error {
	switch {
	case s.SiteID == "":
		return errors.New("cache: site policy: SiteID is required")
	case strings.ContainsAny(s.SiteID, "\x00 "):
		return fmt.Errorf("cache: site policy: SiteID %q must not contain spaces or NUL", s.SiteID)
	case s.MaxObject < 0:
		return fmt.Errorf("cache: site %s: MaxObject %d must not be negative (0 means the storage's limit)", s.SiteID, s.MaxObject)
	case s.MaxL1Object < 0:
		return fmt.Errorf("cache: site %s: MaxL1Object %d must not be negative (0 means the memory tier's limit)", s.SiteID, s.MaxL1Object)
	case s.StaleIfError < 0:
		return fmt.Errorf("cache: site %s: StaleIfError %v must not be negative (0 means none beyond the origin's)", s.SiteID, s.StaleIfError)
	case s.StaleWhileRevalidate < 0:
		return fmt.Errorf("cache: site %s: StaleWhileRevalidate %v must not be negative (0 means none beyond the origin's)", s.SiteID, s.StaleWhileRevalidate)
	case s.DefaultTTL < 0:
		return fmt.Errorf("cache: site %s: DefaultTTL %v must not be negative (0 means the RFC 9111 heuristic only)", s.SiteID, s.DefaultTTL)
	}
	for i, q := range s.IgnoreQuery {
		if q == "" {
			return fmt.Errorf("cache: site %s: IgnoreQuery[%d] is empty; list query parameter names", s.SiteID, i)
		}
	}
	for i, r := range s.Rules {
		if err := r.validate(fmt.Sprintf("Rules[%d]", i)); err != nil {
			return fmt.Errorf("cache: site %s: %w", s.SiteID, err)
		}
	}
	return nil
}

// Context values a plugin (or any middleware before the cache) may set.
type ctxKey int

const (
	keyOverride ctxKey = iota
	ttlOverride
	statusValue
)

// WithKey returns a context whose requests use key as their cache key instead
// of scheme, host, path and query. The key stays scoped to the site.
func WithKey(ctx context.Context, key string) context.Context {
	return context.WithValue(ctx, keyOverride, key)
}

// WithTTL returns a context whose responses, when storable, are fresh for d
// regardless of their Cache-Control/Expires (d > 0).
func WithTTL(ctx context.Context, d time.Duration) context.Context {
	return context.WithValue(ctx, ttlOverride, d)
}

func ttlFrom(ctx context.Context) time.Duration {
	d, _ := ctx.Value(ttlOverride).(time.Duration)
	return d
}

// errClosed is returned when the cache is used after Close.
var errClosed = errors.New("cache: closed")
