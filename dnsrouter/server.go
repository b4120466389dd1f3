package dnsrouter

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/meridian-edge/meridian/dnsrouter/geo"
	"github.com/meridian-edge/meridian/dnsrouter/health"
	"github.com/meridian-edge/meridian/internal/beacon"
	"github.com/miekg/dns"
	"github.com/nats-io/nats.go"
)

// Server is an authoritative GeoDNS server. Its methods are safe for
// concurrent use.
type Server struct {
	log    *slog.Logger
	met    *metrics
	health *health.Table
	view   atomic.Pointer[view]
	rrl    atomic.Pointer[rrl]
	qcount atomic.Uint64

	mu      sync.Mutex
	started bool
	closed  bool
	udp     *net.UDPConn
	tcp     *net.TCPListener
	conns   map[net.Conn]struct{}
	subs    []*nats.Subscription
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	// control, when set (by tests), runs on each listening socket before
	// it binds, as net.ListenConfig.Control.
	control func(network, address string, c syscall.RawConn) error
}

// New validates opts and builds a server; nothing listens until Start.
// Errors name the offending field (and leave opts.Geo to the caller). On
// success the server owns opts.Geo and closes it on Close.
func New(opts Options) (*Server, error) {
	opts.defaults()
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	met, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("dns: registering metrics: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{log: opts.Logger, met: met, conns: map[net.Conn]struct{}{}, ctx: ctx, cancel: cancel}
	unknown := newUnknownPoPs(opts.Logger, met.unknown)
	s.health = health.New(health.Config{
		PoPs:           healthPoPs(opts.PoPs),
		BeaconInterval: opts.BeaconInterval, MissedBeacons: opts.MissedBeacons,
		ProbeInterval: opts.ProbeInterval, ProbeTimeout: opts.ProbeTimeout,
		Rise: opts.Rise, Fall: opts.Fall,
		Logger:    opts.Logger,
		OnChange:  met.healthChanged,
		OnUnknown: unknown.seen,
	})
	s.view.Store(buildView(opts))
	if r := newRRL(opts.RRL); r != nil {
		s.rrl.Store(r)
	}
	return s, nil
}

func healthPoPs(pops []PoP) []health.PoP {
	out := make([]health.PoP, len(pops))
	for i, p := range pops {
		out[i] = health.PoP{ID: p.ID, HealthURL: p.HealthURL, Capacity: p.Capacity, Threshold: p.CapacityThreshold}
	}
	return out
}

// Start binds UDP and TCP on addr (host:port; port 0 picks a free port,
// the same for both) and returns once both listen. Serving, the health
// probes and beacon ageing run in the background until Close or until ctx
// is done. A port already taken fails with an error naming the address.
func (s *Server) Start(ctx context.Context, addr string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("dns: Start after Close")
	}
	if s.started {
		return errors.New("dns: Start called twice")
	}
	udp, tcp, err := listenBoth(addr, s.control)
	if err != nil {
		return err
	}
	s.udp, s.tcp, s.started = udp, tcp, true
	v := s.view.Load()
	s.log.Info("dns: serving", "udp", udp.LocalAddr().String(), "tcp", tcp.Addr().String(), "zones", len(v.zones), "pops", len(v.pops), "geo", geoName(v.geo))
	pktinfo, err := askDestination(udp)
	if err != nil {
		s.log.Warn("dns: listening on a wildcard address but this system cannot tell which address a UDP query was sent to; answers leave from the address the kernel picks, which resolvers drop when the host has several: listen on each address instead", "addr", addr, "err", err)
	}

	s.wg.Add(2 + v.opts.UDPWorkers)
	go func() {
		defer s.wg.Done()
		s.health.Run(s.ctx)
	}()
	go func() {
		defer s.wg.Done()
		s.acceptTCP(tcp, v.opts.TCPMaxConns, v.opts.TCPIdleTimeout)
	}()
	for range v.opts.UDPWorkers {
		go func() {
			defer s.wg.Done()
			s.serveUDP(udp, pktinfo)
		}()
	}
	// Stop with the caller's context as well as with Close. This goroutine
	// ends on whichever comes first.
	go func() {
		select {
		case <-ctx.Done():
			s.Close()
		case <-s.ctx.Done():
		}
	}()
	return nil
}

