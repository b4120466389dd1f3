package origin

import (
	"sync/atomic"
	"time"
)

// Passive health, as nginx's max_fails=1 fail_timeout=10s: one failed attempt
// (connect failure, connect or header timeout, connection broken before the
// headers) marks a server down. One and not more because a site's servers
// are meant to be interchangeable: a failure costs the client that request a
// retry elsewhere (and, for a timeout, the wait), and every further request
// sent to a broken server in the down period would cost the same again. The
// cost of a wrong guess is bounded: the server is tried again after the
// period, and when every server is down the least recently failed one is
// still tried.
type server struct {
	Server
	// prefix and rawPrefix are URL's path without its final "/",
	// decoded and as written: prefixed to every request's path.
	prefix, rawPrefix string
	// failedAt is when the last attempt failed (unix nanos); 0 while the
	// server answers. Non-zero means "down" for meridian_origin_server_down,
	// which reads it when scraped.
	failedAt atomic.Int64
	// downUntil is when the down period ends (unix nanos).
	downUntil atomic.Int64
	// probing is held by the one request that tries a down server after its
	// period (half-open), so that a still-hanging server costs one request
	// the header timeout, not every request arriving at that moment.
	probing atomic.Bool
	// checkDown is set while active health checks hold the server down:
	// requests skip it until the checks pass again, not after DownFor.
	// fails and passes count the probes in a row that failed or passed.
	checkDown     atomic.Bool
	fails, passes atomic.Int32
	// inflight counts the requests sent and not yet finished, for
	// MaxConns.
	inflight atomic.Int32
}

// reserve takes one of s's MaxConns slots; false when they are all
// taken. Every reserve that succeeds is matched by one release, when the
// attempt fails or its body ends.
func (s *server) reserve() bool {
	if s.MaxConns <= 0 {
		return true
	}
	if s.inflight.Add(1) > int32(s.MaxConns) {
		s.inflight.Add(-1)
		return false
	}
	return true
}

// release gives back the slot reserve took.
func (s *server) release() {
	if s.MaxConns > 0 {
		s.inflight.Add(-1)
	}
}

// full reports whether s has MaxConns requests in flight.
func (s *server) full() bool { return s.MaxConns > 0 && s.inflight.Load() >= int32(s.MaxConns) }

// weight is s's Weight, 0 counting as 1.
func (s *server) weight() int { return max(s.Weight, 1) }

// isDown reports whether s is marked down, passively or by health checks.
func (s *server) isDown() bool { return s.failedAt.Load() != 0 || s.checkDown.Load() }

// inherit takes over from prev, the server at the same URL and Host in
// the pool a reload replaces, what is known of its health, so that a
// reload neither sends requests to a server known to be down nor makes
// the checks find that out again.
func (s *server) inherit(prev *server) {
	s.failedAt.Store(prev.failedAt.Load())
	s.downUntil.Store(prev.downUntil.Load())
	s.checkDown.Store(prev.checkDown.Load())
	s.fails.Store(prev.fails.Load())
	s.passes.Store(prev.passes.Load())
}

// pick returns the next server of g in round-robin order that is not in
// skip and not marked down, a backup only when no other server is left. A
// down server whose period is over is returned to one caller at a time,
// with probe set; that caller must call release. A server health checks
// hold down is skipped until they pass. When every remaining server,
// backups included, is down, the least recently failed one is returned:
// "down" is only our guess, and trying beats failing without asking.
func (p *Pool) pick(g *group, skip map[*server]bool) (s *server, probe bool) {
	now := time.Now().UnixNano()
	if s, probe := pickUp(g.order, &g.next, skip, now); s != nil {
		return s, probe
	}
	if s, probe := pickUp(g.backupOrder, &g.nextBackup, skip, now); s != nil {
		return s, probe
	}
	var best *server
	for _, servers := range [2][]*server{g.servers, g.backups} {
		for _, s := range servers {
			if !skip[s] && (best == nil || s.failedAt.Load() < best.failedAt.Load()) {
				best = s
			}
		}
	}
	return best, false
}

// pickUp is pick's round-robin walk, from the slot after next's, over a
// schedule (group.order) for a server that is up, or down with its period
// over and not probed by another request.
func pickUp(order []*server, next *atomic.Uint64, skip map[*server]bool, now int64) (*server, bool) {
	n := len(order)
	if n == 0 {
		return nil, false
	}
	start := int(next.Add(1) % uint64(n))
	for i := range n {
		s := order[(start+i)%n]
		if skip[s] || s.checkDown.Load() || s.full() {
			continue
		}
		if s.failedAt.Load() == 0 {
			return s, false
		}
		if s.downUntil.Load() <= now && s.probing.CompareAndSwap(false, true) {
			return s, true
		}
	}
	return nil, false
}

// failed marks s down for the pool's down period.
func (p *Pool) failed(s *server, err error) {
	now := time.Now()
	s.failedAt.Store(now.UnixNano())
	s.downUntil.Store(now.Add(p.opts.DownFor).UnixNano())
	p.log.Warn("origin server failed; marked down", "site", p.opts.Site, "server", s.URL.Host, "for", p.opts.DownFor, "err", err)
}

// answered clears a server's down mark once it sent response headers.
func (p *Pool) answered(s *server) {
	if s.failedAt.Load() == 0 || s.failedAt.Swap(0) == 0 {
		return
	}
	p.log.Info("origin server answers again; marked up", "site", p.opts.Site, "server", s.URL.Host)
}

// hostServers is the servers of a pool at one host:port: the down series is
// labelled by host, and a pool may list one host twice (say, with two Host
// headers), which must still make one series.
type hostServers struct {
	host    string
	servers []*server
}

func uniqueHosts(servers []*server) []hostServers {
	var out []hostServers
	idx := map[string]int{}
	for _, s := range servers {
		i, ok := idx[s.URL.Host]
		if !ok {
			i = len(out)
			idx[s.URL.Host] = i
			out = append(out, hostServers{host: s.URL.Host})
		}
		out[i].servers = append(out[i].servers, s)
	}
	return out
}

// down reports whether any server at the host is marked down.
func (h hostServers) down() bool {
	for _, s := range h.servers {
		if s.isDown() {
			return true
		}
	}
	return false
}
