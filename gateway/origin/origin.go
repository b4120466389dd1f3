// Package origin sends a PoP's cache misses to a site's origin servers.
//
// A Pool is an http.RoundTripper over one site's origin servers: it picks a
// server (among the request path's route's, weighted round-robin over the
// ones not marked down, backups last), points the request at it (with the
// server's path prefix), bounds connect, header, body-idle and total time,
// keeps passive health (a server that fails to connect, times out or
// breaks before its headers is skipped for a while, then tried again by
// one request) and, when configured, active health (HealthCheck), and
// sends a request that failed to the next server when that cannot repeat
// an effect. It touches no headers but Host and the site's configured
// request changes (Options.RequestHeaders): proxy header rules (hop-by-hop,
// X-Forwarded-*, Via) belong to gateway/proxy.
//
// Its metrics (Metrics) are shared by a PoP's pools. The down series report,
// when scraped, the servers of the pool serving each site (Pool.Activate at
// commit, Pool.Close at removal); building a pool changes no metric, so a
// reload that is refused after building its pools leaves them as they were.
package origin

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-edge/meridian/gateway/headers"
	"github.com/meridian-edge/meridian/gateway/pathmatch"
	"github.com/meridian-edge/meridian/gateway/tlsedge/origintls"
	"github.com/meridian-edge/meridian/middleware"
)

// Server is one origin server of a site.
type Server struct {
	// Name lets a plugin choose this server for a request (WithServer).
	Name string
	// URL is the scheme and host, e.g. http://10.0.0.5:8080, and an
	// optional path prefixed to every request's (CloudFront's origin
	// path): with https://bucket.example/site-v2, /a.css is fetched as
	// /site-v2/a.css. A final "/" of the prefix is ignored.
	URL *url.URL
	// HostHeader, when set, replaces the client's Host.
	HostHeader string
	// Backup servers get requests only while every other server of their
	// group (the route's, or the unrouted ones) is down, as nginx's
	// backup or a CloudFront origin group's secondary: a static copy of
	// the site, a distant region.
	Backup bool
	// Weight is the server's share of its group's requests relative to
	// the others' (nginx's weight): 3 against 1 sends it three requests
	// in four. 0 counts as 1; at most MaxWeight.
	Weight int
	// MaxConns bounds the requests this pool has in flight to the server
	// at once, from sending one until its body is read or closed (nginx's
	// max_conns, Fastly's max_conn): at the bound the server is skipped
	// as if down, and when every server of the group is, the request
	// fails with ErrBusy instead of piling onto an origin that cannot
	// keep up. 0: no bound.
	MaxConns int
}

// MaxWeight is the largest Server.Weight.
const MaxWeight = 100

// Route sends the requests whose path matches Path (as package pathmatch
// matches, on the path sent to the origin) to the servers named.
type Route struct {
	Path    string
	Servers []string
}

// group is the servers a request may be sent to, the backups apart, with
// how many attempts it gets among them. order and backupOrder are the
// round-robin schedules of servers and backups: each server as many times
// as its weight, spread out (smoothWeighted).
type group struct {
	servers, backups   []*server
	order, backupOrder []*server
	attempts           int
	// next and nextBackup walk the schedules. One pair per group: with a
	// counter shared by several groups, a group would see every other
	// slot of its schedule when requests alternate between two, and a
	// 3:1 weighting would come out 1:1.
	next, nextBackup atomic.Uint64
}

// finish sets g's schedules and attempts once its servers are added.
func (g *group) finish(p *Pool) {
	g.order, g.backupOrder = smoothWeighted(g.servers), smoothWeighted(g.backups)
	g.attempts = p.attemptsFor(len(g.servers) + len(g.backups))
}

