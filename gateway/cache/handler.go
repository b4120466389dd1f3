package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-edge/meridian/gateway/cache/failurelog"
	"github.com/meridian-edge/meridian/gateway/cache/policy"
	"github.com/meridian-edge/meridian/gateway/cache/tier"
	"github.com/meridian-edge/meridian/gateway/proxy"
	"github.com/meridian-edge/meridian/middleware"
)

// stored is a response found in a tier.
type stored struct {
	key  string // storage key (the variant key for Vary'd responses)
	meta *tier.Meta
	// The body is either in memory (body) or a seekable stream (rs, closed
	// by close) from a tier that does not hold bodies in memory.
	body   []byte
	rs     io.ReadSeeker
	closer io.Closer
	tier   string
	// shared: meta's Header map is the one its tier hands to every hit on
	// the object (L1, L2), so answers derived from it can be memoised
	// (metaKey). Tiers that decode a new map per read (L3) would only churn
	// the memos.
	shared bool
}

func (s *stored) clone() *stored {
	c := *s
	c.meta = s.meta.Clone()
	c.shared = false
	return &c
}

func (s *stored) close() {
	if s != nil && s.closer != nil {
		_ = s.closer.Close()
	}
}

// size is the stored body's length. A tier that did not record it (a
// streamed fill without Content-Length) still hands back a seekable body, so
// the length is found by seeking; 0 only when even that fails.
func (s *stored) size() int64 {
	if s.rs == nil {
		return int64(len(s.body))
	}
	if s.meta.Size >= 0 {
		return s.meta.Size
	}
	n, err := s.rs.Seek(0, io.SeekEnd)
	if err != nil {
		return 0
	}
	if _, err := s.rs.Seek(0, io.SeekStart); err != nil {
		return 0
	}
	m := *s.meta // the meta may be shared with the tier
	m.Size = n
	s.meta = &m
	return n
}

type siteHandler struct {
	c      *Cache
	site   SitePolicy
	origin http.RoundTripper
	proxy  *proxy.Proxy
	maxObj int64 // largest body stored
	retain int64 // largest body kept in memory for requests joining a fill
	// Counters of the hit path per tier, resolved once (label lookups cost
	// more than the increment).
	hits [3]tierCounters
}

type tierCounters struct {
	tier       string
	hit, bytes prometheus.Counter
}

// countHit counts a fresh hit from tierName; the body bytes it sends are
// counted by countBytes, as they are sent.
func (h *siteHandler) countHit(tierName string) { h.countHitBytes(tierName, 0) }

// countHitBytes counts a hit from tierName that sent n body bytes (0 for a
// HEAD or a 304), with one look-up of the tier's series: the fast path
// counts both on every hit.
func (h *siteHandler) countHitBytes(tierName string, n int64) {
	for i := range h.hits {
		if tc := &h.hits[i]; tc.tier == tierName {
			tc.hit.Inc()
			if n > 0 {
				tc.bytes.Add(float64(n))
			}
			return
		}
	}
	h.c.metrics.request(h.site.SiteID, tierName, resHit)
	h.countBytes(tierName, n)
}

// countBytes adds n body bytes sent from tierName to
// meridian_cache_served_bytes_total. Only bytes of a body go there: a HEAD
// or a 304 sends none, whatever the stored response's size.
func (h *siteHandler) countBytes(tierName string, n int64) {
	if n <= 0 {
		return
	}
	for i := range h.hits {
		if tc := &h.hits[i]; tc.tier == tierName {
			tc.bytes.Add(float64(n))
			return
		}
	}
	h.c.metrics.bytes.WithLabelValues(h.site.SiteID, tierName).Add(float64(n))
}

