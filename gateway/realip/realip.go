// Package realip gives a PoP the client's real address when it sits behind
// load balancers or proxies, as nginx's realip module does, in two layers:
//
//   - L4 (Wrap, Listen): a balancer that speaks the PROXY protocol, v1 or
//     v2 (a Kubernetes Service, an AWS NLB, HAProxy in TCP mode), as
//     nginx's `listen ... proxy_protocol` with `set_real_ip_from`. The
//     listener's connections report the address carried in the PROXY
//     header as RemoteAddr, so net/http and the cache's fast path see the
//     client, and TLS runs over it unchanged (the header comes first, then
//     the handshake).
//   - L7 (Resolver): HTTP proxies (an AWS ALB, a GCP HTTPS load balancer, a
//     Kubernetes ingress, a CDN) that name the client in X-Forwarded-For,
//     Forwarded or a single-address header, as nginx's set_real_ip_from,
//     real_ip_header and real_ip_recursive on. It is applied per request,
//     after the L4 layer: the peer it checks against its trusted proxies
//     is the connection's address as the PROXY header gave it.
//
// Both layers' trust lists can be replaced while the PoP serves
// (Listener.Update, Resolver.Update), atomically: a connection or request
// finishes under the rules it started with.
//
// It owns the trust decisions (only peers in the trusted lists may name
// another client), the PROXY header read with its timeout, the parsing of
// the forwarding headers, and the count of refused connections. It must
// not read from a connection in the accept loop: headers are read lazily,
// in the goroutine that serves the connection, so a slow or silent peer
// never holds Accept. HTTP/3 (QUIC over UDP) cannot carry the PROXY
// protocol at all: the configuration refuses the two together.
package realip

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultHeaderTimeout bounds the wait for a PROXY header when
// Options.HeaderTimeout is zero: as long as net/http's ReadHeaderTimeout here,
// since a balancer sends its header at once.
const DefaultHeaderTimeout = 10 * time.Second

// Options configures Wrap.
type Options struct {
	// Trusted are the balancers allowed to send a PROXY header. A header
	// from any other peer is refused (the connection is closed and counted
	// as reason "untrusted"); a connection from elsewhere without a header
	// is served with its own address, so clients may also connect directly.
	// Empty: Wrap returns the listener unchanged.
	Trusted []netip.Prefix
	// Required refuses a trusted peer's connection that does not start with
	// a header (reason "missing", or "timeout" when nothing came in time),
	// as nginx's proxy_protocol and HAProxy's accept-proxy do. Otherwise it
	// is served with the peer's own address.
	Required bool
	// HeaderTimeout bounds the wait for the header (or for the first bytes
	// that show there is none); default DefaultHeaderTimeout. It runs in
	// the connection's own goroutine, never in Accept.
	HeaderTimeout time.Duration
	// Logger receives one line per refused connection, at most one per
	// reason each LogEvery; nil discards. Give it the PoP's attributes
	// (a PoP's logger has its pop already).
	Logger *slog.Logger
	// Registerer receives meridian_proxy_protocol_rejected_total{pop,reason};
	// nil registers nothing. Wrapping several listeners of a PoP with the
	// same Registerer shares the counter.
	Registerer prometheus.Registerer
	// PoP is the pop label of the counter.
	PoP string
}

// LogEvery is the least time between two log lines of the same reason: a
// misconfigured balancer or a scan refused at every connection logs once,
// and the counter tells how many.
const LogEvery = time.Minute

// Reasons a connection is refused, the reason label of
// meridian_proxy_protocol_rejected_total.
const (
	// ReasonUntrusted: a peer outside Trusted sent a header.
	ReasonUntrusted = "untrusted"
	// ReasonMissing: Required, and a trusted peer's stream did not start
	// with a header.
	ReasonMissing = "missing"
	// ReasonTimeout: the header did not arrive, or not whole, within
	// HeaderTimeout.
	ReasonTimeout = "timeout"
	// ReasonMalformed: the stream started with a PROXY signature but the
	// header is invalid (syntax, length, addresses, TLVs).
	ReasonMalformed = "malformed"
)

var reasons = []string{ReasonUntrusted, ReasonMissing, ReasonTimeout, ReasonMalformed}

// Listener is a listener whose connections carry the PROXY protocol; see
// Wrap and Listen.
type Listener struct {
	net.Listener
	pol      atomic.Pointer[listenerPolicy]
	log      *slog.Logger
	rejected map[string]prometheus.Counter
	logs     *logLimiter
}

