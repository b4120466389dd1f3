// Package origin sends a PoP's cache misses to a site's origin servers.
//
// A Pool is an http.RoundTripper over one site's origin servers: it picks a
// server (round-robin over the ones not recently failing), points the request
// at it, bounds connect, header and total time, and retries idempotent requests
// that never reached a server. It does not touch headers other than Host:
// proxy header rules (hop-by-hop, X-Forwarded-*, Via) belong to gateway/proxy.
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
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Server is one origin server of a site.
type Server struct {
	// Name lets a plugin choose this server for a request (WithServer).
	Name string
	// URL is the scheme and host, e.g. http://10.0.0.5:8080.
	URL *url.URL
	// HostHeader, when set, replaces the client's Host.
	HostHeader string
}

// Options configures a Pool.
type Options struct {
	// Site names the pool in metrics and logs.
	Site string
	// Servers are tried round-robin.
	Servers []Server
	// ConnectTimeout bounds dialing (and the TLS handshake).
	ConnectTimeout time.Duration
	// HeaderTimeout bounds the wait for response headers once the request is sent.
	HeaderTimeout time.Duration
	// TotalTimeout bounds the whole exchange, body included.
	TotalTimeout time.Duration
	// Retries is how many other servers an idempotent request may try after a
	// connection failure. Default 1.
	Retries int
	// DownFor is how long a server that failed to connect is skipped. Default 10s.
	DownFor time.Duration
	// TLS configures connections to https origins; nil uses system roots with
	// SNI set to the origin's host name.
	TLS *tls.Config
	// Logger and Metrics are optional.
	Logger  *slog.Logger
	Metrics *Metrics
}

// Metrics are the origin request metrics, shared by every pool of a PoP.
type Metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// NewMetrics creates and registers origin metrics on reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_origin_requests_total",
			Help: "Requests sent to origin servers, by site, server and outcome (status class or error).",
		}, []string{"site", "server", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "meridian_origin_header_seconds",
			Help:    "Time from sending a request to an origin to receiving its response headers.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
		}, []string{"site"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.latency)
	}
	return m
}

type server struct {
	Server
	downUntil atomic.Int64 // unix nanos
}

// Pool is a site's set of origin servers; safe for concurrent use.
type Pool struct {
	opts      Options
	servers   []*server
	next      atomic.Uint64
	transport *http.Transport
	log       *slog.Logger
}

// ErrNoServers means every origin server is marked down.
var ErrNoServers = errors.New("origin: every origin server failed recently")

