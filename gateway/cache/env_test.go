package cache_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-edge/meridian/gateway/cache"
	"github.com/meridian-edge/meridian/gateway/cache/cachetest"
)

// clock is the cache's clock in tests: real time shifted by an offset, so a
// test "waits" by advancing it while the origin's Date stays real.
type clock struct{ off atomic.Int64 }

func (c *clock) Now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *clock) Advance(d time.Duration) { c.off.Add(int64(d)) }

// env is a real origin and a real front server with the cache in between,
// both on loopback.
type env struct {
	t      *testing.T
	c      *cache.Cache
	clock  *clock
	origin *httptest.Server
	front  *httptest.Server
	count  atomic.Int64 // origin requests
	reg    *prometheus.Registry
	client *http.Client
	site   cache.SitePolicy
}

type envOpt struct {
	site      cache.SitePolicy
	timeout   time.Duration
	opts      cache.Options
	wrapFront func(http.Handler) http.Handler
	// plainFront serves without cache.Fast and cache.Coalesce (every other
	// env uses them, as the PoP does: so every test here also runs its hits
	// through the fast path and its other requests through the hand-off to
	// net/http).
	plainFront bool
	// wrapListener, when set, wraps the front's TCP listener (under Coalesce).
	wrapListener func(net.Listener) net.Listener
	// server, when set, configures the front's http.Server before it starts.
	server func(*http.Server)
	// sendfile sets cache.FastOptions.Sendfile.
	sendfile bool
	// fast, when set, changes the fast path's options before it starts.
	fast func(*cache.FastOptions)
}

func newEnv(t *testing.T, origin http.HandlerFunc, o envOpt) *env {
	t.Helper()
	e := &env{t: t, clock: &clock{}, reg: prometheus.NewRegistry()}
	e.origin = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.count.Add(1)
		// The origin's clock agrees with the cache's shifted clock.
		w.Header().Set("Date", e.clock.Now().UTC().Format(http.TimeFormat))
		origin(w, r)
	}))
	t.Cleanup(e.origin.Close)
	opts := o.opts
	opts.Now = e.clock.Now
	opts.Registerer = e.reg
	if opts.L1Bytes == 0 {
		opts.L1Bytes = 64 << 20
	}
	opts.PoPID = "test-pop"
	c, err := cache.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	e.c = c
	if o.site.SiteID == "" {
		o.site.SiteID = "site1"
	}
	e.site = o.site
	var h http.Handler = c.Handler(o.site, cachetest.Transport(t, e.origin.URL, o.timeout))
	if o.wrapFront != nil {
		h = o.wrapFront(h)
	}
	e.front = httptest.NewUnstartedServer(h)
	if o.wrapListener != nil {
		e.front.Listener = o.wrapListener(e.front.Listener)
	}
	if o.server != nil {
		o.server(e.front.Config)
	}
	var fast *cache.FastListener
	if !o.plainFront {
		fo := cache.FastOptions{Route: func(string) http.Handler { return h }, Sendfile: o.sendfile}
		if o.fast != nil {
			o.fast(&fo)
		}
		fast = c.Fast(e.front.Config, e.front.Listener, fo)
		e.front.Listener = fast
	}
	e.front.Start()
	t.Cleanup(func() {
		e.front.Close()
		if fast != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := fast.Drain(ctx); err != nil {
				t.Errorf("fast path connections still open after the server closed: %v", err)
			}
		}
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
	tr := &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 256}
	t.Cleanup(tr.CloseIdleConnections)
	e.client = &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return e
}

// frontFor serves h on e's cache behind a fast path of its own, as a PoP
// serves a site after a reload gave it a new handler on the same cache.
func (e *env) frontFor(h http.Handler) *httptest.Server {
	e.t.Helper()
	srv := httptest.NewUnstartedServer(h)
	fast := e.c.Fast(srv.Config, srv.Listener, cache.FastOptions{Route: func(string) http.Handler { return h }})
	srv.Listener = fast
	srv.Start()
	e.t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := fast.Drain(ctx); err != nil {
			e.t.Error(err)
		}
	})
	return srv
}

type reply struct {
	status int
	header http.Header
	body   string
}

func (r reply) cs() string { return strings.Join(r.header.Values("Cache-Status"), ", ") }

// do sends one request to the front and reads the whole reply.
func (e *env) do(method, path string, hdr http.Header, body []byte) reply {
	e.t.Helper()
	var rb io.Reader
	if body != nil {
		rb = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, e.front.URL+path, rb)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range hdr {
		if strings.EqualFold(k, "Host") {
			req.Host = v[0]
			continue
		}
		req.Header[k] = v
	}
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

func (e *env) get(path string, kv ...string) reply {
	e.t.Helper()
	return e.do(http.MethodGet, path, hdr(kv...), nil)
}

// getAE GETs path with Accept-Encoding ae, or none when ae is "".
func (e *env) getAE(path, ae string) reply {
	e.t.Helper()
	if ae == "" {
		return e.get(path)
	}
	return e.get(path, "Accept-Encoding", ae)
}

// fetch GETs path and reads the whole reply without failing the test, for
// requests sent from goroutines other than the test's (see concurrently).
func (e *env) fetch(path string) (reply, error) {
	resp, err := e.client.Get(e.front.URL + path)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{}, fmt.Errorf("GET %s: read body: %w", path, err)
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: string(b)}, nil
}

// concurrently runs one rounds times on each of workers goroutines at once
// (each on its keep-alive connections) and reports every error it returns;
// a worker stops at its first error.
func (e *env) concurrently(workers, rounds int, one func() error) {
	e.t.Helper()
	errs := make(chan error, workers)
	for range workers {
		go func() {
			for range rounds {
				if err := one(); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range workers {
		if err := <-errs; err != nil {
			e.t.Error(err)
		}
	}
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

func newServer(t *testing.T, h http.Handler) *httptest.Server {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}