// listenerPolicy is the part of Options that Update replaces, swapped
// whole: each connection keeps the one it was accepted under.
type listenerPolicy struct {
	trusted  []netip.Prefix
	required bool
	timeout  time.Duration
}

func newListenerPolicy(opts Options) (*listenerPolicy, error) {
	if len(opts.Trusted) == 0 {
		if opts.Required {
			return nil, errNoTrusted
		}
		return &listenerPolicy{}, nil
	}
	trusted, err := normalize(opts.Trusted)
	if err != nil {
		return nil, err
	}
	if opts.HeaderTimeout <= 0 {
		opts.HeaderTimeout = DefaultHeaderTimeout
	}
	return &listenerPolicy{trusted: trusted, required: opts.Required, timeout: opts.HeaderTimeout}, nil
}

// errNoTrusted refuses options that would refuse every connection.
var errNoTrusted = errors.New("realip: Required without Trusted would refuse every connection; list the balancers' addresses in Trusted")

// Validate reports what is wrong with o's Trusted, Required and
// HeaderTimeout, the errors Wrap, Listen and Update return for them, for a
// caller that must check a whole reload before it applies any part of it.
func (o Options) Validate() error {
	_, err := newListenerPolicy(o)
	return err
}

// Wrap returns l with PROXY protocol support per opts, or l itself when
// opts.Trusted is empty (no header is accepted from anyone, and nothing is
// paid per connection). It fails on a prefix that is not valid, on
// Required without Trusted, and when the counter cannot be registered.
func Wrap(l net.Listener, opts Options) (net.Listener, error) {
	if len(opts.Trusted) == 0 {
		if opts.Required {
			return nil, errNoTrusted
		}
		return l, nil
	}
	return Listen(l, opts)
}

// Listen is Wrap for a listener whose trusted balancers may change while
// it serves (Update): it always returns a Listener. While Trusted is
// empty, Accept hands out the accepted connections themselves (one atomic
// load per connection is all it costs), so a PoP can keep its listeners
// wrapped and have a configuration reload turn the PROXY protocol on.
func Listen(l net.Listener, opts Options) (*Listener, error) {
	pol, err := newListenerPolicy(opts)
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rejected, err := newRejected(opts.Registerer, opts.PoP)
	if err != nil {
		return nil, err
	}
	ln := &Listener{
		Listener: l,
		log:      log.With("listener", l.Addr().String()),
		rejected: rejected, logs: newLogLimiter(LogEvery),
	}
	ln.pol.Store(pol)
	return ln, nil
}

// Update replaces Trusted, Required and HeaderTimeout (opts' Logger,
// Registerer and PoP are ignored) atomically: connections accepted from
// then on follow them; connections already accepted keep the rules they
// were accepted under. It fails, changing nothing, as Wrap does.
func (l *Listener) Update(opts Options) error {
	pol, err := newListenerPolicy(opts)
	if err != nil {
		return err
	}
	l.pol.Store(pol)
	return nil
}

// Accept returns the next connection, wrapped (or, while no balancer is
// trusted, as it is); it reads nothing from it.
func (l *Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	pol := l.pol.Load()
	if len(pol.trusted) == 0 {
		return c, nil
	}
	return newConn(c, l, pol), nil
}

// trusts tells whether a peer may send a PROXY header.
func (p *listenerPolicy) trusts(peer net.Addr) bool {
	ta, ok := peer.(*net.TCPAddr)
	if !ok {
		return false
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	if !ok {
		return false
	}
	return contains(p.trusted, ip)
}

// reject counts a refused connection and logs it, rate-limited.
func (l *Listener) reject(reason string, peer net.Addr, err error) {
	l.rejected[reason].Inc()
	if suppressed, ok := l.logs.allow(reason, time.Now()); ok {
		l.log.Warn("proxy protocol: connection refused", "reason", reason, "peer", peer.String(), "err", err,
			"suppressed_since_last", suppressed, "hint", hint(reason))
	}
}

func hint(reason string) string {
	switch reason {
	case ReasonUntrusted:
		return "a peer outside pops[].proxy_protocol.trusted sent a PROXY header; add the balancer's addresses to trusted if it is one"
	case ReasonMissing:
		return "a trusted peer connected without a PROXY header while required is true; enable the PROXY protocol on the balancer, or set required: false"
	case ReasonTimeout:
		return "no complete PROXY header within header_timeout"
	default:
		return "the balancer sent an invalid PROXY header"
	}
}
