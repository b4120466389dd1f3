// Package plugin is the chi middleware that runs a site's plugin chain
// around the cache: on_request of each plugin in order before the cache
// (rewrites, headers, origin choice, cache key and TTL, direct answers), and
// on_response in reverse order, on the same instances, when the response
// headers are about to go to the client.
//
// It owns the translation between HTTP and the plugin contract (plugins/abi)
// and the site's failure policy (fail open: skip the failed plugin; fail
// closed: 503). It must not compile, pool or sandbox plugins (plugins.Host
// does) and must not choose origins or store responses itself: it leaves its
// decisions in the request context (DirectivesFrom, gateway/cache.WithKey,
// gateway/cache.WithTTL) for the cache and origin pool.
//
// on_response runs at delivery, after the cache: its header changes reach
// the client and are never stored, so a per-client Set-Cookie can not leak
// into a shared cached object. For the same reason its cache directives (TTL,
// no-store) come too late for the response being delivered; they are
// recorded in Directives for a cache that asks before storing.
package plugin

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meridian-edge/meridian/gateway/cache"
	"github.com/meridian-edge/meridian/plugins"
	"github.com/meridian-edge/meridian/plugins/abi"
)

// Options configure the middleware.
type Options struct {
	// Host runs the plugins (required).
	Host *plugins.Host
	// Chain returns the request's site chain; nil or empty runs no plugin.
	Chain func(r *http.Request) *plugins.Chain
	// PoP and PoPRegion are passed to plugins.
	PoP, PoPRegion string
	// Geo locates clients; nil leaves geo unknown.
	Geo plugins.Geo
	// ClientIP returns the client address; nil uses RemoteAddr.
	ClientIP func(r *http.Request) netip.Addr
	// Logger gets failures; nil discards.
	Logger *slog.Logger
}

// Directives are the decisions plugins left for the layers after this
// middleware. The cache key and TTL also go through gateway/cache.WithKey
// and WithTTL.
type Directives struct {
	// Origin is the origin name a plugin chose; empty keeps the default.
	Origin string
	// CacheKey and TTL as set by on_request.
	CacheKey string
	TTL      time.Duration
	// NoStore is set when a plugin forbade caching. From on_request it also
	// adds the request directive "Cache-Control: no-store", which the cache
	// honours. From on_response it is recorded only: the response is being
	// delivered and may already be stored (see package doc).
	NoStore bool
	// ResponseTTL is a TTL set by on_response (recorded only, as NoStore).
	ResponseTTL time.Duration
}

type directivesKey struct{}

// DirectivesFrom returns the plugins' decisions for the request, or nil if
// no plugin left one (origin, cache key, TTL, no-store) and none has an
// on_response still to run. The origin pool reads Origin from it.
func DirectivesFrom(ctx context.Context) *Directives {
	d, _ := ctx.Value(directivesKey{}).(*Directives)
	return d
}

// New returns the middleware.
func New(opts Options) func(http.Handler) http.Handler {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.ClientIP == nil {
		opts.ClientIP = remoteIP
	}
	o := &opts
	// Exchanges are recycled: a request through a plugin chain allocates
	// only what outlives it (its context with the Directives, the
	// request's shallow copy, header maps it changes, decoded strings).
	exchanges := &sync.Pool{New: func() any { return new(exchange) }}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var chain *plugins.Chain
			if o.Chain != nil {
				chain = o.Chain(r)
			}
			if chain == nil || len(chain.Entries) == 0 {
				next.ServeHTTP(w, r)
				return
			}
			ex := exchanges.Get().(*exchange)
			ex.run(o, chain, next, w, r)
			ex.recycle()
			exchanges.Put(ex)
		})
	}
}

// remoteIP is the client address from RemoteAddr ("ip:port").
func remoteIP(r *http.Request) netip.Addr {
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		return ap.Addr().Unmap()
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, _ := netip.ParseAddr(host)
	return a.Unmap()
}

