package cache

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-edge/meridian/gateway/cache/l1"
	"github.com/meridian-edge/meridian/gateway/cache/tier"
)

// Results counted in meridian_cache_requests_total.
const (
	resHit         = "hit"         // fresh stored response
	resStale       = "stale"       // stale served (while revalidate, if error, max-stale)
	resRevalidated = "revalidated" // validated with the origin (304) and served from the tier
	resMiss        = "miss"        // fetched from origin for the cache
	resCollapsed   = "collapsed"   // answered by another request's origin fetch
	resPass        = "pass"        // not cacheable: straight to origin
	resError       = "error"       // origin failed, error page sent
)

type metrics struct {
	requests  *prometheus.CounterVec
	bytes     *prometheus.CounterVec
	originDur *prometheus.HistogramVec
	collapsed *prometheus.CounterVec
	stores    *prometheus.CounterVec
	purged    *prometheus.CounterVec
	fast      *prometheus.CounterVec
	compress  *prometheus.CounterVec
	skipped   *prometheus.CounterVec
	// The fast path's outcomes, resolved once.
	fastServed, fastUnparsed, fastRoute, fastMiss, fastRequest, fastStale, fastReclaimed, fastHooked prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, pop string, st *store) (*metrics, error) {
	// The PoP's id as everywhere else (the DNS server's metrics, logs,
	// /admin/info), not its Via name; none without one.
	cl := prometheus.Labels{}
	if pop != "" {
		cl["pop"] = pop
	}
	storeLabels := prometheus.Labels{"store": st.t.Name()}
	for k, v := range cl {
		storeLabels[k] = v
	}
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_cache_requests_total", ConstLabels: cl,
			Help: "Requests by site, the tier that answered (l1, origin) and result (hit, stale, revalidated, miss, collapsed, pass, error).",
		}, []string{"site", "tier", "result"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_cache_served_bytes_total", ConstLabels: cl,
			Help: "Body bytes sent to clients by site and source tier (l1, origin); a HEAD or a 304 sends none.",
		}, []string{"site", "tier"}),
		originDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "meridian_cache_origin_seconds", ConstLabels: cl,
			Help:    "Time until the origin's response headers arrived, by site and outcome (ok, error).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}, []string{"site", "outcome"}),
		collapsed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_cache_collapsed_total", ConstLabels: cl,
			Help: "Requests that waited for another request's origin fetch instead of making their own.",
		}, []string{"site"}),
		stores: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_cache_stores_total", ConstLabels: cl,
			Help: "Attempts to store a response in a tier by outcome (stored, not_admitted, too_large, error, purged).",
		}, []string{"site", "tier", "outcome"}),
		purged: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_cache_purged_total", ConstLabels: cl,
			Help: "Objects removed (hard) or marked stale (soft) by purges and invalidations.",
		}, []string{"site", "mode"}),
		fast: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_cache_fast_requests_total", ConstLabels: cl,
			Help: "Requests read by the fast hit path (cache.Fast) by outcome: served, or handed to net/http because the request was not plain HTTP/1.1 GET/HEAD (unparsed), its host is not a cache-only site (route), it missed (miss), it carries Range, Cache-Control, Authorization or validators that do not make a 304 (request), or the stored response is not a fresh 200 (stale), or the site's plugins asked for what only the server does (a rewrite, no-store, a request directive) or answered themselves (hooks); and connections taken back from net/http after such a request (reclaimed).",
		}, []string{"outcome"}),
		compress: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_cache_compress_bytes_total", ConstLabels: cl,
			Help: "Bytes of responses the edge compressed when it fetched them (SitePolicy.Compress), by site, coding (br, zstd, gzip) and side: in (from the origin) and out (stored and sent); out/in is the ratio achieved.",
		}, []string{"site", "coding", "side"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_cache_compress_skipped_total", ConstLabels: cl,
			Help: "Fills the edge would have compressed but stored as the origin sent them, by site and reason (busy: the bound on fills compressing at once was reached).",
		}, []string{"site", "reason"}),
	}
	m.fastServed = m.fast.WithLabelValues("served")
	m.fastUnparsed = m.fast.WithLabelValues("unparsed")
	m.fastRoute = m.fast.WithLabelValues("route")
	m.fastMiss = m.fast.WithLabelValues("miss")
	m.fastRequest = m.fast.WithLabelValues("request")
	m.fastStale = m.fast.WithLabelValues("stale")
	m.fastReclaimed = m.fast.WithLabelValues("reclaimed")
	m.fastHooked = m.fast.WithLabelValues("hooks")
	if reg == nil {
		return m, nil
	}
	cs := []prometheus.Collector{m.requests, m.bytes, m.originDur, m.collapsed, m.stores, m.purged, m.fast, m.compress, m.skipped,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "meridian_cache_store_objects", ConstLabels: storeLabels,
			Help: "Objects held by the cache's storage (as its tier.Stats reports).",
		}, func() float64 { o, _ := st.usage(); return float64(o) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "meridian_cache_store_bytes", ConstLabels: storeLabels,
			Help: "Bytes held by the cache's storage (as its tier.Stats reports).",
		}, func() float64 { _, b := st.usage(); return float64(b) }),
	}
	if t1 := memoryTier(st.t); t1 != nil {
		cs = append(cs,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "meridian_cache_l1_pool_threshold_bytes", ConstLabels: cl,
				Help: "Encoded size from which L1 keeps bodies in its large-body pool now (it moves with the traffic's sizes; 0: no pool).",
			}, func() float64 { return float64(t1.Split().Threshold) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "meridian_cache_l1_pool_bytes", ConstLabels: cl,
				Help: "Bytes of bodies in L1's large-body pool.",
			}, func() float64 { return float64(t1.Split().PoolBytes) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "meridian_cache_l1_pool_budget_bytes", ConstLabels: cl,
				Help: "L1's large-body pool budget (part of the L1 budget).",
			}, func() float64 { return float64(t1.Split().PoolBudget) }),
		)
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("cache: register metrics: %w (is a second Cache registering on the same registry?)", err)
		}
	}
	return m, nil
}

// memoryTier finds the built-in L1 in the cache's storage: the storage
// itself or the first tier of a composition.
func memoryTier(t tier.Tier) *l1.Tier {
	if t1, ok := t.(*l1.Tier); ok {
		return t1
	}
	if c, ok := t.(interface{ Tiers() []tier.Tier }); ok {
		if ts := c.Tiers(); len(ts) > 0 {
			t1, _ := ts[0].(*l1.Tier)
			return t1
		}
	}
	return nil
}

// compressed counts one response compressed whole in coding: in bytes from
// the origin, out bytes of its encoding.
func (m *metrics) compressed(site, coding string, in, out int64) {
	m.compress.WithLabelValues(site, coding, "in").Add(float64(in))
	m.compress.WithLabelValues(site, coding, "out").Add(float64(out))
}

// compressSkipped counts a fill left uncompressed for reason.
func (m *metrics) compressSkipped(site, reason string) {
	m.skipped.WithLabelValues(site, reason).Inc()
}

func (m *metrics) request(site, tier, result string) {
	m.requests.WithLabelValues(site, tier, result).Inc()
}

func (m *metrics) origin(site string, d time.Duration, err error) {
	o := "ok"
	if err != nil {
		o = "error"
	}
	m.originDur.WithLabelValues(site, o).Observe(d.Seconds())
}