func geoName(g geo.Source) string {
	if g == nil {
		return "none (default location)"
	}
	return g.Name()
}

func listenBoth(addr string, control func(network, address string, c syscall.RawConn) error) (*net.UDPConn, *net.TCPListener, error) {
	lc := net.ListenConfig{Control: control}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("dns: listen address %q: want host:port: %w", addr, err)
	}
	// With port 0 the UDP port is free but the same TCP port may not be:
	// try a few times.
	for attempt := 0; ; attempt++ {
		if _, err := net.ResolveUDPAddr("udp", addr); err != nil {
			return nil, nil, fmt.Errorf("dns: listen address %s: %w", addr, err)
		}
		pc, err := lc.ListenPacket(context.Background(), "udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("dns: listen on %s (udp): %w", addr, err)
		}
		udp := pc.(*net.UDPConn)
		taddr := net.JoinHostPort(host, fmt.Sprint(udp.LocalAddr().(*net.UDPAddr).Port))
		l, err := lc.Listen(context.Background(), "tcp", taddr)
		if err == nil {
			return udp, l.(*net.TCPListener), nil
		}
		udp.Close()
		if port != "0" || attempt >= 10 {
			return nil, nil, fmt.Errorf("dns: listen on %s (tcp): %w", taddr, err)
		}
	}
}

// Addr returns the address the server listens on (UDP and TCP share it),
// or "" before Start.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.udp == nil {
		return ""
	}
	return s.udp.LocalAddr().String()
}

// Close stops serving, the probes and the beacon subscription, and waits
// for every goroutine the server started. It is safe to call twice.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.cancel()
	var errs []error
	if s.udp != nil {
		errs = append(errs, s.udp.Close())
	}
	if s.tcp != nil {
		errs = append(errs, s.tcp.Close())
	}
	for c := range s.conns {
		c.Close()
	}
	for _, sub := range s.subs {
		if err := sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrBadSubscription) {
			errs = append(errs, err)
		}
	}
	s.mu.Unlock()
	s.wg.Wait()
	if g := s.view.Load().geo; g != nil {
		errs = append(errs, g.Close())
	}
	return errors.Join(errs...)
}

// WatchBeacons subscribes to the PoPs' health beacons on nc and feeds the
// health table. From then on a PoP that misses MissedBeacons beacons is
// taken out of service. While nc is disconnected the server keeps its last
// view, marked stale (metric meridian_dns_health_stale, a log line), and
// does not age PoPs out.
func (s *Server) WatchBeacons(nc *nats.Conn) error {
	sub, err := beacon.Subscribe(nc, s.health.Observe, func(err error) {
		s.met.badBeacon.Inc()
		s.log.Debug("dns: beacon rejected", "err", err)
	})
	if err != nil {
		return fmt.Errorf("dns: subscribing to beacons: %w", err)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		sub.Unsubscribe()
		return errors.New("dns: WatchBeacons after Close")
	}
	s.subs = append(s.subs, sub)
	s.mu.Unlock()
	s.health.WatchFeed(nc.IsConnected)
	return nil
}