// exchange is one request's run through the chain. It is recycled once the
// request is done: nothing that outlives the request may point into it
// (the Directives live in dirCtx, allocated per request, because cache
// revalidation may keep the request's context after the response).
type exchange struct {
	opts   *Options
	chain  *plugins.Chain
	x      *plugins.Exchange
	req    abi.Request
	resp   abi.Response
	act    abi.Actions
	ran    int // entries whose on_request ran (successfully or not)
	skip   int // entry that answered directly (its on_response is not run), -1
	dir    *Directives
	respOp []headerOp // response header changes asked in on_request
	rw     responseWriter

	// The request handed on is a shallow copy of the caller's (copied: made
	// by own or copyRequest); its header map and URL are copied on the
	// first change (the caller's request is never touched).
	copied, ownHeader, ownURL bool
	spare                     []string // value slots for headers set, from the header copy
	names                     nameCache
}

type headerOp struct {
	name, value string
	remove      bool
}

// dirCtx is the request context with the plugins' Directives: one
// allocation for both (context.WithValue and a separate Directives would
// be two).
type dirCtx struct {
	context.Context
	dir Directives
}

func (c *dirCtx) Value(key any) any {
	if _, ok := key.(directivesKey); ok {
		return &c.dir
	}
	return c.Context.Value(key)
}

// recycle drops what the exchange points to, so a pooled exchange keeps no
// request, writer or large buffer alive.
func (ex *exchange) recycle() {
	ex.opts, ex.chain, ex.x, ex.dir = nil, nil, nil, nil
	ex.rw = responseWriter{}
	ex.respOp = ex.respOp[:0]
	ex.spare = nil
	clear(ex.req.Headers)
	clear(ex.resp.Headers)
	if cap(ex.act.Body) > 64<<10 {
		ex.act.Body = nil
	}
}

func (ex *exchange) run(opts *Options, chain *plugins.Chain, next http.Handler, w http.ResponseWriter, r *http.Request) {
	ip := opts.ClientIP(r)
	var geo plugins.GeoInfo
	if opts.Geo != nil && ip.IsValid() {
		geo.Country, geo.Region, geo.Lat, geo.Lon, geo.Known = opts.Geo.GeoLookup(ip)
	}
	ex.opts, ex.chain, ex.skip, ex.ran = opts, chain, -1, 0
	ex.copied, ex.ownHeader, ex.ownURL = false, false, false
	ex.x = opts.Host.Begin(chain, geo)
	defer ex.x.Close()
	// Field by field: a whole-struct assignment is a bulk copy with
	// write barriers while the GC runs.
	q := &ex.req
	q.Method, q.Host, q.PoP, q.PoPRegion, q.ClientIP, q.ClientAddr = r.Method, r.Host, opts.PoP, opts.PoPRegion, "", ip
	q.Country, q.Region = "", ""
	if geo.Known {
		q.Country, q.Region = geo.Country, geo.Region
	}
	q.Time = ex.x.Time() // the Host's clock (plugins.Options.Now in tests)

	// r stays the caller's request until a plugin changes something (own).
	for i := range chain.Entries {
		e := &chain.Entries[i]
		ex.req.Path, ex.req.Query = r.URL.EscapedPath(), r.URL.RawQuery
		ex.req.Headers = ex.selectHeaders(ex.req.Headers[:0], r.Header, e.RequestHeaders)
		ex.ran = i + 1
		if err := ex.x.Request(r.Context(), i, &ex.req, &ex.act); err != nil {
			if chain.FailClosed {
				ex.failClosed(w, e.Plugin, err)
				return
			}
			continue // fail open: skip this plugin
		}
		r = ex.apply(r)
		if ex.act.Respond {
			ex.skip = i
			ex.respond(w, r)
			return
		}
	}
	pending := ex.x.ResponsePending()
	if !pending && len(ex.respOp) == 0 {
		// Nothing to do at delivery: the plugins only looked (the common
		// case of a plugin without on_response that continued).
		next.ServeHTTP(w, r)
		return
	}
	if pending {
		r = ex.own(r) // on_response may leave Directives for the cache
	}
	ex.rw = responseWriter{ResponseWriter: w, ex: ex, r: r}
	rw := &ex.rw
	next.ServeHTTP(rw, r)
	if !rw.wroteHeader {
		rw.WriteHeader(http.StatusOK)
	}
}

