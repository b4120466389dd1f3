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
	"fmt"
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
	"github.com/meridian-edge/meridian/gateway/proxy"
	"github.com/meridian-edge/meridian/middleware"
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
	// ErrorPage, when set, returns the site's own HTML error page for a
	// request (proxy.Options.ErrorPage; nil: none): a browser gets it as
	// the body of a fail-closed chain's 503 on net/http, as it gets it for
	// an origin that failed. The fast path's 503 takes the page from the
	// site's cache policy.
	ErrorPage func(r *http.Request) []byte
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

// Runner runs the sites' plugin chains: as chi middleware (Middleware,
// for requests served through net/http) and on the cache's fast path
// (FastHooks). A request runs through the chain once, whichever path takes
// it: a call the fast path began and handed on with its connection is
// taken over by Middleware (cache.TakeFastCall).
type Runner struct {
	o *Options
	// Exchanges are recycled: a request through a plugin chain allocates
	// only what outlives it (its context with the Directives, the
	// request's shallow copy, header maps it changes, decoded strings).
	exchanges sync.Pool
	// ownClientIP: Options.ClientIP was set, and it needs the server's
	// request; the fast path then leaves plugin sites to net/http.
	ownClientIP bool
}

// NewRunner returns a Runner.
func NewRunner(opts Options) *Runner {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	rn := &Runner{ownClientIP: opts.ClientIP != nil}
	if opts.ClientIP == nil {
		opts.ClientIP = remoteIP
	}
	rn.o = &opts
	rn.exchanges.New = func() any { return new(exchange) }
	return rn
}

// New returns the middleware (NewRunner(opts).Middleware).
func New(opts Options) func(http.Handler) http.Handler {
	return NewRunner(opts).Middleware
}

// Middleware runs the request's chain (Options.Chain) around next.
func (rn *Runner) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fc := cache.TakeFastCall(r); fc != nil {
			// Closed even if a handler panics (Recover answers it): an
			// exchange left open would keep its instances from the pool.
			defer fc.Close()
			if ex, ok := fc.(*exchange); ok && ex.rn == rn {
				ex.page = rn.sitePage(r)
				ex.deliver(next, w, r) // the fast path ran the request phase
				return
			}
		}
		var chain *plugins.Chain
		if rn.o.Chain != nil {
			chain = rn.o.Chain(r)
		}
		if chain == nil || len(chain.Entries) == 0 {
			next.ServeHTTP(w, r)
			return
		}
		ex := rn.exchanges.Get().(*exchange)
		ex.begin(rn, chain, rn.o.ClientIP(r), r.Method, r.Host, r.Context(), time.Time{})
		defer ex.Close()
		ex.page = rn.sitePage(r)
		ex.request(r.URL.EscapedPath(), r.URL.RawQuery, httpHeader(r.Header))
		ex.deliver(next, w, r)
	})
}

// sitePage is the site's HTML error page for r when r takes HTML, else nil.
func (rn *Runner) sitePage(r *http.Request) []byte {
	if rn.o.ErrorPage == nil {
		return nil
	}
	if page := rn.o.ErrorPage(r); len(page) > 0 && proxy.AcceptsHTML(r.Header.Values("Accept")) {
		return page
	}
	return nil
}

// FastHooks returns the hooks the cache's fast path runs for a site
// (cache.WithFastHooks); chain returns the site's chain for a request, as
// Options.Chain does.
func (rn *Runner) FastHooks(chain func() *plugins.Chain) cache.FastHooks {
	return fastHooks{rn: rn, chain: chain}
}

type fastHooks struct {
	rn    *Runner
	chain func() *plugins.Chain
}