// New creates a pool; it opens no connections until the first request.
func New(opts Options) (*Pool, error) {
	if len(opts.Servers) == 0 {
		return nil, fmt.Errorf("origin: site %s has no origin servers", opts.Site)
	}
	if opts.Retries == 0 {
		opts.Retries = 1
	}
	if opts.DownFor == 0 {
		opts.DownFor = 10 * time.Second
	}
	if opts.ConnectTimeout == 0 {
		opts.ConnectTimeout = 5 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Pool{opts: opts, log: log}
	for _, s := range opts.Servers {
		if s.URL == nil || (s.URL.Scheme != "http" && s.URL.Scheme != "https") || s.URL.Host == "" {
			return nil, fmt.Errorf("origin: site %s: server %v is not an http(s) URL", opts.Site, s.URL)
		}
		p.servers = append(p.servers, &server{Server: s})
	}
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

// Close releases idle connections.
func (p *Pool) Close() { p.transport.CloseIdleConnections() }

// pick returns the next server not marked down, or any server when all are.
func (p *Pool) pick(skip map[*server]bool) *server {
	now := time.Now().UnixNano()
	n := len(p.servers)
	start := int(p.next.Add(1) % uint64(n))
	for i := range n {
		s := p.servers[(start+i)%n]
		if !skip[s] && s.downUntil.Load() <= now {
			return s
		}
	}
	// Every server failed recently: try one anyway rather than fail without
	// asking, since "down" is only our guess.
	for i := range n {
		if s := p.servers[(start+i)%n]; !skip[s] {
			return s
		}
	}
	return nil
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
func (p *Pool) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancel(req.Context())
	if p.opts.TotalTimeout > 0 {
		ctx, cancel = context.WithTimeout(req.Context(), p.opts.TotalTimeout)
	}
	tried := map[*server]bool{}
	var lastErr error
	chosen := p.named(req.Context())
	for attempt := 0; attempt <= p.opts.Retries; attempt++ {
		s := chosen
		if s == nil || attempt > 0 {
			s = p.pick(tried)
		}
		if s == nil {
			break
		}
		tried[s] = true
		// The header timeout is our own timer on the attempt's context, not
		// only the transport's ResponseHeaderTimeout: that one starts after
		// the request is written, so a stalled write would wait forever.
		actx, acancel := context.WithCancel(ctx)
		var headerTimer *time.Timer
		var timedOut atomic.Bool
		if d := p.opts.HeaderTimeout; d > 0 {
			headerTimer = time.AfterFunc(d, func() { timedOut.Store(true); acancel() })
		}
		out := req.Clone(actx)
		out.URL.Scheme = s.URL.Scheme
		out.URL.Host = s.URL.Host
		if s.HostHeader != "" {
			out.Host = s.HostHeader
		}
		out.RequestURI = ""
		start := time.Now()
		resp, err := p.transport.RoundTrip(out)
		if headerTimer != nil {
			headerTimer.Stop()
		}
		if err == nil && !timedOut.Load() {
			p.observe(s, start, statusClass(resp.StatusCode))
			cb := &cancelBody{ReadCloser: resp.Body, cancel: func() { acancel(); cancel() }}
			resp.Body = cb
			if rw, ok := cb.ReadCloser.(io.Writer); ok && resp.StatusCode == http.StatusSwitchingProtocols {
				// An upgraded connection: the proxy writes the client's
				// side of the tunnel into the body.
				resp.Body = &upgradedBody{cancelBody: cb, w: rw}
			}
			return resp, nil
		}
		if err == nil { // headers raced the timer: the body's context is gone
			resp.Body.Close()
		}
		acancel()
		if timedOut.Load() {
			err = fmt.Errorf("no response headers within %s: %w", p.opts.HeaderTimeout, context.DeadlineExceeded)
		}
		lastErr = err
		p.observe(s, start, errorKind(err))
		if !connectFailure(err) {
			break
		}
		s.downUntil.Store(time.Now().Add(p.opts.DownFor).UnixNano())
		p.log.Warn("origin server unreachable; marked down", "site", p.opts.Site, "server", s.URL.Host, "for", p.opts.DownFor, "err", err)
		// Only requests that cannot have had an effect are sent again.
		if !idempotent(req) || ctx.Err() != nil {
			break
		}
	}
	cancel()
	if lastErr == nil {
		lastErr = ErrNoServers
	}
	return nil, fmt.Errorf("origin: site %s: %w", p.opts.Site, lastErr)
}

func (p *Pool) observe(s *server, start time.Time, outcome string) {
	if m := p.opts.Metrics; m != nil {
		m.requests.WithLabelValues(p.opts.Site, s.URL.Host, outcome).Inc()
		if outcome[0] >= '1' && outcome[0] <= '5' {
			m.latency.WithLabelValues(p.opts.Site).Observe(time.Since(start).Seconds())
		}
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

// IsTimeout reports whether err came from a connect, header or total timeout.
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
	return errors.As(err, &tlsErr)
}

func idempotent(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return r.Body == nil || r.Body == http.NoBody || r.GetBody != nil
	}
	return false
}

// cancelBody ends the request's context when the body is closed, so the total
// timeout covers the body and nothing leaks after it.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
	once   sync.Once
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.cancel)
	return err
}

// upgradedBody is the body of a 101 response: the connection itself, which
// httputil.ReverseProxy needs writable to tunnel (a WebSocket).
type upgradedBody struct {
	*cancelBody
	w io.Writer
}

func (b *upgradedBody) Write(p []byte) (int, error) { return b.w.Write(p) }

// Requests returns the request counter for one label set (for tests and
// dashboards built in code).
func (m *Metrics) Requests(site, server, outcome string) prometheus.Counter {
	return m.requests.WithLabelValues(site, server, outcome)
}

// ServerHosts lists the pool's servers as host:port, in configured order.
func (p *Pool) ServerHosts() []string {
	out := make([]string, len(p.servers))
	for i, s := range p.servers {
		out[i] = s.URL.Host
	}
	return out
}