// Reload applies new zones, PoPs, geo source and limits without dropping
// queries: in-flight queries finish on the old configuration, new ones use
// the new. Listener settings (UDPWorkers, TCPMaxConns, TCPIdleTimeout)
// cannot change live and are kept, with a warning; Logger and Registerer
// are kept as well. On error nothing changes and opts.Geo stays the
// caller's to close. On success the server owns opts.Geo and closes the
// previous source (after in-flight queries had time to finish) when it is a
// different one, so give every Reload a freshly opened source (geo.Open) or
// the current one.
func (s *Server) Reload(opts Options) error {
	opts.defaults()
	if err := opts.validate(); err != nil {
		return fmt.Errorf("dns: reload refused, keeping the running configuration: %w", err)
	}
	old := s.view.Load()
	opts.Logger = old.opts.Logger
	opts.Registerer = old.opts.Registerer
	if opts.UDPWorkers != old.opts.UDPWorkers || opts.TCPMaxConns != old.opts.TCPMaxConns || opts.TCPIdleTimeout != old.opts.TCPIdleTimeout {
		s.log.Warn("dns: reload: listener settings need a restart; keeping the running ones")
		opts.UDPWorkers, opts.TCPMaxConns, opts.TCPIdleTimeout = old.opts.UDPWorkers, old.opts.TCPMaxConns, old.opts.TCPIdleTimeout
	}
	nv := buildView(opts)
	s.health.SetPoPs(healthPoPs(opts.PoPs))
	s.view.Store(nv)
	if r := newRRL(opts.RRL); r != nil {
		s.rrl.Store(r)
	} else {
		s.rrl.Store(nil)
	}
	s.log.Info("dns: reloaded", "zones", len(nv.zones), "pops", len(nv.pops), "geo", geoName(nv.geo))
	if old.geo != nil && old.geo != nv.geo {
		s.mu.Lock()
		closed := s.closed
		if !closed {
			s.wg.Add(1)
		}
		s.mu.Unlock()
		if closed {
			return old.geo.Close()
		}
		// Queries that loaded the old view may still be looking it up;
		// close it once they have had their whole time budget.
		go func() {
			defer s.wg.Done()
			t := time.NewTimer(2*old.opts.QueryBudget + time.Second)
			defer t.Stop()
			select {
			case <-t.C:
			case <-s.ctx.Done():
			}
			if err := old.geo.Close(); err != nil {
				s.log.Warn("dns: closing the previous geo source", "source", old.geo.Name(), "err", err)
			}
		}()
	}
	return nil
}

// Health returns the current health snapshot (for admin APIs and tests).
func (s *Server) Health() *health.Snapshot { return s.health.Snapshot() }

// serveUDP reads and answers queries until conn is closed. With pktinfo
// (a wildcard socket) it learns each query's destination address and
// sends the answer from it; see askDestination.
func (s *Server) serveUDP(conn *net.UDPConn, pktinfo bool) {
	buf := make([]byte, dns.MaxMsgSize)
	out := make([]byte, 0, 4096)
	var oob []byte
	from := sourceCache{ipv4: isIPv4Socket(conn)}
	if pktinfo {
		oob = make([]byte, 256)
	}
	for {
		var (
			n, oobn int
			src     netip.AddrPort
			err     error
		)
		if pktinfo {
			n, oobn, _, src, err = conn.ReadMsgUDPAddrPort(buf, oob)
		} else {
			n, src, err = conn.ReadFromUDPAddrPort(buf)
		}
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Debug("dns: udp read", "err", err)
			continue
		}
		resp := s.serve(buf[:n], src.Addr(), true, out)
		if resp == nil {
			continue
		}
		if cap(resp) > cap(out) && cap(resp) <= dns.MaxMsgSize {
			out = resp[:0]
		}
		if pktinfo {
			_, _, err = conn.WriteMsgUDPAddrPort(resp, from.oob(oob[:oobn]), src)
		} else {
			_, err = conn.WriteToUDPAddrPort(resp, src)
		}
		if err != nil && !errors.Is(err, net.ErrClosed) {
			s.log.Debug("dns: udp write", "client", src.String(), "err", err)
		}
	}
}

func (s *Server) acceptTCP(l *net.TCPListener, maxConns int, idle time.Duration) {
	sem := make(chan struct{}, maxConns)
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Debug("dns: tcp accept", "err", err)
			time.Sleep(10 * time.Millisecond) // e.g. EMFILE: do not spin
			continue
		}
		select {
		case sem <- struct{}{}:
		default:
			c.Close() // over the connection limit: refuse rather than queue
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			defer func() { <-sem }()
			s.serveTCPConn(c, idle)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			c.Close()
		}()
	}
}

