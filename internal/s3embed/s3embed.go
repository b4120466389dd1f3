// Package s3embed runs an S3-compatible server inside the meridian process,
// so that `meridian dev` has an L3 tier with no setup. It uses
// github.com/johannesboyne/gofakes3 with its bbolt backend (one file under
// Dir), listening on a loopback address.
//
// It is for development only: gofakes3 does not check request signatures and
// its README says it is not for production, so Start refuses non-loopback
// addresses. Production uses a real S3 service or server. Clients should use
// the AWS SDK v2 (as package l3 does): gofakes3 stores minio-go's multipart
// uploads over plain HTTP with their signature framing inside unless
// minio-go's DisableContentSha256 is set.
//
// It owns the embedded server's lifecycle only.
package s3embed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3afero"
	"github.com/spf13/afero"
)

// Options configures the embedded server.
type Options struct {
	// Addr is the loopback address to listen on, e.g. "127.0.0.1:9000".
	// Default "127.0.0.1:0" (a free port; see Endpoint).
	Addr string
	// Dir holds the store. Required.
	Dir string
	// Buckets are created at start if missing.
	Buckets []string
	// Logger receives server errors; nil discards.
	Logger *slog.Logger
}

// Server is a running embedded S3 server.
type Server struct {
	ln   net.Listener
	http *http.Server
	done chan struct{}
	// busy counts the connections carrying a request (ConnState active).
	busy   atomic.Int64
	active sync.Map // net.Conn -> struct{} while it is counted in busy
}

// Start opens the store and starts serving.
func Start(opts Options) (*Server, error) {
	if opts.Dir == "" {
		return nil, errors.New("s3embed: Dir is required; set a directory for the embedded S3 store")
	}
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	host, _, err := net.SplitHostPort(opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("s3embed: Addr %q: %w; use host:port such as 127.0.0.1:9000", opts.Addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("s3embed: Addr %q is not a loopback address; the embedded S3 server checks no credentials, so it only listens on 127.0.0.1 or ::1 (use a real S3 server otherwise)", opts.Addr)
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("s3embed: create %s: %w", opts.Dir, err)
	}
	backend, err := s3afero.MultiBucket(afero.NewBasePathFs(afero.NewOsFs(), opts.Dir))
	if err != nil {
		return nil, fmt.Errorf("s3embed: open store in %s: %w", opts.Dir, err)
	}
	for _, b := range opts.Buckets {
		ok, err := backend.BucketExists(b)
		if err == nil && !ok {
			err = backend.CreateBucket(b)
		}
		if err != nil {
			return nil, fmt.Errorf("s3embed: create bucket %q in %s: %w", b, opts.Dir, err)
		}
	}
	faker := gofakes3.New(backend, gofakes3.WithLogger(gofakes3.DiscardLog()), gofakes3.WithAutoBucket(true))
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("s3embed: listen on %s: %w", opts.Addr, err)
	}
	s := &Server{
		ln: ln, done: make(chan struct{}),
		http: &http.Server{
			Handler:           faker.Server(),
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(opts.Logger.Handler(), slog.LevelWarn),
		},
	}
	s.http.ConnState = s.track
	go func() {
		defer close(s.done)
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			opts.Logger.Error("s3embed: server stopped", "err", err)
		}
	}()
	return s, nil
}

// Endpoint returns the server's base URL, e.g. "http://127.0.0.1:9000", for
// an S3 client with path-style addressing.
func (s *Server) Endpoint() string { return "http://" + s.ln.Addr().String() }

// track keeps busy: the connections between a request's start and its
// end (idle, closed or hijacked).
func (s *Server) track(c net.Conn, st http.ConnState) {
	switch st {
	case http.StateActive:
		if _, loaded := s.active.LoadOrStore(c, struct{}{}); !loaded {
			s.busy.Add(1)
		}
	case http.StateIdle, http.StateClosed, http.StateHijacked:
		if _, was := s.active.LoadAndDelete(c); was {
			s.busy.Add(-1)
		}
	}
}

// Close stops the server, waiting up to 5 s for requests in flight. It
// does not wait for connections that carry none: net/http's Shutdown
// counts a connection that was opened but never sent a request (an S3
// client's transport dials ahead, or keeps a connection whose request was
// cancelled before it was written) as busy for its first 5 s, which made
// a stack's shutdown wait and fail for nothing.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- s.http.Shutdown(ctx) }()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var err error
wait:
	for {
		select {
		case err = <-shut:
			break wait
		case <-tick.C:
			if s.busy.Load() == 0 {
				s.http.Close() // what is left carries no request
				<-shut
				break wait
			}
		}
	}
	<-s.done
	if err != nil {
		return fmt.Errorf("s3embed: %d requests still in flight after 5s: %w", s.busy.Load(), err)
	}
	return nil
}