// smoothWeighted is nginx's smooth weighted round robin laid out once:
// one round of len = the sum of the weights, in which each server comes
// up as often as its weight and no more often in a row than it must (5, 1,
// 1 gives a a b a c a a, not a a a a a b c).
func smoothWeighted(servers []*server) []*server {
	total := 0
	for _, s := range servers {
		total += s.weight()
	}
	cur := make([]int, len(servers))
	out := make([]*server, 0, total)
	for range total {
		best := 0
		for i, s := range servers {
			cur[i] += s.weight()
			if cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= total
		out = append(out, servers[best])
	}
	return out
}

// add puts s among g's servers or backups.
func (g *group) add(s *server) {
	if s.Backup {
		g.backups = append(g.backups, s)
	} else {
		g.servers = append(g.servers, s)
	}
}

// route is a Route compiled against the pool's servers.
type route struct {
	path string
	group
}

// Options configures a Pool.
type Options struct {
	// Site names the pool in metrics and logs.
	Site string
	// Servers are tried round-robin, each as often as its Weight.
	Servers []Server
	// Routes send the requests whose path matches to some of Servers only
	// (CloudFront's behaviours, an nginx location with its own upstream):
	// the first route whose Path matches applies, and a request no route
	// matches goes to the servers no route names. Failover stays among
	// the servers chosen, so that an API request never reaches the web
	// servers. A plugin's choice (WithServer) still wins.
	Routes []Route
	// ConnectTimeout bounds dialing (and the TLS handshake). Default 5s.
	ConnectTimeout time.Duration
	// HeaderTimeout bounds the wait for response headers, from the start of
	// the attempt. Zero: no bound but the total one.
	HeaderTimeout time.Duration
	// IdleTimeout aborts a response body when one read waits this long for a
	// byte from the origin (nginx's proxy_read_timeout, for the body). Time
	// the caller spends between reads does not count. Zero: no bound but the
	// total one.
	IdleTimeout time.Duration
	// TotalTimeout bounds the whole exchange, every attempt and the body
	// included. Zero: no bound.
	TotalTimeout time.Duration
	// Retries is how many other servers a failed request may try (see
	// RoundTrip for which requests). Default and maximum: every other server.
	Retries int
	// DownFor is how long a server that failed is skipped. Default 10s.
	DownFor time.Duration
	// HealthCheck probes the servers in the background while the pool
	// serves (from Activate to Close) when its Path is set.
	HealthCheck HealthCheck
	// RequestHeaders are the site's header changes on every request sent
	// to its servers (nginx's proxy_set_header); nil: none.
	RequestHeaders *headers.Policy
	// TLS configures connections to https origins; nil uses system roots with
	// SNI set to the origin's host name.
	TLS *tls.Config
	// Logger and Metrics are optional.
	Logger  *slog.Logger
	Metrics *Metrics
}

// Pool is a site's set of origin servers; safe for concurrent use.
type Pool struct {
	opts    Options
	servers []*server
	hosts   []hostServers // servers by host:port, for the down series
	closed  atomic.Bool
	routes  []*route
	dflt    group // for the paths no route matches
	// activated is set by the first Activate; stopChecks ends the health
	// checks it started.
	activated  atomic.Bool
	checksCtx  context.Context
	stopChecks context.CancelFunc
	transport  *http.Transport
	log        *slog.Logger
}

// ErrNoServers means every origin server is marked down.
var ErrNoServers = errors.New("origin: every origin server failed recently")

// ErrBusy means every server a request could go to had MaxConns requests
// in flight, so none was asked (Failure: FailureBusy; the PoP answers 503).
var ErrBusy = errors.New("every origin server is at its max_conns: the origin is not asked more at once")

// New creates a pool; it opens no connections until the first request.
// Building a pool changes no metric: a configuration reload builds its pools
// before it knows it will commit, and a refused one must leave the serving
// pools' series as they are. Activate the pool once it serves.
func New(opts Options) (*Pool, error) {
	if len(opts.Servers) == 0 {
		return nil, fmt.Errorf("origin: site %s has no origin servers", opts.Site)
	}
	if opts.DownFor == 0 {
		opts.DownFor = 10 * time.Second
	}
	if opts.ConnectTimeout == 0 {
		opts.ConnectTimeout = 5 * time.Second
	}
	if opts.HealthCheck.Path != "" {
		if !strings.HasPrefix(opts.HealthCheck.Path, "/") {
			return nil, fmt.Errorf("origin: site %s: HealthCheck.Path %q must start with /", opts.Site, opts.HealthCheck.Path)
		}
		opts.HealthCheck.defaults()
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Pool{opts: opts, log: log}
	p.checksCtx, p.stopChecks = context.WithCancel(context.Background())
	for _, s := range opts.Servers {
		if s.URL == nil || (s.URL.Scheme != "http" && s.URL.Scheme != "https") || s.URL.Host == "" || s.URL.RawQuery != "" || s.URL.Fragment != "" {
			return nil, fmt.Errorf("origin: site %s: server %v is not an http(s) URL without query", opts.Site, s.URL)
		}
		if s.Weight < 0 || s.Weight > MaxWeight {
			return nil, fmt.Errorf("origin: site %s: server %v: Weight %d is out of range [0,%d]", opts.Site, s.URL, s.Weight, MaxWeight)
		}
		p.servers = append(p.servers, &server{Server: s, prefix: strings.TrimSuffix(s.URL.Path, "/"), rawPrefix: strings.TrimSuffix(s.URL.EscapedPath(), "/")})
	}
	if err := p.compileRoutes(); err != nil {
		return nil, err
	}
	p.hosts = uniqueHosts(p.servers)
	dialer := &net.Dialer{Timeout: opts.ConnectTimeout, KeepAlive: 30 * time.Second}
	p.transport = &http.Transport{
		DialContext:           dialer.DialContext,
		TLSClientConfig:       opts.TLS,
		TLSHandshakeTimeout:   opts.ConnectTimeout,
		ResponseHeaderTimeout: opts.HeaderTimeout,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		// The cache stores what the origin sent; transparent gzip would store
		// a decoded body under the origin's Content-Encoding-less headers.
		DisableCompression: true,
		ForceAttemptHTTP2:  true,
	}
	return p, nil
}

// Activate makes p the pool whose servers Options.Metrics reports for its
// site (meridian_origin_server_down), in place of the pool reported
// before, whose servers' health p's servers at the same URL and Host take
// over; and it starts the health checks. Call it when p starts serving,
// that is when the configuration that built it is committed. It does
// nothing after Close or a first Activate.
func (p *Pool) Activate() {
	if p.closed.Load() || !p.activated.CompareAndSwap(false, true) {
		return
	}
	if m := p.opts.Metrics; m != nil {
		m.activate(p)
	}
	p.startChecks(p.checksCtx)
}

// inherit takes over the health of prev's servers (see server.inherit).
func (p *Pool) inherit(prev *Pool) {
	for _, s := range p.servers {
		for _, o := range prev.servers {
			if o.URL.String() == s.URL.String() && o.HostHeader == s.HostHeader {
				s.inherit(o)
				break
			}
		}
	}
}

// Close releases idle connections. When p is the pool its site's metrics
// report (a reload removed the site, or the PoP stops), the site's down
// series go too; closing a pool another has replaced changes no metric.
func (p *Pool) Close() {
	p.closed.Store(true)
	p.stopChecks()
	p.transport.CloseIdleConnections()
	if m := p.opts.Metrics; m != nil {
		m.deactivate(p)
	}
}

// compileRoutes resolves Options.Routes to servers and sets the default
// group: the servers no route names, all of them without routes.
func (p *Pool) compileRoutes() error {
	byName := map[string]*server{}
	for _, s := range p.servers {
		if s.Name != "" {
			if _, dup := byName[s.Name]; dup && len(p.opts.Routes) > 0 {
				return fmt.Errorf("origin: site %s: two servers are named %q; routes name servers, so names must be unique", p.opts.Site, s.Name)
			}
			byName[s.Name] = s
		}
	}
	routed := map[*server]bool{}
	catchAll := false
	for i, r := range p.opts.Routes {
		if err := pathmatch.Check(r.Path); err != nil {
			return fmt.Errorf("origin: site %s: Routes[%d].Path: %w", p.opts.Site, i, err)
		}
		if len(r.Servers) == 0 {
			return fmt.Errorf("origin: site %s: Routes[%d] (%s) names no servers", p.opts.Site, i, r.Path)
		}
		rt := &route{path: r.Path}
		for _, n := range r.Servers {
			s, ok := byName[n]
			if !ok {
				return fmt.Errorf("origin: site %s: Routes[%d] (%s): no server is named %q", p.opts.Site, i, r.Path, n)
			}
			rt.add(s)
			routed[s] = true
		}
		if len(rt.servers) == 0 {
			return fmt.Errorf("origin: site %s: Routes[%d] (%s) names only backup servers, which serve when the others are down; name a server that is not a backup", p.opts.Site, i, r.Path)
		}
		rt.finish(p)
		p.routes = append(p.routes, rt)
		catchAll = catchAll || pathmatch.MatchesAll(r.Path)
	}
	for _, s := range p.servers {
		if !routed[s] {
			p.dflt.add(s)
		}
	}
	switch {
	case catchAll:
	case len(p.dflt.servers) == 0 && len(p.dflt.backups) == 0:
		return fmt.Errorf("origin: site %s: every server is named by a route, so a request no route matches would have no server; leave one out of the routes, or add a route for /*", p.opts.Site)
	case len(p.dflt.servers) == 0:
		return fmt.Errorf("origin: site %s: the servers no route names are all backups, which serve when the others are down; leave a server that is not a backup out of the routes, or add a route for /*", p.opts.Site)
	}
	p.dflt.finish(p)
	return nil
}

// attemptsFor is how many servers of a group of n a request may try:
// each once, at most Retries+1 when Retries is set.
func (p *Pool) attemptsFor(n int) int {
	if r := p.opts.Retries; r > 0 && r+1 < n {
		return r + 1
	}
	return n
}

// groupFor returns the servers for a request to path.
func (p *Pool) groupFor(path string) *group {
	for i := range p.routes {
		if pathmatch.Match(p.routes[i].path, path) {
			return &p.routes[i].group
		}
	}
	return &p.dflt
}

type serverKey struct{}

// WithServer asks the pool to send the request to the origin server of that
// name (a plugin's choice); an unknown name leaves the choice to the pool.
func WithServer(ctx context.Context, name string) context.Context {
	return context.WithValue(ctx, serverKey{}, name)
}

func (p *Pool) named(ctx context.Context) *server {
	name, _ := ctx.Value(serverKey{}).(string)
	if name == "" {
		return nil
	}
	for _, s := range p.servers {
		if s.Name == name {
			return s
		}
	}
	p.log.Warn("a plugin chose an origin server the site does not have; using the pool", "site", p.opts.Site, "name", name)
	return nil
}

// RoundTrip sends req to one of the site's origin servers. req.URL's path and
// query are kept; scheme and host are replaced. The returned body must be
// closed; the total timeout runs until then.
//
// An attempt that fails before response headers (connect failure, connect or
// header timeout, connection broken) marks its server down and, as nginx's
// proxy_next_upstream error timeout, is sent to the next server when that
// cannot repeat an effect: any request that never reached the server (no
// connection was made), and GET, HEAD and OPTIONS requests otherwise; in both
// cases only when the body, if any, can be sent again (req.GetBody). No
// response byte has reached the client at that point, since RoundTrip has not
// returned. Attempts stop at the number of servers and the total timeout.
func (p *Pool) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancel(req.Context())
	if p.opts.TotalTimeout > 0 {
		ctx, cancel = context.WithTimeout(req.Context(), p.opts.TotalTimeout)
	}
	tried := map[*server]bool{}
	var lastErr error
	chosen := p.named(req.Context())
	g := p.groupFor(req.URL.EscapedPath())
	for attempt := range g.attempts {
		s, probe := chosen, false
		if s == nil || attempt > 0 {
			s, probe = p.pick(g, tried)
		}
		if s == nil {
			break
		}
		tried[s] = true
		if !s.reserve() {
			p.count(s, "busy")
			if probe {
				s.probing.Store(false)
			}
			if lastErr == nil {
				lastErr = ErrBusy
			}
			continue
		}
		body := req.Body
		if attempt > 0 && body != nil && body != http.NoBody {
			// The transport closed the body of the failed attempt.
			var err error
			if body, err = req.GetBody(); err != nil {
				lastErr = fmt.Errorf("cannot send the request body again: %w", err)
				break
			}
		}
		resp, sent, err := p.try(ctx, cancel, req, body, s)
		if probe {
			// The attempt decided the probe: another request may probe the
			// server again once it is marked down anew.
			s.probing.Store(false)
		}
		if err == nil {
			p.answered(s)
			return resp, nil
		}
		lastErr = err
		if req.Context().Err() != nil {
			break // the client went away: not the server's fault
		}
		p.failed(s, err)
		if ctx.Err() != nil || !replayable(req) || (sent && !safe(req.Method)) {
			break
		}
	}
	cancel()
	if lastErr == nil {
		lastErr = ErrNoServers
	}
	return nil, fmt.Errorf("origin: site %s: %w", p.opts.Site, lastErr)
}

// try makes one attempt on s. sent reports whether a connection to s was
// made, so that the request may have reached it.
func (p *Pool) try(ctx context.Context, cancel context.CancelFunc, req *http.Request, body io.ReadCloser, s *server) (resp *http.Response, sent bool, err error) {
	// The header timeout is our own timer on the attempt's context, not
	// only the transport's ResponseHeaderTimeout: that one starts after
	// the request is written, so a stalled write would wait forever.
	actx, acancel := context.WithCancel(ctx)
	var headerTimer *time.Timer
	var timedOut, gotConn atomic.Bool
	if d := p.opts.HeaderTimeout; d > 0 {
		headerTimer = time.AfterFunc(d, func() { timedOut.Store(true); acancel() })
	}
	actx = httptrace.WithClientTrace(actx, &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { gotConn.Store(true) }})
	out := req.Clone(actx)
	out.Body = body
	p.opts.RequestHeaders.Apply(out.Header)
	out.URL.Scheme = s.URL.Scheme
	out.URL.Host = s.URL.Host
	if s.prefix != "" {
		// Joined as sent: the client's escaping and dot segments reach
		// the origin as they would without a prefix.
		if out.URL.RawPath != "" {
			out.URL.RawPath = s.rawPrefix + out.URL.RawPath
		}
		out.URL.Path = s.prefix + out.URL.Path
	}
	if s.HostHeader != "" {
		out.Host = s.HostHeader
	}
	out.RequestURI = ""
	start := time.Now()
	resp, err = p.transport.RoundTrip(out)
	if headerTimer != nil {
		headerTimer.Stop()
	}
	took := time.Since(start)
	if err == nil && !timedOut.Load() {
		p.observeHeaders(took)
		// For the request's access log line (origin, origin_status,
		// origin_time): the caller's context carries its record.
		middleware.MarkOrigin(req.Context(), middleware.OriginFetch{Server: s.URL.Host, Status: resp.StatusCode, Time: took})
		end := func() { acancel(); cancel() }
		if rw, ok := resp.Body.(io.Writer); ok && resp.StatusCode == http.StatusSwitchingProtocols {
			// An upgraded connection: the proxy writes the client's side
			// of the tunnel into the body.
			p.count(s, statusClass(resp.StatusCode))
			var once sync.Once
			endTunnel := func() { end(); once.Do(s.release) } // a tunnel holds its slot until it closes
			resp.Body = &upgradedBody{cancelBody: &cancelBody{ReadCloser: resp.Body, cancel: endTunnel}, w: rw}
			return resp, true, nil
		}
		resp.Body = p.newBody(resp.Body, s, resp.StatusCode, req.Context(), end)
		return resp, true, nil
	}
	if err == nil { // headers raced the timer: the body's context is gone
		resp.Body.Close()
	}
	acancel()
	s.release()
	if timedOut.Load() {
		err = fmt.Errorf("no response headers from %s within %s: %w", s.URL.Host, p.opts.HeaderTimeout, context.DeadlineExceeded)
	}
	p.count(s, errorKind(err))
	why := Failure(err)
	if req.Context().Err() != nil && !timedOut.Load() {
		// The client went away before the origin answered (nginx logs
		// 499): not the origin's failure, and the log must not say so.
		why = ClientClosed
	}
	middleware.MarkOrigin(req.Context(), middleware.OriginFetch{Server: s.URL.Host, Error: why, Time: took})
	return nil, gotConn.Load() && !connectFailure(err), err
}