// Handler returns the whole proxy and cache path for one site: requests are
// answered from the cache when RFC 9111 allows it and otherwise forwarded to
// origin, which sends them to the site's origin servers. A nil origin makes
// every request fail with a clear 502.
func (c *Cache) Handler(site SitePolicy, origin http.RoundTripper) http.Handler {
	if origin == nil {
		origin = roundTripperFunc(func(*http.Request) (*http.Response, error) {
			return nil, errNoOrigin
		})
	}
	site.compileRules()
	h := &siteHandler{c: c, site: site, origin: origin}
	h.maxObj = c.store.maxObject()
	if site.MaxObject > 0 && site.MaxObject < h.maxObj {
		h.maxObj = site.MaxObject
	}
	if site.MaxL1Object > 0 {
		if fl, ok := c.store.t.(firstTierLimiter); ok {
			// The composition keeps larger bodies out of its memory tier
			// (on store and on promotion) and in the tiers below.
			fl.LimitFirst(site.SiteID, site.MaxL1Object)
		} else if c.store.t.Name() == "l1" {
			// The memory tier is all there is.
			h.maxObj = min(h.maxObj, site.MaxL1Object)
		}
	}
	h.retain = min(h.maxObj, c.opts.L1MaxObject)
	for i, t := range []string{"l1", "l2", "l3"} {
		h.hits[i] = tierCounters{tier: t, hit: c.metrics.requests.WithLabelValues(site.SiteID, t, resHit),
			bytes: c.metrics.bytes.WithLabelValues(site.SiteID, t)}
	}
	h.proxy, _ = proxy.New(proxy.Options{ // cannot fail: Transport is set
		SiteID: site.SiteID, PoPID: ViaName(c.opts.PoPID), Transport: origin, Logger: c.log, ErrorPage: site.ErrorPage,
		ModifyResponse: func(res *http.Response) error {
			// Passed on uncached, a response still keeps the fields
			// addressed to the CDN from the client (clientHeader).
			dropCDNOnly(res.Header)
			if cs, ok := res.Request.Context().Value(statusValue).(string); ok {
				res.Header.Add("Cache-Status", cs)
			}
			if site.Compress { // an unsafe method's answer, a bypassed site's
				h.compress(res, policy.NormalizeAcceptEncoding(res.Request.Header.Values("Accept-Encoding")), true)
			}
			return nil
		},
	})
	return h
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

type errString string

func (e errString) Error() string { return string(e) }

// errNoOrigin is what a site without an origin fails with: unreachable, as
// for a pool whose servers are all down.
var errNoOrigin = fmt.Errorf("cache: the site has no origin configured: %w", proxy.ErrUnreachable)

func isUpgrade(r *http.Request) bool {
	if r.Header.Get("Upgrade") == "" {
		return false
	}
	for _, v := range r.Header.Values("Connection") {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(textproto.TrimString(t), "upgrade") {
				return true
			}
		}
	}
	return false
}

