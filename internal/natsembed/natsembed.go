// Package natsembed runs a NATS server with JetStream inside the meridian
// process, for `meridian dev` and for tests. Production deployments point at an
// external NATS cluster instead; nothing here is needed for that.
package natsembed

import (
	"fmt"
	"net"
	"strconv"
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
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("nats: embedded server on %s did not become ready (is the port taken?)", opts.Addr)
	}
	return &Server{srv: srv}, nil
}

// ClientURL is the nats:// URL clients connect to.
func (s *Server) ClientURL() string { return s.srv.ClientURL() }

// Shutdown stops the server and waits for it to finish.
func (s *Server) Shutdown() {
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
}