// own returns the exchange's own shallow copy of the caller's request, with
// the Directives in its context, making it on the first call. The header
// map and URL are still the caller's: header and url copy them before a
// change. Until a plugin leaves a decision for the layers after (origin,
// cache key, TTL, no-store) or has an on_response to run, DirectivesFrom
// answers nil.
func (ex *exchange) own(r *http.Request) *http.Request {
	if ex.dir != nil {
		return r
	}
	dc := &dirCtx{Context: r.Context()}
	ex.dir = &dc.dir
	ex.copied = true
	return r.WithContext(dc) // a copy of r (of the exchange's copy, at worst)
}

// copyRequest returns the exchange's own shallow copy of the caller's
// request (as own, without the Directives), making it on the first call.
// The caller's request is never changed (net/http's rule for handlers).
func (ex *exchange) copyRequest(r *http.Request) *http.Request {
	if ex.copied {
		return r
	}
	ex.copied = true
	r2 := new(http.Request)
	*r2 = *r
	return r2
}

// header returns r's header map for changing, copied from the caller's
// first (with room for names more names and values spare value slots).
func (ex *exchange) header(r *http.Request, names, values int) http.Header {
	if !ex.ownHeader {
		r.Header, ex.spare = cloneHeader(r.Header, names, values)
		ex.ownHeader = true
	}
	return r.Header
}

// cloneHeader is http.Header.Clone with room for names more names, and
// values spare value slots (one slice for all values, as Clone does).
func cloneHeader(h http.Header, names, values int) (http.Header, []string) {
	nv := 0
	for _, vv := range h {
		nv += len(vv)
	}
	sv := make([]string, nv+values)
	h2 := make(http.Header, len(h)+names)
	for k, vv := range h {
		if vv == nil {
			h2[k] = nil // keep a nil value: it means "do not send" to the proxy
			continue
		}
		n := copy(sv, vv)
		h2[k] = sv[:n:n]
		sv = sv[n:]
	}
	return h2, sv
}

// setHeader sets h[key] to the single value v (key canonical), in a spare
// value slot when one is left (a slot is a one-element slice of capacity
// one: an append to it by anyone copies it first).
func (ex *exchange) setHeader(h http.Header, key, v string) {
	if len(ex.spare) > 0 {
		h[key] = append(ex.spare[:0:1], v)
		ex.spare = ex.spare[1:]
		return
	}
	h[key] = []string{v}
}

// ownURL makes r.URL the exchange's own copy before a change.
func (ex *exchange) url(r *http.Request) *url.URL {
	if !ex.ownURL {
		u := *r.URL
		r.URL = &u
		ex.ownURL = true
	}
	return r.URL
}