func (h *siteHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	r = stripFragment(r)
	var rule *PathRule
	if len(h.site.Rules) > 0 {
		rule = ruleFor(&h.site, r.URL.EscapedPath())
	}
	w = h.site.responseHeaders(rule).Wrap(w)
	if rule != nil && rule.Redirect != "" {
		// The PoP's own answer: logged, counted and stamped as one.
		middleware.MarkGenerated(r.Context(), "path-redirect")
		writeRedirect(w, r, rule.redirectTarget(r.URL), rule.redirectStatus())
		return
	}
	if h.site.Bypass || isUpgrade(r) {
		h.pass(w, r, "meridian; fwd=bypass")
		return
	}
	if rule != nil && rule.Bypass {
		h.pass(w, r, "meridian; fwd=bypass; detail=path-rule")
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
	case http.MethodOptions, http.MethodTrace, http.MethodConnect:
		h.pass(w, r, "meridian; fwd=method")
		return
	default:
		h.unsafe(w, r)
		return
	}
	if r.ContentLength != 0 {
		// A GET with a body: the body is not part of the key, so its response
		// must not be shared (a classic poisoning vector). Forward it intact.
		h.pass(w, r, "meridian; fwd=bypass; detail=request-body")
		return
	}
	u := requestURL(r, &h.site)
	key := primaryKey(r, &h.site, u)
	reqCC := policy.RequestDirectives(r.Header)
	st, varyMiss, found := takeFound(r, key)
	if !found {
		st, varyMiss = h.c.lookup(key, r)
	}
	if st != nil && r.Header.Get("Authorization") != "" && !sharedForAuthorization(st.meta.Header) {
		st.close()
		st = nil
	}
	if st == nil {
		if reqCC.Has("only-if-cached") {
			h.c.metrics.request(h.site.SiteID, "none", resError)
			h.proxy.WritePage(w, r, proxy.Page{Status: http.StatusGatewayTimeout, Reason: "only-if-cached", CacheStatus: "meridian; fwd=miss",
				Message: "the request said only-if-cached and this PoP holds no stored response for it."})
			return
		}
		fwd := "uri-miss"
		if varyMiss {
			fwd = "vary-miss"
		}
		h.fetch(w, r, key, u, nil, reqCC, fwd, true)
		return
	}
	defer st.close()
	f := h.c.freshness(st)
	if f.StaleWhileRevalidate == 0 && !st.meta.Invalidated {
		_, f.StaleWhileRevalidate = h.site.staleWindows(rule) // the origin's own window wins
	}
	switch policy.Decide(f, reqCC) {
	case policy.UseFresh:
		if f.Fresh() {
			h.countHit(st.tier)
		} else {
			h.c.metrics.request(h.site.SiteID, st.tier, resStale)
		}
		h.serveStored(w, r, st, hitStatus(st, f, ""), f.Age)
	case policy.UseStaleRevalidate:
		h.c.metrics.request(h.site.SiteID, st.tier, resStale)
		h.revalidateInBackground(r, key, u, st)
		h.serveStored(w, r, st, hitStatus(st, f, "stale-while-revalidate"), f.Age)
	default:
		fwd := "stale"
		if reqCC.Has("no-cache") || reqCC.Has("max-age") || reqCC.Has("min-fresh") {
			fwd = "request"
		}
		h.fetch(w, r, key, u, st, reqCC, fwd, true)
	}
}

// sharedForAuthorization: RFC 9111 3.5, a response to a request with
// Authorization may be reused only with public, s-maxage or must-revalidate.
func sharedForAuthorization(hd http.Header) bool {
	d, _ := policy.ResponseDirectives(hd)
	return d.Has("public") || d.Has("s-maxage") || d.Has("must-revalidate")
}

func hitStatus(st *stored, f policy.Freshness, detail string) string {
	// One allocation: this runs on every hit.
	var buf [64]byte
	return string(appendHitStatus(buf[:0], st, f, detail))
}

// appendHitStatus appends our Cache-Status entry for a hit on st.
func appendHitStatus(b []byte, st *stored, f policy.Freshness, detail string) []byte {
	b = append(b, "meridian; hit; ttl="...)
	b = strconv.AppendInt(b, int64(f.TTL()/time.Second), 10)
	b = append(b, "; detail="...)
	b = append(b, st.tier...)
	if detail != "" {
		b = append(b, '-')
		b = append(b, detail...)
	}
	return b
}

func (c *Cache) freshness(st *stored) policy.Freshness {
	return c.freshnessAt(st, c.now())
}

// nowOr returns t, a time the caller just read from the real clock, when the
// cache runs on the real clock, else the cache's clock (a test's).
func (c *Cache) nowOr(t time.Time) time.Time {
	if c.realClock {
		return t
	}
	return c.now()
}

// freshnessAt is freshness at now (the fast path's request time, which saves
// a clock read per hit).
func (c *Cache) freshnessAt(st *stored, now time.Time) policy.Freshness {
	m := st.meta
	var f policy.Freshness
	if st.shared {
		f = c.fresh.evaluate(m, now)
	} else {
		f = policy.Evaluate(m.Status, m.Header, m.RequestTime, m.ResponseTime, now, m.TTL)
	}
	if m.Invalidated {
		// Soft purge: stale from now on, usable only for stale-if-error.
		f.Lifetime = 0
		f.StaleWhileRevalidate = 0
	}
	return f
}

// lookup finds the stored response for key and r's Vary'd headers.
func (c *Cache) lookup(key string, r *http.Request) (st *stored, varyMiss bool) {
	return c.lookupWith(r.Context(), key, func() http.Header { return r.Header })
}