func (s *Server) serveTCPConn(c net.Conn, idle time.Duration) {
	var src netip.Addr
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		src = ap.Addr()
	}
	var lenBuf [2]byte
	buf := make([]byte, 0, 512)
	out := make([]byte, 2, 4096)
	for {
		c.SetDeadline(time.Now().Add(idle))
		if _, err := io.ReadFull(c, lenBuf[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(lenBuf[:]))
		if cap(buf) < n {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(c, buf); err != nil {
			return
		}
		resp := s.serve(buf, src, false, out[2:2])
		if resp == nil {
			continue
		}
		// One write per answer: length prefix and message together.
		msg := append(out[:2], resp...)
		binary.BigEndian.PutUint16(msg, uint16(len(resp)))
		if _, err := c.Write(msg); err != nil {
			return
		}
		if cap(msg) > cap(out) {
			out = msg[:2]
		}
	}
}

// serve answers one query and applies the time budget, RRL, metrics and
// the query log. It returns nil when nothing must be sent.
func (s *Server) serve(raw []byte, src netip.Addr, udp bool, buf []byte) []byte {
	start := time.Now()
	v := s.view.Load()
	snap, rnd := s.health.Snapshot(), rand.Uint64()
	resp, o, ok := fastAnswer(v, snap, raw, src, udp, rnd, buf)
	if !ok {
		resp, o = answer(v, snap, raw, src, udp, rnd, buf)
	}
	elapsed := time.Since(start)
	if o.drop || resp == nil {
		s.met.dropped.WithLabelValues("malformed").Inc()
		return nil
	}
	if elapsed > v.opts.QueryBudget {
		s.met.dropped.WithLabelValues("budget").Inc()
		s.log.Warn("dns: answer over the time budget, dropped", "name", o.name, "took", elapsed)
		return nil
	}
	if udp {
		if r := s.rrl.Load(); r != nil {
			switch r.check(src, start) {
			case rrlDrop:
				s.met.rrl.WithLabelValues("drop").Inc()
				return nil
			case rrlSlip:
				s.met.rrl.WithLabelValues("slip").Inc()
				resp = slipped(resp)
			}
		}
	}
	s.met.latency.Observe(elapsed.Seconds())
	s.met.queries.WithLabelValues(typeLabel(o.qtype), rcodeLabel(o.rcode), o.pop).Inc()
	s.met.answers[o.kind].Inc()
	if o.wildcard {
		s.met.wildcards.Inc()
	}
	if o.chased > 0 {
		s.met.chased.Add(float64(o.chased))
	}
	if o.ecs {
		s.met.ecs.Inc()
	}
	if o.failOpen {
		s.met.failOpen.Inc()
	}
	if o.spilled {
		s.met.spilled.WithLabelValues(o.shedder).Inc()
	}
	if n := v.opts.QueryLogSample; n > 0 && s.qcount.Add(1)%uint64(n) == 0 {
		if o.name == "" && len(raw) > 12 {
			o.name, _, _ = dns.UnpackDomainName(raw, 12) // the fast path does not build it
		}
		s.log.Info("dns: query", "client", src.String(), "name", o.name, "type", dns.TypeToString[o.qtype],
			"rcode", rcodeLabel(o.rcode), "pop", o.pop, "ecs", o.ecs, "fail_open", o.failOpen, "spilled", o.spilled,
			"answer", o.kind.String(), "wildcard", o.wildcard, "took", elapsed, "reason", o.reason)
	}
	return resp
}

// slipped turns a packed response into its truncated form: header and
// question only, TC set, so the real client retries over TCP where RRL
// does not apply.
func slipped(resp []byte) []byte {
	if len(resp) < 12 {
		return resp
	}
	end := 12
	if binary.BigEndian.Uint16(resp[4:]) == 1 {
		e, err := skipName(resp, 12)
		if err != nil || e+4 > len(resp) {
			end = 12
			binary.BigEndian.PutUint16(resp[4:], 0)
		} else {
			end = e + 4
		}
	}
	resp = resp[:end]
	resp[2] |= 0x02 // TC
	for i := 6; i < 12; i++ {
		resp[i] = 0
	}
	return resp
}
