// Package natsembed runs a NATS server with JetStream inside the meridian
// process, for `meridian dev` and for tests. Production deployments point at an
// external NATS cluster instead; nothing here is needed for that.
package natsembed

import (
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Options configures an embedded server.
type Options struct {
	// Addr is host:port to listen on; port 0 picks a free port.
	Addr string
	// StoreDir holds JetStream state; empty disables JetStream.
	StoreDir string
	// ServerName names the server in logs and cluster views.
	ServerName string
}

// Server is a running embedded NATS server.
type Server struct {
	srv *server.Server
}

// Start starts the server and waits until it accepts clients.
func Start(opts Options) (*Server, error) {
	host, portStr, err := net.SplitHostPort(opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("nats: listen address %q: %w (want host:port)", opts.Addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("nats: listen address %q: port is not a number", opts.Addr)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	so := &server.Options{
		ServerName: opts.ServerName,
		Host:       host,
		Port:       port,
		NoSigs:     true,
		NoLog:      true,
		MaxPayload: 8 << 20,
	}
	if opts.StoreDir != "" {
		so.JetStream = true
		so.StoreDir = opts.StoreDir
	}
	srv, err := server.NewServer(so)
	if err != nil {
		return nil, fmt.Errorf("nats: embedded server: %w", err)
	}
	// The server logs why it cannot start (a taken port, a JetStream store
	// it cannot open) instead of returning it: kept, for the error.
	why := &startLog{}
	srv.SetLogger(why, false, false)
	go srv.Start()
	// JetStream recovers its store before the server listens, which on a
	// loaded machine under the race detector has taken more than 10 s; a
	// fatal error ends the wait at once.
	deadline := time.Now().Add(readyTimeout)
	for !srv.ReadyForConnections(50 * time.Millisecond) {
		fatal, last := why.get()
		if fatal || time.Now().After(deadline) {
			srv.Shutdown()
			if last != "" {
				return nil, fmt.Errorf("nats: embedded server on %s did not start: %s", opts.Addr, last)
			}
			return nil, fmt.Errorf("nats: embedded server on %s was not ready within %s", opts.Addr, readyTimeout)
		}
	}
	return &Server{srv: srv}, nil
}

// readyTimeout bounds the wait for a starting server to accept clients.
const readyTimeout = 30 * time.Second

// ClientURL is the nats:// URL clients connect to.
func (s *Server) ClientURL() string { return s.srv.ClientURL() }

// Shutdown stops the server and waits for it to finish.
func (s *Server) Shutdown() {
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
}

// startLog is a server.Logger that keeps the last error or fatal message
// the server logged, and whether one was fatal, and drops the rest (the
// embedded server logs nothing else: NoLog).
type startLog struct {
	mu    sync.Mutex
	msg   string
	fatal bool
}

func (l *startLog) get() (fatal bool, msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fatal, l.msg
}

func (l *startLog) keep(fatal bool, format string, v ...any) {
	l.mu.Lock()
	l.msg = fmt.Sprintf(format, v...)
	l.fatal = l.fatal || fatal
	l.mu.Unlock()
}

// Noticef drops a notice.
func (l *startLog) Noticef(string, ...any) {}

// Warnf drops a warning.
func (l *startLog) Warnf(string, ...any) {}

// Debugf drops a debug line.
func (l *startLog) Debugf(string, ...any) {}

// Tracef drops a trace line.
func (l *startLog) Tracef(string, ...any) {}

// Errorf keeps the message.
func (l *startLog) Errorf(format string, v ...any) { l.keep(false, format, v...) }

// Fatalf keeps the message: the server does not start after it.
func (l *startLog) Fatalf(format string, v ...any) { l.keep(true, format, v...) }