// lookupWith is lookup for a request whose header fields header returns
// (called only for Vary'd responses).
func (c *Cache) lookupWith(ctx context.Context, key string, header func() http.Header) (st *stored, varyMiss bool) {
	st, err := c.store.get(ctx, key)
	if err != nil {
		return nil, false
	}
	if st.meta.Kind == tier.KindVary {
		m := st.meta
		st.close()
		vk := variantKey(key, m.Gen, policy.SecondaryKey(m.Vary, header()))
		st, err = c.store.get(ctx, vk)
		if err != nil {
			return nil, true
		}
		if st.meta.Kind != tier.KindResponse {
			st.close()
			return nil, true
		}
	}
	if c.opts.PurgeCheck != nil && st.meta.Kind == tier.KindResponse {
		purged, stale := c.opts.PurgeCheck(st.meta.Site, st.meta.URL, surrogateKeys(st.meta.Header), st.meta.ResponseTime)
		switch {
		case purged:
			st.close()
			c.store.delete(st.key)
			c.metrics.purged.WithLabelValues(st.meta.Site, "on-read").Inc()
			return nil, false
		case stale && !st.meta.Invalidated:
			// Copy before marking: the meta may be shared with the tier.
			m := *st.meta
			m.Invalidated = true
			st.meta = &m
		}
	}
	return st, false
}

// pass forwards r to the origin without the cache.
func (h *siteHandler) pass(w http.ResponseWriter, r *http.Request, cacheStatus string) {
	h.c.metrics.request(h.site.SiteID, "origin", resPass)
	h.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), statusValue, cacheStatus)))
}

// unsafe forwards a request with an unsafe method, body intact, and then
// invalidates the stored responses for its URL and for the same-host URLs
// in Location and Content-Location (RFC 9111 4.4).
func (h *siteHandler) unsafe(w http.ResponseWriter, r *http.Request) {
	sw := &statusWriter{ResponseWriter: w}
	h.pass(sw, r, "meridian; fwd=method")
	if sw.status < 200 || sw.status >= 400 {
		return
	}
	u := requestURL(r, &h.site)
	h.c.invalidate(h.site.SiteID, primaryKey(r, &h.site, u))
	base, err := url.Parse(u)
	if err != nil {
		return
	}
	for _, f := range []string{"Location", "Content-Location"} {
		v := sw.Header().Get(f)
		if v == "" {
			continue
		}
		ref, err := base.Parse(v)
		if err != nil || normHost(ref.Host) != normHost(base.Host) {
			continue // another host: not ours to invalidate (RFC 9111 4.4)
		}
		rr := &http.Request{Method: http.MethodGet, URL: ref, Host: ref.Host, TLS: r.TLS, Header: http.Header{}}
		rr = rr.WithContext(context.Background())
		ru := requestURL(rr, &h.site)
		h.c.invalidate(h.site.SiteID, h.site.SiteID+"\x00"+ru)
	}
}

