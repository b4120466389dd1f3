// Package gateway is a point of presence: the HTTP server that routes each
// request by Host to its site, runs it through middleware, plugins and the
// cache to the site's origin, serves the admin API, and publishes the PoP's
// health beacon.
//
// Cache policy lives in gateway/cache, proxy header rules in gateway/proxy,
// origin selection in gateway/origin; this package wires them per site and
// owns the listeners.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/meridian-edge/meridian/gateway/cache"
	"github.com/meridian-edge/meridian/gateway/cache/policy"
	"github.com/meridian-edge/meridian/gateway/proxy"
	"github.com/meridian-edge/meridian/gateway/realip"
	"github.com/meridian-edge/meridian/gateway/tlsedge"
	"github.com/meridian-edge/meridian/internal/beacon"
	"github.com/meridian-edge/meridian/internal/statesync"
	"github.com/meridian-edge/meridian/middleware"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Options configures a PoP.
type Options struct {
	// ID and Region name the PoP in beacons, headers and metrics.
	ID, Region string
	// HTTPAddr and AdminAddr are host:port to listen on (port 0 picks one).
	HTTPAddr, AdminAddr string
	// Sites are served by Host.
	Sites []Site
	// Capacity in requests/s is reported in beacons; 0 means unlimited.
	Capacity float64
	// NATS, when set, carries the PoP's beacons.
	NATS *nats.Conn
	// BeaconInterval defaults to 1s.
	BeaconInterval time.Duration
	// Logger defaults to discarding.
	Logger *slog.Logger
	// TLS configures HTTPS and HTTP/3; the zero value serves plain HTTP only.
	TLS TLS
	// Plugins, when set, runs the site owners' plugin chains: it wraps each
	// site's cache handler (the request's site is in the context, see
	// SiteFromContext).
	Plugins func(http.Handler) http.Handler
	// PluginSites reports whether a site runs plugins now. The fast hit
	// path (cache.Fast) answers hits only for sites without plugins; with
	// Plugins set and PluginSites nil, no site's hits take it.
	PluginSites func(site string) bool
	// PluginHooks, when set beside Plugins, returns the hooks that run a
	// site's plugin chain on the fast hit path (middleware/plugin's
	// Runner.FastHooks): a plugin site's hits then cost about what a hit
	// without plugins does, plus the plugins. Without it, every request of
	// a plugin site goes through net/http and its middleware chain.
	PluginHooks func(site string) cache.FastHooks
	// NoFastPath serves every plain HTTP request through net/http and the
	// middleware chain, without cache.Fast (for comparisons and as an
	// escape hatch).
	NoFastPath bool
	// AdminRoutes are extra admin API handlers by chi pattern, e.g.
	// "/admin/plugins/*" for plugin upload and rollout.
	AdminRoutes map[string]http.Handler
	// Cache is the PoP's HTTP cache, shared by its sites; nil makes one with
	// a 64 MiB memory tier (tests, small deployments). Give it this PoP's
	// ID as its cache.Options.PoPID: its metrics' pop label then matches
	// this PoP's other metrics, and Via says "meridian-<ID>".
	Cache *cache.Cache
	// Sync is the PoP's replica of the shared state (purges, plugin
	// deployments, plugin KV); nil runs the PoP alone.
	Sync *statesync.Node
	// DrainFile, when set, remembers an operator's drain (SetDraining, the
	// admin API's /admin/drain) across restarts: a PoP drained for
	// maintenance stays out of the DNS answers when it comes back, until the
	// drain is turned off. The file exists while drained.
	DrainFile string
	// Credentials guard the admin API's changes; the zero value allows none
	// (and the refusals then say that no token is configured). SetCredentials
	// replaces them while the PoP runs.
	Credentials Credentials
	// ProxyProtocol, with Trusted set, reads clients' addresses from PROXY
	// protocol headers (v1, v2) on the HTTP and HTTPS listeners (the admin
	// listener is never wrapped), for a PoP behind an L4 load balancer.
	// Its Logger, Registerer and PoP are the PoP's. It cannot be combined
	// with TLS.HTTP3: QUIC carries no header. SetProxyProtocol changes it
	// while the PoP serves.
	ProxyProtocol realip.Options
	// RealIP, with Trusted set, takes each request's client from the header
	// that trusted L7 proxies in front of the PoP add (X-Forwarded-For,
	// Forwarded, or a single-address header), on every path: the access
	// log, X-Forwarded-For to the origin, plugins, and the cache's fast
	// path. It applies after ProxyProtocol: the peer it checks is the
	// address a PROXY header gave. SetRealIP changes it while the PoP
	// serves.
	RealIP realip.HeaderOptions
	// Registry receives the PoP's metrics and is served on the admin
	// /metrics; nil makes a new one. Pass one in to register the metrics of
	// components built before the PoP (origin pools, the cache).
	Registry *prometheus.Registry
}