// BeginFast implements cache.FastHooks.
func (fh fastHooks) BeginFast(req *cache.FastHookRequest) (cache.FastCall, bool) {
	if fh.rn.ownClientIP {
		return nil, false
	}
	chain := fh.chain()
	if chain == nil || len(chain.Entries) == 0 {
		return nil, true
	}
	ex := fh.rn.exchanges.Get().(*exchange)
	ex.begin(fh.rn, chain, req.Client.Addr().Unmap(), req.Method, req.Host, context.Background(), req.Start)
	ex.request(req.Path, req.RawQuery, fastRequestHeader{req})
	return ex, true
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
//
// It runs in two steps, so that the fast path can run the first and hand
// the second to net/http: request runs on_request of each entry and
// records what the plugins asked (the request changes in order, their
// decisions, a direct answer), reading the request through a view that
// shows the changes made so far; deliver carries the record out on the
// server's request and serves it. On the fast path, Response runs the
// response phase on the hit's header block instead.
type exchange struct {
	rn     *Runner
	opts   *Options
	chain  *plugins.Chain
	x      *plugins.Exchange
	ctx    context.Context // the request step's only
	base   headerView      // the incoming request's headers, request step only
	req    abi.Request
	resp   abi.Response
	act    abi.Actions
	ran    int // entries whose on_request ran (successfully or not)
	skip   int // entry that answered directly or failed closed (no on_response), -1
	dir    *Directives
	respOp []headerOp // response header changes asked in on_request
	rw     responseWriter

	// The record of the request step.
	path, query       string               // the path (escaped) and query as the plugins left them
	newPath, newRaw   string               // a path rewrite: URL.Path and RawPath
	pathSet, querySet bool                 // rewritten
	hops              []cache.HeaderChange // request header changes, names canonical, in order
	origin, cacheKey  string
	ttl               time.Duration
	noStore           bool
	answer            []byte // a direct answer's body (skip's), copied
	failed            error  // a fail-closed chain's on_request failure (skip's)
	failText          string // the fail-closed 503's body, once made (failPage)
	// page is the site's HTML error page when the request takes HTML
	// (Options.ErrorPage); failHTML: failText was made from it.
	page     []byte
	failHTML bool

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

// begin starts the exchange for a request of chain.
func (ex *exchange) begin(rn *Runner, chain *plugins.Chain, ip netip.Addr, method, host string, ctx context.Context, start time.Time) {
	opts := rn.o
	var geo plugins.GeoInfo
	if opts.Geo != nil && ip.IsValid() {
		geo.Country, geo.Region, geo.Lat, geo.Lon, geo.Known = opts.Geo.GeoLookup(ip)
	}
	ex.rn, ex.opts, ex.chain, ex.skip, ex.ran, ex.ctx = rn, opts, chain, -1, 0, ctx
	ex.copied, ex.ownHeader, ex.ownURL = false, false, false
	ex.pathSet, ex.querySet, ex.noStore = false, false, false
	ex.ttl = 0
	ex.x = opts.Host.BeginAt(chain, geo, start)
	// Field by field: a whole-struct assignment is a bulk copy with
	// write barriers while the GC runs.
	q := &ex.req
	q.Method, q.Host, q.PoP, q.PoPRegion, q.ClientIP, q.ClientAddr = method, host, opts.PoP, opts.PoPRegion, "", ip
	q.Country, q.Region = "", ""
	if geo.Known {
		q.Country, q.Region = geo.Country, geo.Region
	}
	q.Time = ex.x.Time() // the Host's clock (plugins.Options.Now in tests)
}

// Close ends the exchange and recycles it (cache.FastCall).
func (ex *exchange) Close() {
	ex.x.Close()
	rn := ex.rn
	ex.recycle()
	rn.exchanges.Put(ex)
}

// recycle drops what the exchange points to, so a pooled exchange keeps no
// request, writer or large buffer alive.
func (ex *exchange) recycle() {
	ex.rn, ex.opts, ex.chain, ex.x, ex.dir, ex.ctx, ex.base, ex.failed = nil, nil, nil, nil, nil, nil, nil, nil
	ex.rw = responseWriter{}
	clear(ex.respOp)
	ex.respOp = ex.respOp[:0]
	clear(ex.hops)
	ex.hops = ex.hops[:0]
	ex.spare = nil
	ex.path, ex.query, ex.newPath, ex.newRaw, ex.origin, ex.cacheKey, ex.failText = "", "", "", "", "", "", ""
	ex.page, ex.failHTML = nil, false
	clear(ex.req.Headers)
	clear(ex.resp.Headers)
	if cap(ex.act.Body) > 64<<10 {
		ex.act.Body = nil
	}
	if cap(ex.answer) > 64<<10 {
		ex.answer = nil
	}
}

// request runs on_request of each entry in order (the request step): each
// plugin sees the request as the ones before it left it.
func (ex *exchange) request(path, query string, base headerView) {
	ex.path, ex.query, ex.base = path, query, base
	chain := ex.chain
	for i := range chain.Entries {
		e := &chain.Entries[i]
		ex.req.Path, ex.req.Query = ex.path, ex.query
		ex.req.Headers = ex.selectRequestHeaders(ex.req.Headers[:0], e.RequestHeaders)
		ex.ran = i + 1
		if err := ex.x.Request(ex.ctx, i, &ex.req, &ex.act); err != nil {
			if chain.FailClosed {
				ex.failed, ex.skip = err, i
				break
			}
			continue // fail open: skip this plugin
		}
		ex.record()
		if ex.act.Respond {
			ex.skip = i
			ex.answer = append(ex.answer[:0], ex.act.Body...)
			break
		}
	}
	ex.ctx, ex.base = nil, nil
}

// record notes the request-phase actions in ex.act.
func (ex *exchange) record() {
	a := &ex.act
	for _, name := range a.RemoveRequestHeaders {
		ex.hops = append(ex.hops, cache.HeaderChange{Name: ex.names.canonical(name), Remove: true})
	}
	for _, hd := range a.SetRequestHeaders {
		ex.hops = append(ex.hops, cache.HeaderChange{Name: ex.names.canonical(hd.Name), Value: hd.Value})
	}
	if a.RewritePath {
		p, err := url.PathUnescape(a.Path)
		if err != nil {
			p = a.Path // not %-encoded after all: take it literally
		}
		// EscapedPath falls back to encoding Path when RawPath does not match it.
		u := url.URL{Path: p, RawPath: a.Path}
		ex.newPath, ex.newRaw, ex.path, ex.pathSet = p, a.Path, u.EscapedPath(), true
	}
	if a.RewriteQuery {
		ex.query, ex.querySet = a.Query, true
	}
	if a.Origin != "" {
		ex.origin = a.Origin
	}
	if a.CacheKey != "" {
		ex.cacheKey = a.CacheKey
	}
	if a.HasTTL && a.TTL > 0 {
		ex.ttl = a.TTL
	}
	if (a.NoStore || (a.HasTTL && a.TTL == 0)) && !ex.noStore {
		ex.noStore = true
		// The cache honours the RFC 9111 request directive: nothing of this
		// exchange is stored (a response already stored may still be served).
		cc := "no-store"
		if vs := ex.requestValues("Cache-Control"); len(vs) > 0 && vs[0] != "" {
			cc = vs[0] + ", no-store"
		}
		ex.hops = append(ex.hops, cache.HeaderChange{Name: "Cache-Control", Value: cc})
	}
	for _, name := range a.RemoveResponseHeaders {
		ex.respOp = append(ex.respOp, headerOp{name: name, remove: true})
	}
	for _, h := range a.SetResponseHeaders {
		ex.respOp = append(ex.respOp, headerOp{name: h.Name, value: h.Value})
	}
}

// requestValues returns the values of request header canon (canonical) as
// the plugins so far left it.
func (ex *exchange) requestValues(canon string) []string {
	for i := len(ex.hops) - 1; i >= 0; i-- {
		if op := &ex.hops[i]; op.Name == canon {
			if op.Remove {
				return nil
			}
			return []string{op.Value}
		}
	}
	return ex.base.values(canon)
}

// changed reports whether the request step changed header canon.
func (ex *exchange) changed(canon string) bool {
	for i := range ex.hops {
		if ex.hops[i].Name == canon {
			return true
		}
	}
	return false
}

// selectRequestHeaders appends the request headers named in names ("*":
// all) as the plugins so far left them.
func (ex *exchange) selectRequestHeaders(dst []abi.Header, names []string) []abi.Header {
	for _, n := range names {
		if n == "*" {
			return ex.allRequestHeaders(dst)
		}
		for _, v := range ex.requestValues(ex.names.canonical(n)) {
			dst = append(dst, abi.Header{Name: n, Value: v})
		}
	}
	return dst
}

// allRequestHeaders appends every request header as the plugins so far
// left it. (Apart from selectRequestHeaders: the closure would move that
// one's dst to the heap on every call.)
func (ex *exchange) allRequestHeaders(dst []abi.Header) []abi.Header {
	ex.base.each(func(k, v string) {
		if !ex.changed(k) {
			dst = append(dst, abi.Header{Name: k, Value: v})
		}
	})
	for i := range ex.hops {
		op := &ex.hops[i]
		if ex.lastOp(i) && !op.Remove {
			dst = append(dst, abi.Header{Name: op.Name, Value: op.Value})
		}
	}
	return dst
}

// lastOp reports whether hops[i] is the last change of its header.
func (ex *exchange) lastOp(i int) bool {
	for j := i + 1; j < len(ex.hops); j++ {
		if ex.hops[j].Name == ex.hops[i].Name {
			return false
		}
	}
	return true
}

// deliver serves r as the request step left it (the delivery step): the
// fail-closed 503, the direct answer, or next with the response phase
// around it.
func (ex *exchange) deliver(next http.Handler, w http.ResponseWriter, r *http.Request) {
	if ex.failed != nil {
		middleware.MarkGenerated(r.Context(), "plugin-failure")
		ex.failClosed(w, r, ex.chain.Entries[ex.skip].Plugin, ex.failed)
		return
	}
	pending := ex.skip < 0 && ex.x.ResponsePending()
	r = ex.materialize(r, pending)
	if ex.skip >= 0 {
		ex.respond(w, r)
		return
	}
	if !pending && len(ex.respOp) == 0 {
		// Nothing to do at delivery: the plugins only looked (the common
		// case of a plugin without on_response that continued).
		next.ServeHTTP(w, r)
		return
	}
	ex.rw = responseWriter{ResponseWriter: w, ex: ex, r: r}
	rw := &ex.rw
	next.ServeHTTP(rw, r)
	if !rw.wroteHeader {
		rw.WriteHeader(http.StatusOK)
	}
}

// materialize applies the request step's record to r, the caller's request
// (which is never changed: the changes go to a shallow copy). pending: an
// on_response is to run, which may leave Directives for the cache.
func (ex *exchange) materialize(r *http.Request, pending bool) *http.Request {
	switch {
	case ex.decided() || pending:
		r = ex.own(r) // decisions for the layers after: Directives
		ex.dir.Origin, ex.dir.CacheKey, ex.dir.TTL, ex.dir.NoStore = ex.origin, ex.cacheKey, ex.ttl, ex.noStore
	case len(ex.hops) > 0 || ex.pathSet || ex.querySet:
		// Only the request changes: a copy of it, without the Directives'
		// context (one allocation less on the common header injection).
		r = ex.copyRequest(r)
	}
	if len(ex.hops) > 0 {
		// Value slots for the headers set and the response headers asked
		// for (set at delivery: one allocation less).
		sets := 0
		for i := range ex.hops {
			if !ex.hops[i].Remove {
				sets++
			}
		}
		h := ex.header(r, sets, sets+len(ex.respOp))
		for _, op := range ex.hops {
			if op.Remove {
				delete(h, op.Name)
			} else {
				ex.setHeader(h, op.Name, op.Value)
			}
		}
	}
	if ex.pathSet {
		u := ex.url(r)
		u.Path, u.RawPath = ex.newPath, ex.newRaw
		r.RequestURI = u.RequestURI()
	}
	if ex.querySet {
		u := ex.url(r)
		u.RawQuery = ex.query
		r.RequestURI = u.RequestURI()
	}
	ctx := r.Context()
	if ex.cacheKey != "" {
		ctx = cache.WithKey(ctx, ex.cacheKey)
	}
	if ex.ttl > 0 {
		ctx = cache.WithTTL(ctx, ex.ttl)
	}
	if ctx != r.Context() {
		r = r.WithContext(ctx)
	}
	return r
}

// decided reports whether the plugins left a decision for the layers after
// them (origin, cache key, TTL, no-store): the request needs Directives.
func (ex *exchange) decided() bool {
	return ex.origin != "" || ex.cacheKey != "" || ex.ttl > 0 || ex.noStore
}

// Plain implements cache.FastCall: no rewrite, no direct answer, no
// no-store (the cache key is CacheKey's; origin and TTL matter on a miss
// only, and a miss goes on to deliver with this exchange).
func (ex *exchange) Plain() bool {
	return ex.skip < 0 && !ex.pathSet && !ex.querySet && !ex.noStore
}

// CacheKey implements cache.FastCall.
func (ex *exchange) CacheKey() string { return ex.cacheKey }

// RequestHeaderChanges implements cache.FastCall.
func (ex *exchange) RequestHeaderChanges() []cache.HeaderChange { return ex.hops }

// Response implements cache.FastCall: the response step on a fast hit.
func (ex *exchange) Response(status int, h *cache.FastHeader) bool {
	_, failed := ex.response(context.Background(), fastHeader{h}, status)
	return !failed
}

// FailBody implements cache.FastCall.
func (ex *exchange) FailBody(id string) string { return ex.failPage(id) }

// failPage is the body of the chain's fail-closed 503 for the request of
// id: the page the PoP's other own answers have (proxy.PageBody), made once
// per exchange.
func (ex *exchange) failPage(id string) string {
	switch {
	case ex.failText != "":
	case ex.page != nil:
		ex.failText, ex.failHTML = proxy.SitePage(ex.page, http.StatusServiceUnavailable, cache.ViaName(ex.opts.PoP), id), true
	default:
		msg := fmt.Sprintf("a plugin of site %q failed, and the site is set to fail closed. Its owner can read why with: meridian plugin logs --site %s", ex.chain.Site, ex.chain.Site)
		if plugins.KindOf(ex.failed) == plugins.KindUnavailable {
			// Not a failure of the plugin: this PoP has not loaded it yet
			// (starting, or its bytes could not be fetched).
			msg = fmt.Sprintf("site %q runs a plugin that this PoP has not loaded yet (it is starting, or cannot fetch the plugin now), and the site is set to fail closed, so it is not served without it. Try again in a moment; its owner can read more with: meridian plugin logs --site %s", ex.chain.Site, ex.chain.Site)
		}
		ex.failText = proxy.PageBody(http.StatusServiceUnavailable, cache.ViaName(ex.opts.PoP), msg, id)
	}
	return ex.failText
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

// url makes r.URL the exchange's own copy before a change.
func (ex *exchange) url(r *http.Request) *url.URL {
	if !ex.ownURL {
		u := *r.URL
		r.URL = &u
		ex.ownURL = true
	}
	return r.URL
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
	status, body := ex.act.Status, append([]byte(nil), ex.answer...)
	h := w.Header()
	for _, hd := range ex.act.RespondHeaders {
		h.Add(hd.Name, hd.Value)
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	status, failed := ex.response(r.Context(), httpHeader(h), status)
	w.WriteHeader(status)
	if failed {
		_, _ = io.WriteString(w, ex.failText)
	} else if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// response applies on_request's response header changes, then runs
// on_response in reverse order. It returns the status to send and whether a
// fail-closed chain's on_response failed (then the status is 503 and the
// original body must be dropped).
func (ex *exchange) response(ctx context.Context, h responseHeader, status int) (int, bool) {
	for _, op := range ex.respOp {
		if op.remove {
			ex.delResponseHeader(h, op.name)
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
		resp.Headers = ex.selectResponseHeaders(resp.Headers[:0], h, e.ResponseHeaders)
		ran, err := ex.x.Response(ctx, i, resp, &ex.act)
		if !ran {
			continue
		}
		if err != nil {
			if ex.chain.FailClosed {
				ex.opts.Logger.Warn("plugin on_response failed; answering 503", "site", ex.chain.Site, "plugin", e.Plugin, "err", err)
				middleware.MarkGenerated(ctx, "plugin-failure") // ctx: the request's on net/http, a background one on the fast path
				h.failed(func() (string, bool) {
					body := ex.failPage(middleware.GetRequestID(ctx))
					return body, ex.failHTML
				})
				return http.StatusServiceUnavailable, true
			}
			continue
		}
		a := &ex.act
		for _, name := range a.RemoveResponseHeaders {
			ex.delResponseHeader(h, name)
		}
		for _, hd := range a.SetResponseHeaders {
			ex.setResponseHeader(h, hd.Name, hd.Value)
		}
		if ex.dir == nil {
			continue // a direct answer or a fast hit: no cache to tell
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
// several plugins may each set a cookie. The fields that frame the message
// are the server's (cache.FramingField): a plugin's Content-Length would
// cut or stall the body the cache writes.
func (ex *exchange) setResponseHeader(h responseHeader, name, value string) {
	key := ex.names.canonical(name)
	if cache.FramingField(key) {
		return
	}
	if key == "Set-Cookie" {
		h.add(key, value)
		return
	}
	if hh, ok := h.(httpHeader); ok {
		ex.setHeader(http.Header(hh), key, value)
		return
	}
	h.set(key, value)
}

// delResponseHeader removes a header, but not one that frames the message.
func (ex *exchange) delResponseHeader(h responseHeader, name string) {
	if key := ex.names.canonical(name); !cache.FramingField(key) {
		h.del(key)
	}
}

func (ex *exchange) failClosed(w http.ResponseWriter, r *http.Request, plugin string, err error) {
	id := middleware.GetRequestID(r.Context())
	lv := slog.LevelWarn
	if plugins.KindOf(err) == plugins.KindUnavailable {
		// Whoever left the plugin unavailable logged why, once; a line per
		// request would bury it.
		lv = slog.LevelDebug
	}
	ex.opts.Logger.Log(r.Context(), lv, "plugin failed; site fails closed: answering 503", "site", ex.chain.Site, "plugin", plugin, "kind", plugins.KindOf(err), "err", err, "request_id", id)
	body := ex.failPage(id)
	httpHeader(w.Header()).failed(func() (string, bool) { return body, ex.failHTML })
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = io.WriteString(w, body)
}

// selectResponseHeaders appends the headers named in names ("*": all)
// from h.
func (ex *exchange) selectResponseHeaders(dst []abi.Header, h responseHeader, names []string) []abi.Header {
	for _, n := range names {
		if n == "*" {
			return allHeaders(dst, h)
		}
		for _, v := range h.values(ex.names.canonical(n)) {
			dst = append(dst, abi.Header{Name: n, Value: v})
		}
	}
	return dst
}

// allHeaders appends every header of h (apart from its caller, and not
// inlined into it, as allRequestHeaders).
//
//go:noinline
func allHeaders(dst []abi.Header, h headerView) []abi.Header {
	h.each(func(k, v string) { dst = append(dst, abi.Header{Name: k, Value: v}) })
	return dst
}

// headerView reads a request's headers: net/http's, or the fast path's
// parsed request.
type headerView interface {
	values(canon string) []string
	each(fn func(name, value string))
}

// responseHeader is the response header the response step changes:
// net/http's, or the fast path's header block.
type responseHeader interface {
	headerView
	set(canon, value string)
	add(canon, value string)
	del(canon string)
	// failed makes the header that of the fail-closed 503 whose body page
	// gives, HTML or plain text (on the fast path, which writes its own
	// 503, it does nothing).
	failed(page func() (body string, html bool))
}

type httpHeader http.Header

func (h httpHeader) values(canon string) []string { return h[canon] }

func (h httpHeader) each(fn func(name, value string)) {
	for k, vs := range h {
		for _, v := range vs {
			fn(k, v)
		}
	}
}

func (h httpHeader) set(canon, value string) { h[canon] = []string{value} }
func (h httpHeader) add(canon, value string) { h[canon] = append(h[canon], value) }
func (h httpHeader) del(canon string)        { delete(h, canon) }

// failed makes h the header of the fail-closed 503, the fields of the
// PoP's other own answers (proxy.WritePage): the request id stays, so the
// client can quote it.
func (h httpHeader) failed(page func() (string, bool)) {
	body, html := page()
	id := h[middleware.RequestIDHeader]
	clear(h)
	if id != nil {
		h[middleware.RequestIDHeader] = id
	}
	h["Content-Type"] = []string{"text/plain; charset=utf-8"}
	if html {
		h["Content-Type"] = []string{"text/html; charset=utf-8"}
	}
	h["Cache-Control"] = []string{"no-store"}
	h["X-Content-Type-Options"] = []string{"nosniff"}
	// The 503's body is body whatever the handler goes on writing (it is
	// swallowed): with its length the connection stays reusable.
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
}

type fastRequestHeader struct{ r *cache.FastHookRequest }

func (h fastRequestHeader) values(canon string) []string     { return h.r.Values(canon) }
func (h fastRequestHeader) each(fn func(name, value string)) { h.r.Each(fn) }

type fastHeader struct{ h *cache.FastHeader }

func (h fastHeader) values(canon string) []string     { return h.h.Values(canon) }
func (h fastHeader) each(fn func(name, value string)) { h.h.Each(fn) }
func (h fastHeader) set(canon, value string)          { h.h.Set(canon, value) }
func (h fastHeader) add(canon, value string)          { h.h.Add(canon, value) }
func (h fastHeader) del(canon string)                 { h.h.Del(canon) }
func (h fastHeader) failed(func() (string, bool))     {}

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
	final, failed := rw.ex.response(rw.r.Context(), httpHeader(rw.ResponseWriter.Header()), status)
	rw.ResponseWriter.WriteHeader(final)
	if failed {
		rw.swallow = true
		_, _ = io.WriteString(rw.ResponseWriter, rw.ex.failText)
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