func (p *Pool) observeHeaders(took time.Duration) {
	if m := p.opts.Metrics; m != nil {
		m.latency.WithLabelValues(p.opts.Site).Observe(took.Seconds())
	}
}

func (p *Pool) count(s *server, outcome string) {
	if m := p.opts.Metrics; m != nil {
		m.requests.WithLabelValues(p.opts.Site, s.URL.Host, outcome).Inc()
	}
}

func statusClass(code int) string {
	return [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}[min(max(code/100, 1), 5)-1]
}

func errorKind(err error) string {
	switch {
	case IsTimeout(err):
		return "timeout"
	case connectFailure(err):
		return "connect"
	default:
		return "error"
	}
}

// IsTimeout reports whether err came from a connect, header, idle or total
// timeout (a deadline on a connection, os.ErrDeadlineExceeded, is a
// net.Error that says so).
func IsTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, http.ErrHandlerTimeout) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// connectFailure reports whether err happened before the request could reach
// the server (dial or TLS failure), so that trying another server is safe.
func connectFailure(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var tlsErr *tls.CertificateVerificationError
	return errors.As(err, &tlsErr) || errors.Is(err, origintls.ErrPinMismatch)
}

// safe reports whether a request that reached a server may be sent to
// another: the methods nginx and RFC 9110 call safe.
func safe(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return true
	}
	return false
}

// replayable reports whether req's body (if any) can be sent again.
func replayable(r *http.Request) bool {
	return r.Body == nil || r.Body == http.NoBody || r.GetBody != nil
}

// ServerHosts lists the pool's servers as host:port, in configured order.
func (p *Pool) ServerHosts() []string {
	out := make([]string, len(p.servers))
	for i, s := range p.servers {
		out[i] = s.URL.Host
	}
	return out
}