// invalidate drops the primary entry of key; Vary'd variants become
// unreachable with their index.
func (c *Cache) invalidate(site, key string) {
	c.purges.invalidate(key)
	c.store.delete(key)
	c.metrics.purged.WithLabelValues(site, "invalidate").Inc()
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 || s.status < 200 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach Flush and Hijack.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// revalidateInBackground refreshes st (stale-while-revalidate) on a
// goroutine owned by the cache, collapsed with any other fetch of the key.
func (h *siteHandler) revalidateInBackground(r *http.Request, key, u string, st *stored) {
	// A popular object going stale is hit by many requests while its
	// revalidation runs: each would clone its request and start a goroutine
	// only to join that flight and leave. (Racing past this check is
	// harmless: join collapses it.)
	if h.c.flights.inFlight(key) {
		return
	}
	r2 := r.Clone(backgroundContext(r.Context()))
	h.c.goBackground(func(ctx context.Context) {
		f, rd, leader := h.c.flights.join(key, r2.Header, h.c.purges.at(h.site.SiteID, key))
		rd.Close()
		if !leader {
			return
		}
		began := time.Now()
		if resp := h.run(r2, nil, key, u, st, f, true); resp != nil {
			resp.Body.Close()
		}
		<-f.ready // run released the flight with its result
		h.logRefresh(u, f.res, time.Since(began))
	})
}

// logRefresh logs a background revalidation (stale-while-revalidate),
// which no client's access log line covers: without it an origin request
// the PoP made would show nowhere but in the counters. took is until the
// origin's header arrived.
func (h *siteHandler) logRefresh(u string, res result, took time.Duration) {
	level, outcome := slog.LevelInfo, ""
	attrs := []any{"site", h.site.SiteID, "url", u, "origin_time", took.Round(time.Microsecond)}
	switch res.kind {
	case kindStored:
		outcome = "refreshed"
	case kindStream:
		outcome = "replaced"
		if !res.storing {
			outcome = "replaced-not-stored"
		}
	case kindPass:
		outcome = "not-stored"
		if res.status >= 500 { // the stored copy stays, for stale-if-error
			level, outcome = slog.LevelWarn, "failed"
		} else {
			attrs = append(attrs, "reason", res.notStored)
		}
	case kindError:
		_, word, _ := proxy.OriginFailure(res.err)
		level, outcome = slog.LevelWarn, "failed"
		attrs = append(attrs, "origin_error", word, "err", res.err)
	}
	if res.kind != kindError {
		attrs = append(attrs, "origin_status", res.status)
	}
	h.c.log.Log(context.Background(), level, "background revalidation", append(attrs, "outcome", outcome)...)
}

// conditional and range request fields are the cache's to answer; the fill
// asks the origin for the full response.
var clientConditionals = []string{"If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since", "If-Range", "Range"}

// unkeyedOverrides are request fields some origin frameworks honour to
// change the URL, method or host they serve. They are not part of the cache
// key, so a fill must not forward them: one client could otherwise store a
// response for another URL under this key (cache poisoning).
var unkeyedOverrides = []string{
	"X-Original-URL", "X-Rewrite-URL", "X-HTTP-Method-Override", "X-HTTP-Method",
	"X-Method-Override", "X-Forwarded-Server", "X-Forwarded-Port", "X-Forwarded-Scheme",
	"X-Forwarded-Prefix", "X-Host", "X-Original-Host",
}

// fetch gets a response from the origin for r, through a collapsed flight
// when possible, and answers the client.
func (h *siteHandler) fetch(w http.ResponseWriter, r *http.Request, key, u string, stale *stored, reqCC policy.Directives, fwd string, collapse bool) {
	collapse = collapse && r.Header.Get("Authorization") == "" && !reqCC.Has("no-store") &&
		!h.c.flights.isPass(key, h.c.now())
	var (
		f      *flight
		rd     *reader
		leader = true
	)
	if collapse {
		f, rd, leader = h.c.flights.join(key, r.Header, h.c.purges.at(h.site.SiteID, key))
	} else {
		f = newFlight(r.Header, h.c.purges.at(h.site.SiteID, key))
		rd = f.fill.register()
	}
	if leader && collapse && h.c.flights.leftRecently(key, time.Now()) {
		// A fill of key may have stored it, or a revalidation refreshed
		// the stale object this request found, since this request looked.
		if st, _ := h.c.lookup(key, r); st != nil {
			defer st.close()
			if fr := h.c.freshness(st); fr.Fresh() && policy.Decide(fr, reqCC) == policy.UseFresh {
				h.c.flights.release(key, f, result{kind: kindStored, stored: st, hit: true}, false)
				h.respond(w, r, key, u, reqCC, f, rd, nil, fwd, "")
				return
			}
		}
	}
	if leader {
		resp := h.run(r, w, key, u, stale, f, collapse)
		h.respond(w, r, key, u, reqCC, f, rd, resp, fwd, "")
		return
	}
	h.c.metrics.collapsed.WithLabelValues(h.site.SiteID).Inc()
	select {
	case <-f.ready:
	case <-r.Context().Done():
		rd.Close()
		return
	}
	if f.res.kind == kindStream && len(f.res.vary) > 0 &&
		policy.SecondaryKey(f.res.vary, r.Header) != policy.SecondaryKey(f.res.vary, f.header) {
		// The shared response varies on a header this request has
		// differently: fetch on our own.
		rd.Close()
		h.fetch(w, r, key, u, stale, reqCC, "vary-miss", false)
		return
	}
	if f.res.kind == kindPass && !(f.res.status >= 500 && f.res.stored != nil) {
		rd.Close()
		h.fetch(w, r, key, u, stale, reqCC, fwd, false)
		return
	}
	h.respond(w, r, key, u, reqCC, f, rd, nil, fwd, "collapsed")
}

// run performs the origin exchange of flight f for key and publishes its
// result. It returns the origin response only when the result is kindPass,
// for the leader to stream on its own; w (nil for background revalidation)
// receives 1xx interim responses.
func (h *siteHandler) run(r *http.Request, w http.ResponseWriter, key, u string, stale *stored, f *flight, shared bool) *http.Response {
	c := h.c
	octx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	stopOnClose := context.AfterFunc(c.ctx, cancel)
	cancelAll := func() { stopOnClose(); cancel() }
	if w != nil {
		octx = httptrace.WithClientTrace(octx, &httptrace.ClientTrace{
			Got1xxResponse: func(code int, header textproto.MIMEHeader) error {
				// Interim responses go to the requesting client and are never stored.
				hd := w.Header()
				for k, v := range header {
					hd[k] = v
				}
				w.WriteHeader(code)
				for k := range header {
					delete(hd, k)
				}
				return nil
			},
		})
	}
	out := h.proxy.Outbound(octx, r)
	out.Method = http.MethodGet
	if ae := out.Header.Values("Accept-Encoding"); len(ae) > 0 {
		// The form variants are keyed on (policy.SecondaryKey): a stored
		// variant is then made for exactly the codings its key accepts.
		out.Header.Set("Accept-Encoding", policy.NormalizeAcceptEncoding(ae))
	}
	for _, k := range clientConditionals {
		out.Header.Del(k)
	}
	for _, k := range unkeyedOverrides {
		out.Header.Del(k)
	}
	if stale != nil {
		if et := stale.meta.Header.Get("ETag"); et != "" {
			out.Header.Set("If-None-Match", et)
		}
		if lm := stale.meta.Header.Get("Last-Modified"); lm != "" {
			out.Header.Set("If-Modified-Since", lm)
		}
	}
	seq := f.seq // a purge since the flight started: not stored
	reqTime := c.now()
	resp, err := h.origin.RoundTrip(out)
	respTime := c.now()
	c.metrics.origin(h.site.SiteID, respTime.Sub(reqTime), err)
	if err != nil {
		cancelAll()
		c.flights.release(key, f, result{kind: kindError, err: err, stored: stale}, false)
		return nil
	}
	proxy.RemoveHopByHop(resp.Header)
	if resp.StatusCode == http.StatusNotModified && stale != nil {
		resp.Body.Close()
		cancelAll()
		// A purge since the flight began (a soft one marks the object
		// stale) outranks this 304, which answers a question asked before it.
		save := c.purges.at(h.site.SiteID, key) == seq
		override, def := h.site.ttls(r, stale.meta.Status)
		upd := c.update304(stale, resp.Header, reqTime, respTime, override, def, save)
		c.flights.release(key, f, result{kind: kindStored, stored: upd, status: http.StatusNotModified}, false)
		return nil
	}
	sreq := &http.Request{Method: http.MethodGet, Header: r.Header}
	override, def := h.site.ttls(r, resp.StatusCode)
	ttl := policy.StoreTTL(resp.StatusCode, resp.Header, override, def)
	reason := policy.StorableResponse(sreq, resp.StatusCode, resp.Header, ttl)
	if reason == policy.Storable && resp.ContentLength > h.maxObj {
		// Larger than any tier takes (or the site's MaxObject): streamed
		// through, and counted, as a body that outgrows them is (pump).
		reason = "too-large"
		c.storeOutcome(h.site.SiteID, tier.ErrTooLarge)
	}
	if reason != policy.Storable || (resp.StatusCode >= 500 && stale != nil) {
		if stale != nil && resp.StatusCode < 500 {
			// A newer response replaced the stored one; never serve the old.
			c.store.delete(stale.key)
		}
		if resp.StatusCode < 500 {
			c.flights.markPass(key, respTime)
		}
		if w != nil { // a client's own pass, not a background revalidation's
			h.compress(resp, out.Header.Get("Accept-Encoding"), true)
		}
		resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancelAll}
		c.flights.release(key, f, result{kind: kindPass, status: resp.StatusCode, stored: stale, notStored: string(reason)}, false)
		return resp
	}
	c.flights.clearPass(key)
	h.compress(resp, out.Header.Get("Accept-Encoding"), false) // the normalised field
	if _, ok := resp.Header["Date"]; !ok {
		resp.Header.Set("Date", respTime.UTC().Format(http.TimeFormat))
	}
	meta := &tier.Meta{
		Kind: tier.KindResponse, Site: h.site.SiteID, URL: u, Status: resp.StatusCode,
		Header: resp.Header, RequestTime: reqTime, ResponseTime: respTime, TTL: ttl, Size: resp.ContentLength,
	}
	vary := policy.VaryFields(resp.Header)
	var tw tier.Writer
	if storeKey, ok := c.storeKey(key, u, h.site.SiteID, vary, r.Header); ok {
		var perr error
		tw, perr = c.store.put(octx, storeKey, meta)
		if perr != nil {
			c.storeOutcome(h.site.SiteID, perr)
		}
	}
	f.fill.setStoring(tw != nil)
	f.fill.setRetain(tw != nil && (resp.ContentLength < 0 || resp.ContentLength <= h.retain))
	res := result{kind: kindStream, status: resp.StatusCode, header: resp.Header, length: resp.ContentLength, vary: vary, storing: tw != nil}
	keep := tw != nil && shared && (resp.ContentLength < 0 || resp.ContentLength <= h.retain)
	c.flights.release(key, f, res, keep)
	forget := func() {
		if keep {
			c.flights.forget(key, f)
		}
	}
	if !c.goBackground(func(context.Context) {
		c.pump(octx, cancelAll, f.fill, resp, tw, h.maxObj, h.retain, seq, h.site.SiteID, key, forget)
	}) {
		forget()
		resp.Body.Close()
		cancelAll()
		if tw != nil {
			tw.Abort()
		}
		f.fill.finish(errClosed)
	}
	return nil
}

