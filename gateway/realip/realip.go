// Package realip gives a PoP's TCP listeners the client's real address when
// they sit behind an L4 load balancer (a Kubernetes Service, an AWS NLB,
// HAProxy in TCP mode) that speaks the PROXY protocol, v1 or v2, as nginx's
// `listen ... proxy_protocol` with `set_real_ip_from` does.
//
// Wrap returns a listener whose connections report the address carried in
// the PROXY header as RemoteAddr, so net/http (Request.RemoteAddr, the access
// log, X-Forwarded-For to the origin, plugins' geo and rate limits) and the
// cache's fast path see the client, and TLS runs over it unchanged (the
// header comes first, then the handshake).
//
// It owns the trust decision (only peers in Options.Trusted may send a
// header), the header read with its timeout, and the count of refused
// connections. It must not read from a connection in the accept loop:
// headers are read lazily, in the goroutine that serves the connection, so
// a slow or silent peer never holds Accept. It
// knows nothing about HTTP, and HTTP/3 (QUIC over UDP) cannot carry the
// protocol at all: the configuration refuses the two together.
package realip

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
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
// Wrap.
type Listener struct {
	net.Listener
	trusted  []netip.Prefix
	required bool
	timeout  time.Duration
	log      *slog.Logger
	rejected map[string]prometheus.Counter
	logs     *logLimiter
}

// Wrap returns l with PROXY protocol support per opts, or l itself when
// opts.Trusted is empty (no header is accepted from anyone, and nothing is
// paid per connection). It fails on a prefix that is not valid, on
// Required without Trusted, and when the counter cannot be registered.
func Wrap(l net.Listener, opts Options) (net.Listener, error) {
	if len(opts.Trusted) == 0 {
		if opts.Required {
			return nil, errors.New("realip: Required without Trusted would refuse every connection; list the balancers' addresses in Trusted")
		}
		return l, nil
	}
	trusted := make([]netip.Prefix, len(opts.Trusted))
	for i, p := range opts.Trusted {
		if !p.IsValid() {
			return nil, fmt.Errorf("realip: trusted prefix %d is not a valid prefix", i)
		}
		// Compare in the form peers have: an IPv4 peer on a dual-stack
		// socket is unmapped before the check (see trusts).
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		trusted[i] = p.Masked()
	}
	if opts.HeaderTimeout <= 0 {
		opts.HeaderTimeout = DefaultHeaderTimeout
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rejected, err := newRejected(opts.Registerer, opts.PoP)
	if err != nil {
		return nil, err
	}
	return &Listener{
		Listener: l, trusted: trusted, required: opts.Required, timeout: opts.HeaderTimeout,
		log:      log.With("listener", l.Addr().String()),
		rejected: rejected, logs: newLogLimiter(LogEvery),
	}, nil
}

// Accept returns the next connection, wrapped; it reads nothing from it.
func (l *Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return newConn(c, l), nil
}

// trusts tells whether a peer may send a PROXY header.
func (l *Listener) trusts(peer net.Addr) bool {
	ta, ok := peer.(*net.TCPAddr)
	if !ok {
		return false
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	if !ok {
		return false
	}
	ip = ip.Unmap()
	for _, p := range l.trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
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
