package origin

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

// HealthCheck probes a pool's servers in the background (active health),
// as nginx's health_check, HAProxy's option httpchk or a CDN's origin
// health checks do: a server that fails Fails probes in a row is taken out
// until it passes Passes in a row, without a client request paying for
// the discovery. Passive health (a failed request marks its server down
// for DownFor) still applies on top.
type HealthCheck struct {
	// Path is requested with GET on each server, e.g. "/healthz", as it
	// is: a server URL's path prefix does not apply. Empty: no active
	// checks.
	Path string
	// Host is the Host header of a probe when the server has no
	// HostHeader of its own; default the server's host.
	Host string
	// Interval is the time between the starts of two probes of a server.
	// Default 5s.
	Interval time.Duration
	// Timeout bounds one probe, connect included. Default 2s, at most
	// Interval.
	Timeout time.Duration
	// Fails is how many probes in a row must fail to mark a server down,
	// Passes how many must pass to mark it up again. Default 2 each.
	Fails, Passes int
}

// CheckUserAgent is the User-Agent of health probes, so that an origin's
// logs can tell them from clients.
const CheckUserAgent = "meridian-health-check"

func (h *HealthCheck) defaults() {
	if h.Interval <= 0 {
		h.Interval = 5 * time.Second
	}
	if h.Timeout <= 0 {
		h.Timeout = 2 * time.Second
	}
	h.Timeout = min(h.Timeout, h.Interval)
	if h.Fails <= 0 {
		h.Fails = 2
	}
	if h.Passes <= 0 {
		h.Passes = 2
	}
}

// startChecks probes every server until ctx ends.
func (p *Pool) startChecks(ctx context.Context) {
	if p.opts.HealthCheck.Path == "" {
		return
	}
	for _, s := range p.servers {
		go p.checkLoop(ctx, s)
	}
}

func (p *Pool) checkLoop(ctx context.Context, s *server) {
	hc := p.opts.HealthCheck
	t := time.NewTicker(hc.Interval)
	defer t.Stop()
	for {
		err := p.probe(ctx, s)
		if ctx.Err() != nil {
			return
		}
		p.checked(s, err)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// probe makes one health request to s: nil when it answered 2xx or 3xx in
// time, as nginx's health_check passes by default.
func (p *Pool) probe(ctx context.Context, s *server) error {
	hc := p.opts.HealthCheck
	ctx, cancel := context.WithTimeout(ctx, hc.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL.Scheme+"://"+s.URL.Host+hc.Path, nil)
	if err != nil {
		return err
	}
	switch {
	case s.HostHeader != "":
		req.Host = s.HostHeader
	case hc.Host != "":
		req.Host = hc.Host
	}
	req.Header.Set("User-Agent", CheckUserAgent)
	resp, err := p.transport.RoundTrip(req)
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			return fmt.Errorf("no answer within %s", hc.Timeout)
		}
		return err
	}
	// Read a little so that the connection can be reused; a health page
	// is small, and a large one is not worth reading to its end.
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("answered %d", resp.StatusCode)
	}
	return nil
}

// checked counts a probe's result and moves s across the thresholds. Only
// the server's own loop writes its counters.
func (p *Pool) checked(s *server, err error) {
	hc := p.opts.HealthCheck
	result := "pass"
	if err != nil {
		result = "fail"
	}
	if m := p.opts.Metrics; m != nil {
		m.checks.WithLabelValues(p.opts.Site, s.URL.Host, result).Inc()
	}
	if err != nil {
		s.passes.Store(0)
		if n := s.fails.Add(1); n >= int32(hc.Fails) && !s.checkDown.Load() {
			s.failedAt.Store(time.Now().UnixNano())
			s.checkDown.Store(true)
			p.log.Warn("origin server failed its health checks; marked down", "site", p.opts.Site, "server", s.URL.Host,
				"path", hc.Path, "fails", n, "err", err)
		}
		return
	}
	s.fails.Store(0)
	if n := s.passes.Add(1); n >= int32(hc.Passes) && s.checkDown.Load() {
		s.checkDown.Store(false)
		s.failedAt.Store(0)
		p.log.Info("origin server passes its health checks again; marked up", "site", p.opts.Site, "server", s.URL.Host, "passes", n)
	}
}