// apply carries out the request-phase actions in ex.act on r.
func (ex *exchange) apply(r *http.Request) *http.Request {
	a := &ex.act
	switch {
	case a.Origin != "" || a.CacheKey != "" || a.HasTTL || a.NoStore:
		r = ex.own(r) // decisions for the layers after: Directives
	case len(a.RemoveRequestHeaders) > 0 || len(a.SetRequestHeaders) > 0 || a.RewritePath || a.RewriteQuery:
		// Only the request changes: a copy of it, without the Directives'
		// context (one allocation less on the common header injection).
		r = ex.copyRequest(r)
	}
	if len(a.RemoveRequestHeaders) > 0 || len(a.SetRequestHeaders) > 0 {
		// Value slots for the headers set, no-store below and the response
		// headers asked for (set at delivery: one allocation less).
		n := len(a.SetRequestHeaders) + 1
		h := ex.header(r, n, n+len(a.SetResponseHeaders))
		for _, name := range a.RemoveRequestHeaders {
			delete(h, ex.names.canonical(name))
		}
		for _, hd := range a.SetRequestHeaders {
			ex.setHeader(h, ex.names.canonical(hd.Name), hd.Value)
		}
	}
	if a.RewritePath {
		p, err := url.PathUnescape(a.Path)
		if err != nil {
			p = a.Path // not %-encoded after all: take it literally
		}
		// EscapedPath falls back to encoding Path when RawPath does not match it.
		u := ex.url(r)
		u.Path, u.RawPath = p, a.Path
		r.RequestURI = u.RequestURI()
	}
	if a.RewriteQuery {
		u := ex.url(r)
		u.RawQuery = a.Query
		r.RequestURI = u.RequestURI()
	}
	if a.Origin != "" {
		ex.dir.Origin = a.Origin
	}
	ctx := r.Context()
	if a.CacheKey != "" {
		ex.dir.CacheKey = a.CacheKey
		ctx = cache.WithKey(ctx, a.CacheKey)
	}
	if a.HasTTL && a.TTL > 0 {
		ex.dir.TTL = a.TTL
		ctx = cache.WithTTL(ctx, a.TTL)
	}
	if (a.NoStore || (a.HasTTL && a.TTL == 0)) && !ex.dir.NoStore {
		ex.dir.NoStore = true
		// The cache honours the RFC 9111 request directive: nothing of this
		// exchange is stored (a response already stored may still be served).
		h := ex.header(r, 1, 1)
		if cc := h.Get("Cache-Control"); cc != "" {
			ex.setHeader(h, "Cache-Control", cc+", no-store")
		} else {
			ex.setHeader(h, "Cache-Control", "no-store")
		}
	}
	for _, name := range a.RemoveResponseHeaders {
		ex.respOp = append(ex.respOp, headerOp{name: name, remove: true})
	}
	for _, h := range a.SetResponseHeaders {
		ex.respOp = append(ex.respOp, headerOp{name: h.Name, value: h.Value})
	}
	if ctx != r.Context() {
		r = r.WithContext(ctx)
	}
	return r
}

// nameCache remembers the canonical form of the last few header names seen
// (the names a chain's plugins set, and those its entries ask for): the
// same few names come on every request.
type nameCache struct {
	raw, canon [8]string
	next       int
}

// canonical is http.CanonicalHeaderKey(name), from the cache when it can.
func (c *nameCache) canonical(name string) string {
	for i := range c.raw {
		if c.raw[i] == name && name != "" {
			return c.canon[i]
		}
	}
	k := http.CanonicalHeaderKey(name)
	// A copy: name may be a view of a plugin's whole answer. k is one too
	// only when name was canonical already (else CanonicalHeaderKey made it).
	raw, canon := strings.Clone(name), k
	if k == name {
		canon = raw
	}
	c.raw[c.next], c.canon[c.next] = raw, canon
	c.next = (c.next + 1) % len(c.raw)
	return k
}