// PoP is a running point of presence.
type PoP struct {
	opts     Options
	log      *slog.Logger
	registry *prometheus.Registry
	cache    *cache.Cache
	ownCache bool
	router   atomic.Pointer[router]
	creds    atomic.Pointer[Credentials] // the admin API's (SetCredentials)
	load     *loadTracker
	draining atomic.Bool

	httpSrv, adminSrv *http.Server
	fast              *cache.FastListener // nil when plain HTTP goes through net/http only
	observers         []middleware.Observer
	metrics           *middleware.RequestMetrics
	httpsSrv          *tlsedge.Server
	policies          *tlsedge.Policies // HTTPS policies, nil without HTTPS
	secure            atomic.Pointer[http.Handler]
	httpLn, adminLn   net.Listener
	// realIP finds clients behind L7 proxies; ppMu guards ppListeners,
	// the public listeners' PROXY protocol wrappers (see proxyProtocol).
	realIP      *realip.Resolver
	ppMu        sync.Mutex
	ppListeners []*realip.Listener

	cancel      context.CancelFunc
	beaconStop  context.CancelFunc
	wg          sync.WaitGroup
	unknownHost prometheus.Counter

	// viaName is the PoP's name in Via and CDN-Loop ("meridian-<ID>", as
	// its cache's proxies say it); via holds its Via entries by protocol.
	viaName string
	via     [4]string // HTTP/1.0, 1.1, 2, 3
}

