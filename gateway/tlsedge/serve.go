package tlsedge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

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
}

// Server serves a handler over HTTPS (TCP) and HTTP/3 (UDP). Start binds
// both sockets before returning; Shutdown stops both.
type Server struct {
	opts  ServerOptions
	log   *slog.Logger
	tcpLn net.Listener
	udp   net.PacketConn
	h1    *http.Server
	h3    *http3.Server
	wg    sync.WaitGroup
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
	return &Server{opts: opts, log: log}, nil
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
	errLog := slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)
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