// respond writes a plugin's direct answer, after the on_response of the
// plugins before it.
func (ex *exchange) respond(w http.ResponseWriter, r *http.Request) {
	status, body := ex.act.Status, append([]byte(nil), ex.act.Body...)
	h := w.Header()
	for _, hd := range ex.act.RespondHeaders {
		h.Add(hd.Name, hd.Value)
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	status, failed := ex.response(w, r, status)
	w.WriteHeader(status)
	if failed {
		_, _ = io.WriteString(w, failBody)
	} else if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// response applies on_request's response header changes, then runs
// on_response in reverse order. It returns the status to send and whether a
// fail-closed chain's on_response failed (then the status is 503 and the
// original body must be dropped).
func (ex *exchange) response(w http.ResponseWriter, r *http.Request, status int) (int, bool) {
	h := w.Header()
	for _, op := range ex.respOp {
		if op.remove {
			delete(h, ex.names.canonical(op.name))
		} else {
			ex.setResponseHeader(h, op.name, op.value)
		}
	}
	resp := &ex.resp
	resp.Status, resp.Time = status, ex.req.Time
	for i := ex.ran - 1; i >= 0; i-- {
		if i == ex.skip {
			continue
		}
		e := &ex.chain.Entries[i]
		resp.Headers = ex.selectHeaders(resp.Headers[:0], h, e.ResponseHeaders)
		ran, err := ex.x.Response(r.Context(), i, resp, &ex.act)
		if !ran {
			continue
		}
		if err != nil {
			if ex.chain.FailClosed {
				ex.opts.Logger.Warn("plugin on_response failed; answering 503", "site", ex.chain.Site, "plugin", e.Plugin, "err", err)
				clear(h)
				h.Set("Content-Type", "text/plain; charset=utf-8")
				h.Set("Cache-Control", "no-store")
				return http.StatusServiceUnavailable, true
			}
			continue
		}
		a := &ex.act
		for _, name := range a.RemoveResponseHeaders {
			delete(h, ex.names.canonical(name))
		}
		for _, hd := range a.SetResponseHeaders {
			ex.setResponseHeader(h, hd.Name, hd.Value)
		}
		if ex.dir == nil {
			continue // a direct answer: no cache to tell
		}
		if a.NoStore {
			ex.dir.NoStore = true
		}
		if a.HasTTL {
			ex.dir.ResponseTTL = a.TTL
		}
	}
	return status, false
}

// setResponseHeader sets a header; Set-Cookie accumulates instead, since
// several plugins may each set a cookie.
func (ex *exchange) setResponseHeader(h http.Header, name, value string) {
	key := ex.names.canonical(name)
	if key == "Set-Cookie" {
		h[key] = append(h[key], value)
		return
	}
	ex.setHeader(h, key, value)
}

const failBody = "503 service unavailable: a plugin of this site failed\n"

func (ex *exchange) failClosed(w http.ResponseWriter, plugin string, err error) {
	ex.opts.Logger.Warn("plugin failed; site fails closed: answering 503", "site", ex.chain.Site, "plugin", plugin, "kind", plugins.KindOf(err), "err", err)
	ex.skip = ex.ran - 1
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = io.WriteString(w, failBody)
}

// selectHeaders appends the headers named in names ("*": all) from h.
func (ex *exchange) selectHeaders(dst []abi.Header, h http.Header, names []string) []abi.Header {
	for _, n := range names {
		if n == "*" {
			for k, vs := range h {
				for _, v := range vs {
					dst = append(dst, abi.Header{Name: k, Value: v})
				}
			}
			return dst
		}
		for _, v := range h[ex.names.canonical(n)] {
			dst = append(dst, abi.Header{Name: n, Value: v})
		}
	}
	return dst
}

// responseWriter runs the response phase just before the headers go out.
type responseWriter struct {
	http.ResponseWriter
	ex          *exchange
	r           *http.Request
	wroteHeader bool
	swallow     bool // fail-closed on_response turned this into a 503
}

func (rw *responseWriter) WriteHeader(status int) {
	if rw.wroteHeader {
		return
	}
	if status >= 100 && status < 200 {
		rw.ResponseWriter.WriteHeader(status)
		return
	}
	rw.wroteHeader = true
	final, failed := rw.ex.response(rw.ResponseWriter, rw.r, status)
	rw.ResponseWriter.WriteHeader(final)
	if failed {
		rw.swallow = true
		_, _ = io.WriteString(rw.ResponseWriter, failBody)
	}
}

func (rw *responseWriter) Write(b []byte) (int, error) {
	if !rw.wroteHeader {
		rw.WriteHeader(http.StatusOK)
	}
	if rw.swallow {
		return len(b), nil
	}
	return rw.ResponseWriter.Write(b)
}

// Flush lets streamed bodies through.
func (rw *responseWriter) Flush() {
	if !rw.wroteHeader {
		rw.WriteHeader(http.StatusOK)
	}
	if f, ok := rw.ResponseWriter.(http.Flusher); ok && !rw.swallow {
		f.Flush()
	}
}

// Unwrap serves http.ResponseController.
func (rw *responseWriter) Unwrap() http.ResponseWriter { return rw.ResponseWriter }