// New builds a PoP; nothing listens until Start.
func New(opts Options) (*PoP, error) {
	if opts.ID == "" {
		return nil, errors.New("gateway: PoP id is empty")
	}
	if opts.BeaconInterval == 0 {
		opts.BeaconInterval = time.Second
	}
	if len(opts.ProxyProtocol.Trusted) > 0 && opts.TLS.HTTP3 {
		return nil, fmt.Errorf("gateway %s: the PROXY protocol cannot be used with HTTP/3 (QUIC carries no header, so h3 clients would be seen as the balancer); turn one off", opts.ID)
	}
	if err := opts.ProxyProtocol.Validate(); err != nil {
		return nil, fmt.Errorf("gateway %s: proxy protocol: %w", opts.ID, err)
	}
	realIP, err := realip.NewResolver(opts.RealIP)
	if err != nil {
		return nil, fmt.Errorf("gateway %s: real ip: %w", opts.ID, err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &PoP{
		opts:     opts,
		log:      log.With("pop", opts.ID),
		registry: opts.Registry,
		load:     newLoadTracker(time.Now()),
		realIP:   realIP,
	}
	p.creds.Store(&opts.Credentials)
	p.viaName = cache.ViaName(opts.ID)
	p.via = [4]string{proxy.ViaValue(1, 0, p.viaName), proxy.ViaValue(1, 1, p.viaName), proxy.ViaValue(2, 0, p.viaName), proxy.ViaValue(3, 0, p.viaName)}
	if p.registry == nil {
		p.registry = prometheus.NewRegistry()
	}
	// The Go runtime's and the process's collectors, unless the registry's
	// owner registered them already (internal/stack puts them on every
	// registry it serves).
	for _, c := range []prometheus.Collector{collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		if err := p.registry.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, fmt.Errorf("gateway %s: register runtime metrics: %w", opts.ID, err)
			}
		}
	}
	p.unknownHost = prometheus.NewCounter(prometheus.CounterOpts{
		Name:        "meridian_http_unknown_host_total",
		Help:        "Requests refused with 421 because their Host matched no site.",
		ConstLabels: prometheus.Labels{"pop": opts.ID},
	})
	p.registry.MustRegister(p.unknownHost)
	p.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "meridian_pop_draining",
		Help:        "1 while the PoP drains (admin API or shutdown.drain): beacons and /healthz report it unhealthy.",
		ConstLabels: prometheus.Labels{"pop": opts.ID},
	}, func() float64 {
		if p.draining.Load() {
			return 1
		}
		return 0
	}))
	if opts.DrainFile != "" {
		if _, err := os.Stat(opts.DrainFile); err == nil {
			p.draining.Store(true)
			p.log.Warn("starting drained: the drain set through the admin API before the restart still holds; POST /admin/drain?off=1 ends it", "file", opts.DrainFile)
		}
	}
	p.metrics = middleware.NewPoPRequestMetrics(p.registry, opts.ID, siteName)
	p.metrics.InitCut(middleware.UnknownSite, cutReasons()...)
	p.observers = []middleware.Observer{func(r *http.Request, status int, bytes int64, d time.Duration) {
		ctx := r.Context()
		site := siteName(r)
		p.record(ctx, site, middleware.Generated(ctx), middleware.Access{
			RequestID: middleware.GetRequestID(ctx), Remote: r.RemoteAddr, Method: r.Method, Host: r.Host,
			URI: r.RequestURI, Proto: r.Proto, Status: status, Bytes: bytes, Elapsed: d,
			BodyError: middleware.BodyError(ctx), Site: site, Cache: middleware.CacheResult(middleware.CacheStatus(ctx)),
			UserAgent: headerValue(r.Header, "User-Agent"), Referer: headerValue(r.Header, "Referer"),
			Origin: middleware.Origin(ctx),
		})
	}}
	p.cache = opts.Cache
	if p.cache == nil {
		c, err := cache.New(cache.Options{L1Bytes: 64 << 20, PoPID: opts.ID, Logger: p.log, Registerer: p.registry})
		if err != nil {
			return nil, fmt.Errorf("gateway %s: cache: %w", opts.ID, err)
		}
		p.cache, p.ownCache = c, true
	}
	rt, err := p.buildRouter(opts.Sites)
	if err != nil {
		return nil, err
	}
	p.router.Store(rt)
	for _, s := range rt.all {
		s.Origin.Activate() // its servers' down series are reported from now on
	}
	return p, nil
}

// Registry is the PoP's own metrics registry, served on the admin /metrics;
// components created for this PoP (origin pools, cache, plugins) register here.
func (p *PoP) Registry() *prometheus.Registry { return p.registry }

func (p *PoP) buildRouter(sites []Site) (*router, error) {
	entries := make([]*siteEntry, len(sites))
	for i, s := range sites {
		if s.Origin == nil {
			return nil, fmt.Errorf("gateway: site %s has no origin pool", s.Name)
		}
		ch := p.siteHandler(s)
		h := ch
		if p.opts.Plugins != nil {
			h = p.opts.Plugins(ch)
		}
		e := &siteEntry{Site: s, handler: h, cache: ch}
		p.metrics.InitCut(s.Name, cutReasons()...)
		if p.opts.Plugins != nil && p.opts.PluginHooks != nil {
			e.hooked = cache.WithFastHooks(ch, p.opts.PluginHooks(s.Name))
		}
		entries[i] = e
	}
	return newRouter(entries)
}

// siteHandler is the per-site request path after routing: the cache, which
// owns proxying to the origin on a miss.
func (p *PoP) siteHandler(s Site) http.Handler {
	pol := s.Cache
	pol.SiteID = s.Name
	return p.cache.Handler(pol, s.Origin)
}

