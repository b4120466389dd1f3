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
	// Now is the clock handed to plugins; nil is time.Now.
	Now func() time.Time
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
// no plugin ran. The origin pool reads Origin from it.
func DirectivesFrom(ctx context.Context) *Directives {
	d, _ := ctx.Value(directivesKey{}).(*Directives)
	return d
}

// New returns the middleware.
func New(opts Options) func(http.Handler) http.Handler {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ClientIP == nil {
		opts.ClientIP = remoteIP
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var chain *plugins.Chain
			if opts.Chain != nil {
				chain = opts.Chain(r)
			}
			if chain == nil || len(chain.Entries) == 0 {
				next.ServeHTTP(w, r)
				return
			}
			run(opts, chain, next, w, r)
		})
	}
}

func remoteIP(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, _ := netip.ParseAddr(host)
	return a.Unmap()
}

// exchange is one request's run through the chain.
type exchange struct {
	opts   Options
	chain  *plugins.Chain
	x      *plugins.Exchange
	req    abi.Request
	act    abi.Actions
	ran    int // entries whose on_request ran (successfully or not)
	skip   int // entry that answered directly (its on_response is not run), -1
	dir    *Directives
	respOp []headerOp // response header changes asked in on_request
}

type headerOp struct {
	name, value string
	remove      bool
}

func run(opts Options, chain *plugins.Chain, next http.Handler, w http.ResponseWriter, r *http.Request) {
	ip := opts.ClientIP(r)
	var geo plugins.GeoInfo
	if opts.Geo != nil && ip.IsValid() {
		geo.Country, geo.Region, geo.Lat, geo.Lon, geo.Known = opts.Geo.GeoLookup(ip)
	}
	ex := &exchange{opts: opts, chain: chain, x: opts.Host.Begin(chain, geo), skip: -1, dir: &Directives{}}
	defer ex.x.Close()
	ex.req = abi.Request{Method: r.Method, Host: r.Host, PoP: opts.PoP, PoPRegion: opts.PoPRegion, Time: opts.Now()}
	if ip.IsValid() {
		ex.req.ClientIP = ip.String()
	}
	if geo.Known {
		ex.req.Country, ex.req.Region = geo.Country, geo.Region
	}

	ctx := context.WithValue(r.Context(), directivesKey{}, ex.dir)
	r = r.Clone(ctx) // plugins change headers and URL: never touch the caller's request
	for i := range chain.Entries {
		e := &chain.Entries[i]
		ex.req.Path, ex.req.Query = r.URL.EscapedPath(), r.URL.RawQuery
		ex.req.Headers = selectHeaders(ex.req.Headers[:0], r.Header, e.RequestHeaders)
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
	rw := &responseWriter{ResponseWriter: w, ex: ex, r: r}
	next.ServeHTTP(rw, r)
	if !rw.wroteHeader {
		rw.WriteHeader(http.StatusOK)
	}
}

// apply carries out the request-phase actions in ex.act on r.
func (ex *exchange) apply(r *http.Request) *http.Request {
	a := &ex.act
	for _, name := range a.RemoveRequestHeaders {
		r.Header.Del(name)
	}
	for _, h := range a.SetRequestHeaders {
		r.Header.Set(h.Name, h.Value)
	}
	if a.RewritePath {
		p, err := url.PathUnescape(a.Path)
		if err != nil {
			p = a.Path // not %-encoded after all: take it literally
		}
		// EscapedPath falls back to encoding Path when RawPath does not match it.
		r.URL.Path, r.URL.RawPath = p, a.Path
		r.RequestURI = r.URL.RequestURI()
	}
	if a.RewriteQuery {
		r.URL.RawQuery = a.Query
		r.RequestURI = r.URL.RequestURI()
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
		if cc := r.Header.Get("Cache-Control"); cc != "" {
			r.Header.Set("Cache-Control", cc+", no-store")
		} else {
			r.Header.Set("Cache-Control", "no-store")
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
			h.Del(op.name)
		} else {
			setResponseHeader(h, op.name, op.value)
		}
	}
	resp := abi.Response{Status: status, Time: ex.req.Time}
	for i := ex.ran - 1; i >= 0; i-- {
		if i == ex.skip {
			continue
		}
		e := &ex.chain.Entries[i]
		resp.Headers = selectHeaders(resp.Headers[:0], h, e.ResponseHeaders)
		ran, err := ex.x.Response(r.Context(), i, &resp, &ex.act)
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
			h.Del(name)
		}
		for _, hd := range a.SetResponseHeaders {
			setResponseHeader(h, hd.Name, hd.Value)
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
func setResponseHeader(h http.Header, name, value string) {
	if http.CanonicalHeaderKey(name) == "Set-Cookie" {
		h.Add(name, value)
		return
	}
	h.Set(name, value)
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
func selectHeaders(dst []abi.Header, h http.Header, names []string) []abi.Header {
	for _, n := range names {
		if n == "*" {
			for k, vs := range h {
				for _, v := range vs {
					dst = append(dst, abi.Header{Name: k, Value: v})
				}
			}
			return dst
		}
		for _, v := range h.Values(n) {
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