type cancelBody struct {
	io.ReadCloser
	cancel func()
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

func (c *Cache) storeOutcome(site string, err error) {
	o := "stored"
	switch {
	case err == nil:
	case err == tier.ErrNotAdmitted:
		o = "not_admitted"
	case err == tier.ErrTooLarge:
		o = "too_large"
	default:
		o = "error"
		// Rate-limited: a broken store fails every response stored.
		c.failures.Warn("store/"+c.store.t.Name()+"/"+failurelog.ErrorKind(err), "cache: store failed", "site", site, "store", c.store.t.Name(), "err", err)
	}
	c.metrics.stores.WithLabelValues(site, c.store.t.Name(), o).Inc()
}

// storeKey returns where to store a response for key. For a Vary'd response
// it finds or writes the Vary index record at key and returns the variant key.
func (c *Cache) storeKey(key, u, site string, vary []string, reqHeader http.Header) (string, bool) {
	if len(vary) == 0 {
		return key, true
	}
	var gen uint64
	if st, err := c.store.get(context.Background(), key); err == nil && st.meta.Kind == tier.KindVary && equalStrings(st.meta.Vary, vary) {
		st.close()
		gen = st.meta.Gen
	} else {
		st.close()
		gen = c.gen.Add(1)
		idx := &tier.Meta{Kind: tier.KindVary, Site: site, URL: u, Vary: vary, Gen: gen, ResponseTime: c.now(), RequestTime: c.now()}
		w, err := c.store.put(context.Background(), key, idx)
		if err != nil {
			return "", false
		}
		if err := w.Commit(); err != nil {
			return "", false
		}
	}
	return variantKey(key, gen, policy.SecondaryKey(vary, reqHeader)), true
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// update304 merges a 304's header fields into the stored response (RFC 9111
// 3.2: every field replaces the stored one, except Content-Length) and
// persists the new metadata. The recorded TTL is decided again, as for a
// new response (policy.StoreTTL with the revalidating request's plugin TTL
// and the site's default): a 304 that brings a max-age of its own ends a
// default TTL, as Varnish does when it revalidates. Without save the
// result only answers the revalidating requests: the stored response was
// purged meanwhile and stays as the purge left it.
func (c *Cache) update304(st *stored, h http.Header, reqTime, respTime time.Time, pluginTTL, siteDefault time.Duration, save bool) *stored {
	n := st.clone()
	old := st.meta.Header
	for k, v := range h {
		if k == "Content-Length" {
			continue
		}
		n.meta.Header[k] = v
	}
	// What the edge's compression added stays: the 304 speaks of the
	// origin's plain representation, the stored one is its gzip.
	if et := old.Get("ETag"); et != "" && et == weakETag(h.Get("ETag")) {
		n.meta.Header.Set("ETag", et)
	}
	if _, ok := h["Vary"]; ok {
		for _, f := range policy.VaryFields(old) {
			if f == "accept-encoding" {
				addVaryAcceptEncoding(n.meta.Header)
			}
		}
	}
	if _, ok := h["Date"]; !ok {
		n.meta.Header.Set("Date", respTime.UTC().Format(http.TimeFormat))
	}
	n.meta.RequestTime, n.meta.ResponseTime = reqTime, respTime
	n.meta.TTL = policy.StoreTTL(n.meta.Status, n.meta.Header, pluginTTL, siteDefault)
	n.meta.Invalidated = false
	if !save {
		c.metrics.stores.WithLabelValues(st.meta.Site, c.store.t.Name(), "purged").Inc()
		return n
	}
	if err := c.store.updateMeta(context.Background(), n, n.meta); err != nil && !errors.Is(err, tier.ErrNotFound) {
		c.log.Warn("cache: update after 304 failed", "err", err)
	}
	return n
}

// pump reads the origin body into the fill and, when storing, into the tier.
func (c *Cache) pump(ctx context.Context, cancel func(), f *fill, resp *http.Response, tw tier.Writer, maxObj, retain int64, seq uint64, site, key string, forget func()) {
	defer cancel()
	defer forget()
	defer resp.Body.Close()
	var n int64
	var buf []byte
	for {
		if !f.waitSpace(ctx) {
			if tw != nil {
				tw.Abort()
			}
			f.finish(context.Canceled)
			return
		}
		if len(buf) == 0 {
			sz := int64(chunkSize)
			if resp.ContentLength >= 0 && resp.ContentLength-n+1 < sz {
				sz = resp.ContentLength - n + 1 // +1 lets the read see EOF
			}
			buf = make([]byte, max(sz, 512))
		}
		k, err := resp.Body.Read(buf)
		if k > 0 {
			chunk := buf[:k:k]
			buf = buf[k:]
			n += int64(k)
			if n > retain {
				// Too big to keep in memory for late joiners: stop taking
				// them and let memory follow the readers.
				forget()
				f.setRetain(false)
			}
			if tw != nil {
				if _, werr := tw.Write(chunk); werr != nil || n > maxObj {
					tw.Abort()
					tw = nil
					if werr == nil {
						werr = tier.ErrTooLarge
					}
					c.storeOutcome(site, werr)
					f.setStoring(false)
				}
			}
			f.append(chunk)
		}
		if err == io.EOF {
			if resp.ContentLength >= 0 && n != resp.ContentLength {
				err = io.ErrUnexpectedEOF
			} else {
				if tw != nil {
					if c.purges.at(site, key) != seq {
						tw.Abort() // purged while fetching: do not resurrect
						c.metrics.stores.WithLabelValues(site, c.store.t.Name(), "purged").Inc()
					} else {
						c.storeOutcome(site, tw.Commit())
					}
				}
				forget()
				f.setRetain(false)
				f.finish(nil)
				return
			}
		}
		if err != nil {
			if tw != nil {
				tw.Abort()
			}
			f.setRetain(false)
			f.finish(err)
			return
		}
	}
}
