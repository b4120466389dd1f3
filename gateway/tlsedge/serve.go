package tlsedge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go/http3"
)

// ServerOptions configures an HTTPS server and its HTTP/3 sibling.
type ServerOptions struct {
	// Addr is the TCP host:port for HTTPS (HTTP/1.1 and HTTP/2 via ALPN);
	// port 0 picks one.
	Addr string
	// HTTP3Addr is the UDP host:port for HTTP/3; empty disables HTTP/3,
	// "same" uses Addr's host and the TCP port actually bound.
	HTTP3Addr string
	// TLSConfig is usually Manager.TLSConfig(); it is cloned per protocol.
	TLSConfig *tls.Config
	// Handler serves every request, whatever the protocol.
	Handler http.Handler
	// AltSvcMaxAge is how long clients may remember the HTTP/3 endpoint
	// advertised in Alt-Svc on TCP responses; default 24h.
	AltSvcMaxAge time.Duration
	// ReadHeaderTimeout and IdleTimeout of the TCP server; defaults 10s and
	// 2 minutes.
	ReadHeaderTimeout, IdleTimeout time.Duration
	// Logger defaults to discarding.
	Logger *slog.Logger
	// WrapListener, when set, wraps the TCP listener once bound, before
	// TLS: the PROXY protocol (gateway/realip) reads its header there,
	// ahead of the handshake. On an error Start closes the socket.
	WrapListener func(net.Listener) (net.Listener, error)
	// Registerer receives meridian_tls_handshake_errors_total (nil: not
	// registered); a PoP passes its registry wrapped with its pop label.
	Registerer prometheus.Registerer
}

// Server serves a handler over HTTPS (TCP) and HTTP/3 (UDP). Start binds
// both sockets before returning; Shutdown stops both.
type Server struct {
	opts   ServerOptions
	log    *slog.Logger
	errLog *serverErrorLog
	tcpLn  net.Listener
	udp    net.PacketConn
	h1     *http.Server
	h3     *http3.Server
	wg     sync.WaitGroup
}

// NewServer checks the options; nothing listens until Start.
func NewServer(opts ServerOptions) (*Server, error) {
	if opts.TLSConfig == nil {
		return nil, errors.New("tlsedge: server needs a TLS config (Manager.TLSConfig())")
	}
	if opts.Handler == nil {
		return nil, errors.New("tlsedge: server needs a handler")
	}
	if opts.AltSvcMaxAge == 0 {
		opts.AltSvcMaxAge = 24 * time.Hour
	}
	if opts.ReadHeaderTimeout == 0 {
		opts.ReadHeaderTimeout = 10 * time.Second
	}
	if opts.IdleTimeout == 0 {
		opts.IdleTimeout = 2 * time.Minute
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	el := newServerErrorLog(log, time.Now)
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(el.failed); err != nil {
			return nil, fmt.Errorf("tlsedge: register handshake error metric: %w", err)
		}
	}
	return &Server{opts: opts, log: log, errLog: el}, nil
}

// Start binds the TCP (and UDP) sockets, failing with the address when one
// is taken, then serves in the background until Shutdown.
func (s *Server) Start(ctx context.Context) error {
	var err error
	if s.tcpLn, err = net.Listen("tcp", s.opts.Addr); err != nil {
		return fmt.Errorf("tlsedge: listen https %s: %w", s.opts.Addr, err)
	}
	if wrap := s.opts.WrapListener; wrap != nil {
		ln, err := wrap(s.tcpLn)
		if err != nil {
			s.tcpLn.Close()
			return fmt.Errorf("tlsedge: https %s: %w", s.opts.Addr, err)
		}
		s.tcpLn = ln
	}
	if a := s.opts.HTTP3Addr; a != "" {
		if a == "same" {
			host, _, _ := net.SplitHostPort(s.opts.Addr)
			a = net.JoinHostPort(host, strconv.Itoa(s.tcpLn.Addr().(*net.TCPAddr).Port))
		}
		if s.udp, err = net.ListenPacket("udp", a); err != nil {
			s.tcpLn.Close()
			return fmt.Errorf("tlsedge: listen http3 (udp) %s: %w", a, err)
		}
	}
	errLog := log.New(s.errLog, "", 0)
	handler := s.opts.Handler
	if s.udp != nil {
		s.h3 = &http3.Server{
			Handler:   s.opts.Handler,
			TLSConfig: http3.ConfigureTLSConfig(s.opts.TLSConfig.Clone()),
		}
		handler = altSvc(handler, s.udp.LocalAddr().(*net.UDPAddr).Port, s.opts.AltSvcMaxAge)
	}
	tcpTLS := s.opts.TLSConfig.Clone()
	s.h1 = &http.Server{
		Handler:           handler,
		TLSConfig:         tcpTLS,
		ReadHeaderTimeout: s.opts.ReadHeaderTimeout,
		IdleTimeout:       s.opts.IdleTimeout,
		ErrorLog:          errLog,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	s.wg.Go(func() {
		// ServeTLS configures HTTP/2 on the server and wraps the listener.
		if err := s.h1.ServeTLS(s.tcpLn, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("https server stopped", "addr", s.tcpLn.Addr().String(), "err", err)
		}
	})
	if s.h3 != nil {
		s.wg.Go(func() {
			if err := s.h3.Serve(s.udp); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
				s.log.Error("http3 server stopped", "addr", s.udp.LocalAddr().String(), "err", err)
			}
		})
	}
	s.log.Info("HTTPS serving", "https", s.Addr(), "http3", s.HTTP3Addr())
	return nil
}