// SetSites replaces the PoP's sites atomically: requests already routed finish
// on the old site, new ones see the new set. The old origin pools are closed
// once idle.
func (p *PoP) SetSites(sites []Site) error {
	rt, err := p.buildRouter(sites)
	if err != nil {
		return err
	}
	old := p.router.Swap(rt)
	// The new pools report before the old ones stop: no scrape in between
	// misses a site.
	for _, s := range rt.all {
		s.Origin.Activate()
	}
	for _, s := range old.all {
		s.Origin.Close()
	}
	return nil
}

// route finds the request's site once, before the middleware that needs it
// (metrics, logs, plugins) and the dispatch, so the hot path looks the Host up
// a single time.
func (p *PoP) route(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := p.router.Load().lookup(r.Host)
		if s != nil {
			r = r.WithContext(context.WithValue(r.Context(), siteKey{}, s))
		}
		next.ServeHTTP(w, r)
	})
}

// headerValue is the first value of the canonical field name, without
// Header.Get's canonicalisation.
func headerValue(h http.Header, name string) string {
	if v := h[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// ServeHTTP routes a request to its site: the whole proxy path of the PoP.
func (p *PoP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, ok := r.Header[proxy.CDNLoopHeader]; ok && proxy.LoopCount(r.Header, p.viaName) > 0 {
		// The request went through this PoP before (RFC 8586): a site
		// whose origin leads back here. Forwarding it again would recurse
		// (or, for a GET, wait on its own collapsed fetch until the origin
		// timeout).
		p.log.Warn("request looped back to this PoP (CDN-Loop names it): a site's origin leads back to the PoP; answering 508",
			"request_id", middleware.GetRequestID(r.Context()), "host", r.Host, "uri", r.RequestURI, "cdn_loop", r.Header.Values(proxy.CDNLoopHeader))
		proxy.WritePoPPage(w, r, p.viaName, proxy.Page{Status: http.StatusLoopDetected, Reason: proxy.DetailLoop,
			Message: fmt.Sprintf("the request came back to this PoP (its CDN-Loop header names %s): the origin of the site for host %q leads back to the PoP. "+
				"Point the site's origin at the origin server, not at a Meridian PoP.", p.viaName, normalizeHost(r.Host))})
		return
	}
	s, routed := r.Context().Value(siteKey{}).(*siteEntry)
	if !routed {
		s = p.router.Load().lookup(r.Host) // called without route, or an unknown host
	}
	if s == nil {
		p.unknownHost.Inc()
		proxy.WritePoPPage(w, r, p.viaName, proxy.Page{Status: http.StatusMisdirectedRequest, Reason: "unknown-host",
			Message: fmt.Sprintf("no site is configured for host %q at this PoP. Check the DNS name and the sites' hosts in the configuration.", normalizeHost(r.Host))})
		return
	}
	if !routed {
		r = r.WithContext(context.WithValue(r.Context(), siteKey{}, s))
	}
	if s.Cache.IgnoreClientDirectives {
		r = withoutClientDirectives(r)
	}
	s.handler.ServeHTTP(w, r)
}

// withoutClientDirectives returns r without its Cache-Control and Pragma
// fields (SitePolicy.IgnoreClientDirectives), keeping only-if-cached,
// which asks for less of the origin, never more. r itself is not changed:
// a request with neither field comes back as it is, others as a shallow
// copy with a new header map.
func withoutClientDirectives(r *http.Request) *http.Request {
	cc, hasCC := r.Header["Cache-Control"]
	_, hasPragma := r.Header["Pragma"]
	if !hasCC && !hasPragma {
		return r
	}
	r2 := *r
	r2.Header = r.Header.Clone()
	delete(r2.Header, "Cache-Control")
	delete(r2.Header, "Pragma")
	if hasCC && policy.ParseDirectives(cc).Has("only-if-cached") {
		r2.Header.Set("Cache-Control", "only-if-cached")
	}
	return &r2
}

type siteKey struct{}

// cutReasons are the reasons a response's body is cut for
// (middleware.MarkBodyError): every site's
// meridian_http_responses_cut_total has them from the start, at 0.
func cutReasons() []string {
	return []string{middleware.BodyTruncated, proxy.DetailOriginTimeout, proxy.DetailOriginError, "store-error"}
}

// SiteFromContext returns the name of the site a request was routed to, for
// the middleware that runs per site (plugins).
func SiteFromContext(ctx context.Context) string {
	if s, ok := ctx.Value(siteKey{}).(*siteEntry); ok {
		return s.Name
	}
	return ""
}

// SiteErrorPage returns the HTML error page (Site.Cache.ErrorPage) of the
// site a request was routed to, nil when it has none: for the middleware
// that answers for the site itself (a fail-closed plugin's 503).
func SiteErrorPage(ctx context.Context) []byte {
	if s, ok := ctx.Value(siteKey{}).(*siteEntry); ok {
		return s.Cache.ErrorPage
	}
	return nil
}

func siteName(r *http.Request) string {
	if s := SiteFromContext(r.Context()); s != "" {
		return s
	}
	return middleware.UnknownSite
}

// Handler is the PoP's public HTTP handler with its middleware chain.
func (p *PoP) Handler() http.Handler {
	r := chi.NewRouter()
	// The client first: everything after it (the access log, plugins, the
	// origin's X-Forwarded-For) sees the one the trusted proxies named.
	r.Use(p.realIP.Handler, middleware.RequestID, middleware.Recover(p.log), middleware.HTTP3EmptyBody, p.route)
	// Observed and stamped: every answer, whoever in the chain makes it,
	// leaves with the PoP's Via, and the PoP's own with its Cache-Status.
	r.Use(middleware.ObserveStamp(p.stamp, p.observers...), p.httpsPolicies)
	r.Handle("/*", p)
	// chi answers unknown methods with 405 unless told otherwise; a proxy
	// forwards every method to the origin.
	r.MethodNotAllowed(p.ServeHTTP)
	return r
}

// stamp completes the final header of every response the PoP sends on
// net/http (middleware.ObserveStamp): its Via when nothing in the chain
// added it (a plugin's own answer, a redirect), and on the answers the PoP
// made itself (middleware.MarkGenerated) a Cache-Status entry with the
// reason when the writer gave none (a plugin chain's fail-closed 503).
// The pages of proxy.WritePage have both already. It allocates nothing for
// a response that has them (a cache's, an origin's through the cache).
func (p *PoP) stamp(h http.Header, r *http.Request, _ int) {
	if !hasVia(h["Via"], p.viaName) {
		v := p.via[1]
		switch {
		case r.ProtoMajor == 1 && r.ProtoMinor == 0:
			v = p.via[0]
		case r.ProtoMajor == 2:
			v = p.via[2]
		case r.ProtoMajor == 3:
			v = p.via[3]
		}
		h["Via"] = append(h["Via"], v)
	}
	if reason := middleware.Generated(r.Context()); reason != "" {
		if _, ok := h["Cache-Status"]; !ok {
			h["Cache-Status"] = []string{"meridian; detail=" + reason}
		}
	}
}

// hasVia reports whether a Via entry names the hop name ("1.1 name").
func hasVia(vs []string, name string) bool {
	for _, v := range vs {
		for e := range strings.SplitSeq(v, ",") {
			e = strings.TrimSpace(e)
			if _, after, ok := strings.Cut(e, " "); ok {
				e = after // the protocol before the name
			}
			if e, _, _ = strings.Cut(e, " "); e == name { // a comment after it
				return true
			}
		}
	}
	return false
}

// httpsPolicies applies the sites' HTTPS policies inside the observed
// chain (so a redirect is logged, counted and stamped like any answer):
// HSTS on TLS responses, and the redirect of plain HTTP to HTTPS for the
// sites that ask for it, counted as the PoP's own answer (reason
// "https-redirect"). Without HTTPS it passes requests on.
func (p *PoP) httpsPolicies(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if pol := p.policies; pol != nil {
			if target, code := pol.Apply(w, r); target != "" {
				middleware.MarkGenerated(r.Context(), "https-redirect")
				http.Redirect(w, r, target, code)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// SetCredentials replaces the admin API's credentials (a configuration
// reload changed the tokens): requests checked from then on use c.
func (p *PoP) SetCredentials(c Credentials) { p.creds.Store(&c) }

// credentials are the admin API's current credentials.
func (p *PoP) credentials() Credentials { return *p.creds.Load() }

// fastRoute gives the fast hit path the cache handler of a host's site, when
// nothing else in the chain can change its answer but the site's plugins,
// which it then runs as hooks (PluginHooks): its plain HTTP is not
// redirected to HTTPS.
func (p *PoP) fastRoute(host string) http.Handler {
	s := p.router.Load().lookup(host)
	if s == nil {
		return nil
	}
	if p.policies != nil && p.policies.RedirectsHTTP(host) {
		return nil
	}
	if p.opts.Plugins != nil && (p.opts.PluginSites == nil || p.opts.PluginSites(s.Name)) {
		if s.hooked == nil {
			return nil // a handler, not an untyped nil: the fast path hands on
		}
		return s.hooked
	}
	return s.cache
}

// fastObserve records a response of the fast path as the middleware
// chain's observer records one of net/http (record), from the fast path's
// fields: building an http.Request and a context for them cost a quarter
// of a fast hit. The fast path answers hits only, so its lines have no
// origin fields (Access.Origin stays zero).
func (p *PoP) fastObserve(o *cache.FastObservation) {
	a := middleware.Access{
		RequestID: o.RequestID, Remote: o.RemoteAddr, Method: o.Method, Host: o.Host, URI: o.RequestURI,
		Proto: "HTTP/1.1", Status: o.Status, Bytes: o.Bytes, Elapsed: o.Elapsed, BodyError: o.BodyError,
		Site: o.Site, Cache: o.Cache,
	}
	if p.log.Enabled(context.Background(), slog.LevelInfo) {
		// Looked up and copied only for a log line: a hit that is not
		// logged must not pay for them.
		a.UserAgent, a.Referer = string(clipBytes(o.Field("user-agent"))), string(clipBytes(o.Field("referer")))
	}
	p.record(context.Background(), o.Site, o.Generated, a)
}

// clipBytes cuts b to what the access log keeps (middleware.MaxLoggedField)
// before it is copied.
func clipBytes(b []byte) []byte { return b[:min(len(b), middleware.MaxLoggedField)] }

// record feeds one answered request of site to the request metrics, the
// access log and the load tracker: the one place both paths (p.observers
// and fastObserve) record through. generated is why the PoP made the
// answer itself ("" for an origin's or a stored one); a.BodyError is filled
// by the caller (from the context or the fast observation), read once.
func (p *PoP) record(ctx context.Context, site, generated string, a middleware.Access) {
	p.metrics.ObserveAccess(site, generated, a)
	if p.log.Enabled(ctx, slog.LevelInfo) {
		middleware.LogAccess(ctx, p.log, a)
	}
	p.load.observe(a.Status, a.Elapsed)
}

// Start binds both listeners (failing with the address when one is taken),
// then serves and publishes beacons until Shutdown.
func (p *PoP) Start(ctx context.Context) error {
	var err error
	if p.httpLn, err = net.Listen("tcp", p.opts.HTTPAddr); err != nil {
		return fmt.Errorf("gateway %s: listen http %s: %w", p.opts.ID, p.opts.HTTPAddr, err)
	}
	ln, err := p.proxyProtocol(p.httpLn)
	if err != nil {
		p.httpLn.Close()
		return fmt.Errorf("gateway %s: http %s: %w", p.opts.ID, p.opts.HTTPAddr, err)
	}
	p.httpLn = ln
	if p.adminLn, err = net.Listen("tcp", p.opts.AdminAddr); err != nil {
		p.httpLn.Close()
		return fmt.Errorf("gateway %s: listen admin %s: %w", p.opts.ID, p.opts.AdminAddr, err)
	}
	ctx, p.cancel = context.WithCancel(ctx)
	errLog := slog.NewLogLogger(p.log.Handler(), slog.LevelWarn)
	plain, err := p.startTLS(ctx, p.Handler())
	if err != nil {
		p.cancel()
		p.httpLn.Close()
		p.adminLn.Close()
		if p.httpsSrv != nil {
			_ = p.httpsSrv.Shutdown(context.Background())
		}
		return err
	}
	p.httpSrv = &http.Server{Handler: plain, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, ErrorLog: errLog}
	// Plain-text HTTP/2 (h2c, prior knowledge) beside HTTP/1.1, for clients
	// and load balancers that speak it to the edge.
	p.httpSrv.Protocols = new(http.Protocols)
	p.httpSrv.Protocols.SetHTTP1(true)
	p.httpSrv.Protocols.SetUnencryptedHTTP2(true)
	p.adminSrv = &http.Server{Handler: p.adminHandler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: errLog}
	// Fresh hits on plain HTTP/1.1 are answered by the cache's fast path,
	// everything else by httpSrv (see cache.Fast): with HTTPS configured,
	// that includes ACME challenges and the sites that redirect plain HTTP
	// (fastRoute). Without the fast path, Coalesce has a stored 4-32 KiB
	// body leave with its header in one writev.
	var httpLn net.Listener
	if p.opts.NoFastPath {
		httpLn = cache.Coalesce(p.httpSrv, p.httpLn)
	} else { // Fast includes Coalesce
		p.fast = p.cache.Fast(p.httpSrv, p.httpLn, cache.FastOptions{
			Route: p.fastRoute, Observe: p.fastObserve, RequestIDHeader: middleware.RequestIDHeader, NewRequestID: middleware.NewRequestID, Logger: p.log,
			ServerPaths: []string{"/.well-known/acme-challenge/"}, ClientAddr: p.realIP.Client,
		})
		httpLn = p.fast
	}
	for _, s := range []struct {
		srv *http.Server
		ln  net.Listener
	}{
		{p.httpSrv, httpLn},
		{p.adminSrv, p.adminLn},
	} {
		p.wg.Go(func() {
			if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				p.log.Error("server stopped", "addr", s.ln.Addr().String(), "err", err)
			}
		})
	}
	p.applyReplicatedPurges(ctx)
	if p.opts.NATS != nil {
		bctx, stop := context.WithCancel(ctx)
		p.beaconStop = stop
		p.wg.Go(func() { beacon.Publish(bctx, p.opts.NATS, p.opts.BeaconInterval, p.log, p.beacon) })
	}
	p.log.Info("PoP serving", "http", p.httpLn.Addr().String(), "https", p.HTTPSAddr(), "admin", p.adminLn.Addr().String(), "region", p.opts.Region)
	return nil
}

// proxyProtocol wraps a public listener for the PROXY protocol per
// Options.ProxyProtocol. It wraps it even without trusted balancers, when
// its connections pass through as they are (one atomic load per accepted
// connection, nothing per request), so that SetProxyProtocol can turn the
// protocol on without a restart.
func (p *PoP) proxyProtocol(ln net.Listener) (net.Listener, error) {
	p.ppMu.Lock()
	defer p.ppMu.Unlock()
	o := p.opts.ProxyProtocol
	o.Logger, o.Registerer, o.PoP = p.log, p.registry, p.opts.ID
	wl, err := realip.Listen(ln, o)
	if err != nil {
		return nil, err
	}
	p.ppListeners = append(p.ppListeners, wl)
	return wl, nil
}

// SetProxyProtocol replaces the PROXY protocol's trusted balancers,
// Required and HeaderTimeout on the public listeners (a configuration
// reload): connections accepted from then on follow them, connections
// already open keep theirs. It refuses, changing nothing, what New
// refuses (trusted balancers with HTTP/3, Required without any).
func (p *PoP) SetProxyProtocol(o realip.Options) error {
	if err := o.Validate(); err != nil {
		return fmt.Errorf("gateway %s: proxy protocol: %w", p.opts.ID, err)
	}
	if len(o.Trusted) > 0 && p.opts.TLS.HTTP3 {
		return fmt.Errorf("gateway %s: the PROXY protocol cannot be used with HTTP/3 (QUIC carries no header, so h3 clients would be seen as the balancer); turn one off", p.opts.ID)
	}
	p.ppMu.Lock()
	defer p.ppMu.Unlock()
	for _, l := range p.ppListeners {
		_ = l.Update(o) // validated above
	}
	p.opts.ProxyProtocol.Trusted, p.opts.ProxyProtocol.Required, p.opts.ProxyProtocol.HeaderTimeout = o.Trusted, o.Required, o.HeaderTimeout
	return nil
}

// SetRealIP replaces the L7 proxies trusted to name clients, and their
// header (a configuration reload): requests read from then on follow it,
// on both paths. It refuses, changing nothing, what New refuses.
func (p *PoP) SetRealIP(o realip.HeaderOptions) error {
	if err := p.realIP.Update(o); err != nil {
		return fmt.Errorf("gateway %s: real ip: %w", p.opts.ID, err)
	}
	return nil
}

// HTTPAddr is the bound proxy address (after Start).
func (p *PoP) HTTPAddr() string { return p.httpLn.Addr().String() }

// AdminAddr is the bound admin address (after Start).
func (p *PoP) AdminAddr() string { return p.adminLn.Addr().String() }

func (p *PoP) beacon() beacon.Beacon {
	s := p.load.snapshot(time.Now())
	return beacon.Beacon{
		PoP: p.opts.ID, Region: p.opts.Region,
		Healthy:   !p.draining.Load(),
		Load:      s.RPS,
		Capacity:  p.opts.Capacity,
		P50Ms:     float64(s.P50) / float64(time.Millisecond),
		P99Ms:     float64(s.P99) / float64(time.Millisecond),
		ErrorRate: s.ErrorRate,
	}
}

// StopBeacons stops publishing beacons while the PoP keeps serving; the DNS
// then stops sending clients here after its missed-beacon limit. Used for
// maintenance and by failover tests.
func (p *PoP) StopBeacons() {
	if p.beaconStop != nil {
		p.beaconStop()
	}
}

// SetDraining marks the PoP as draining (an operator's drain): beacons and
// /healthz report it unhealthy, so the DNS moves clients away, while
// requests are still served. With Options.DrainFile it holds across
// restarts; a failure to record it is logged, and the drain still holds
// until this process ends.
func (p *PoP) SetDraining(on bool) {
	p.draining.Store(on)
	if p.opts.DrainFile == "" {
		return
	}
	var err error
	if on {
		if err = os.MkdirAll(filepath.Dir(p.opts.DrainFile), 0o755); err == nil {
			err = os.WriteFile(p.opts.DrainFile, []byte("drained through the admin API; POST /admin/drain?off=1 ends it\n"), 0o644)
		}
	} else if err = os.Remove(p.opts.DrainFile); errors.Is(err, fs.ErrNotExist) {
		err = nil
	}
	if err != nil {
		p.log.Error("the drain will not survive a restart: recording it failed", "draining", on, "err", err)
	}
}

// DrainForShutdown marks the PoP as draining for the rest of this process
// only (shutdown.drain): unlike SetDraining it is not remembered, so the PoP
// is back in service when it starts again.
func (p *PoP) DrainForShutdown() { p.draining.Store(true) }

// Shutdown stops accepting, lets in-flight requests finish until ctx ends,
// and stops beacons.
func (p *PoP) Shutdown(ctx context.Context) error {
	if p.cancel == nil {
		return nil
	}
	p.cancel()
	err := errors.Join(p.httpSrv.Shutdown(ctx), p.adminSrv.Shutdown(ctx))
	if p.fast != nil {
		err = errors.Join(err, p.fast.Drain(ctx))
	}
	if p.httpsSrv != nil {
		err = errors.Join(err, p.httpsSrv.Shutdown(ctx))
	}
	if p.opts.TLS.Certs != nil {
		p.opts.TLS.Certs.Stop()
	}
	p.wg.Wait()
	for _, s := range p.router.Load().all {
		s.Origin.Close()
	}
	if p.ownCache {
		err = errors.Join(err, p.cache.Close())
	}
	return err
}