// Addr is the bound HTTPS address (after Start).
func (s *Server) Addr() string { return s.tcpLn.Addr().String() }

// HTTP3Addr is the bound HTTP/3 UDP address, or "" when disabled.
func (s *Server) HTTP3Addr() string {
	if s.udp == nil {
		return ""
	}
	return s.udp.LocalAddr().String()
}

// Shutdown stops accepting, lets in-flight requests finish until ctx ends,
// and closes both sockets.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.h1 == nil {
		return nil
	}
	var errs []error
	errs = append(errs, s.h1.Shutdown(ctx))
	if s.h3 != nil {
		if err := s.h3.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			errs = append(errs, err)
		}
		s.h3.Close()
		s.udp.Close()
	}
	s.wg.Wait()
	return errors.Join(errs...)
}

// altSvc advertises HTTP/3 on responses sent over TCP.
func altSvc(next http.Handler, port int, maxAge time.Duration) http.Handler {
	v := fmt.Sprintf(`h3=":%d"; ma=%d`, port, int(maxAge.Seconds()))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor < 3 {
			w.Header().Set("Alt-Svc", v)
		}
		next.ServeHTTP(w, r)
	})
}

// Reasons of meridian_tls_handshake_errors_total.
var handshakeErrorReasons = []string{"unknown_sni", "not_tls", "client_closed", "other"}

// serverErrorLog is the HTTPS server's error log. Failed handshakes are
// the internet's background noise (scanners without SNI, clients that give
// up, plain HTTP on the TLS port): each is counted in
// meridian_tls_handshake_errors_total{reason} and logged at DEBUG, and at
// most one WARN a minute sums them up; the server's other errors are
// WARNs, as before.
type serverErrorLog struct {
	log    *slog.Logger
	now    func() time.Time
	failed *prometheus.CounterVec

	mu       sync.Mutex
	lastWarn time.Time
	since    int // handshake failures not yet in a WARN
}

func newServerErrorLog(log *slog.Logger, now func() time.Time) *serverErrorLog {
	el := &serverErrorLog{log: log, now: now, failed: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meridian_tls_handshake_errors_total",
		Help: "TLS handshakes on the HTTPS listener that failed, by reason: unknown_sni (no site serves the name sent, or none was sent), " +
			"not_tls (the client did not speak TLS), client_closed (the client went away or reset), other.",
	}, []string{"reason"})}
	for _, r := range handshakeErrorReasons {
		el.failed.WithLabelValues(r)
	}
	return el
}

// handshakeWarnEvery is how often at most a WARN sums up failed handshakes.
const handshakeWarnEvery = time.Minute

// Write takes one line of net/http's error log.
func (el *serverErrorLog) Write(p []byte) (int, error) {
	msg := strings.TrimSuffix(string(p), "\n")
	if !strings.HasPrefix(msg, "http: TLS handshake error") {
		el.log.Warn(msg)
		return len(p), nil
	}
	reason := "other"
	switch {
	case strings.Contains(msg, "no certificates configured"), strings.Contains(msg, "no site serves TLS"):
		reason = "unknown_sni"
	case strings.Contains(msg, "does not look like a TLS handshake"), strings.Contains(msg, "client sent an HTTP request to an HTTPS server"):
		reason = "not_tls"
	case strings.HasSuffix(msg, "EOF"), strings.Contains(msg, "connection reset"), strings.Contains(msg, "broken pipe"), strings.Contains(msg, "i/o timeout"):
		reason = "client_closed"
	}
	el.failed.WithLabelValues(reason).Inc()
	el.log.Debug(msg, "reason", reason)
	now := el.now()
	el.mu.Lock()
	el.since++
	n := 0
	if now.Sub(el.lastWarn) >= handshakeWarnEvery {
		n, el.since, el.lastWarn = el.since, 0, now
	}
	el.mu.Unlock()
	if n > 0 {
		el.log.Warn("TLS handshakes failed (one such WARN a minute at most; each is a DEBUG line and counted in meridian_tls_handshake_errors_total{reason})",
			"failed", n, "last", msg, "last_reason", reason)
	}
	return len(p), nil
}
