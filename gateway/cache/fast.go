package cache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Why a fast path: with net/http's server, a keep-alive L1 hit costs about
// 16 µs of CPU here against nginx's 7.5 µs, and the profile puts the
// difference in net/http itself, not the cache: parsing into a Request, a
// header map filled, cloned and sorted per response, the background read
// and its deadline per request, a context per request. None of that can be
// tuned from a handler. So the PoP answers the requests that are fresh hits
// on plain HTTP/1.1 itself (and the 304s of revalidating them), with a
// pre-serialised header block per stored response, and leaves every other
// request, with its bytes untouched, to the http.Server: a connection starts
// on the fast path and moves to net/http at its first request the fast path
// does not answer, and comes back after net/http's response when that left
// it reusable (fastreclaim.go). The lookup made for the handed-off request
// goes with it, so the handler does not count the access twice (admission
// counts accesses).

// FastOptions configures Cache.Fast.
type FastOptions struct {
	// Route returns the handler that serves a request's Host (as sent), or
	// nil. The fast path answers only for handlers made by this Cache's Handler;
	// for anything else (a plugin chain, an unknown host) the request goes
	// to the server.
	Route func(host string) http.Handler
	// Observe, when set, is called after each response the fast path sends,
	// like the server's logging and metrics middleware would be. o is valid
	// during the call only.
	Observe func(o *FastObservation)
	// ServerPaths are path prefixes whose requests always go to the server
	// (for example ACME HTTP-01 challenges, answered by its handler chain).
	ServerPaths []string
	// RequestIDHeader names the request ID header and NewRequestID makes a
	// request's ID from the client's value of it (empty when none), as the
	// server's middleware does (middleware.NewRequestID): set both, or IDs
	// are left alone. The ID is set on the response and on the request
	// given to Observe.
	RequestIDHeader string
	NewRequestID    func(client string) string
	// Sendfile sends bodies that a tier holds in a local file (L2 hits) by
	// sendfile(2) from the file instead of writing them from its mapping
	// (tier.FileWriter; nginx's sendfile on). Off by default: on loopback,
	// where it could be measured here, it cost more CPU than the write it
	// saves (bench/l2proxy/compare.sh, 1 MiB hits 345-370 µs against
	// 251-256 µs, 16 KiB even); a NIC with segmentation offload may differ.
	Sendfile bool
	// ClientAddr, when set, returns each request's client from the
	// connection's peer (its RemoteAddr) and the request's header fields,
	// for a PoP behind trusted L7 proxies (gateway/realip's
	// Resolver.Client): values gives a header's values by lower-case name,
	// one per field line in the order sent, valid during the call. It
	// returns peer when the request names no other client. Observe's
	// RemoteAddr and the hooks' Client are its answer.
	ClientAddr func(peer netip.AddrPort, values func(lowerName string) [][]byte) netip.AddrPort
	// Logger receives accept errors; nil discards.
	Logger *slog.Logger
}

// FastObservation is a response the fast path sent (FastOptions.Observe):
// what an access log and request metrics record. Its request was plain
// HTTP/1.1.
type FastObservation struct {
	// Site is the site's SitePolicy.SiteID.
	Site string
	// Method (GET or HEAD), Host and RequestURI as sent; RemoteAddr as
	// net/http's Request has it.
	Method, Host, RequestURI, RemoteAddr string
	// RequestID is the ID set on the response ("" without NewRequestID).
	RequestID string
	Status    int
	Bytes     int64 // body bytes sent
	Elapsed   time.Duration
	// Generated is why the PoP made this answer itself ("" when it is a
	// stored response), as middleware.MarkGenerated says on net/http.
	Generated string
	// BodyError is why the body was cut after the header went out ("" when
	// it was sent whole, or the client went away): "store-error" when the
	// tier's copy failed mid-way (an L2 block failing its checksum), as
	// middleware.MarkBodyError says on net/http.
	BodyError string
	// Cache is what the cache did, in the access log's words
	// (middleware.CacheResult): "hit-l1" (-l2, -l3) for a stored
	// response; "" when the PoP answered without it.
	Cache string

	req *fastRequest // its header fields, for Field
}

// Field returns the request's header field lowerName (a lower-case name,
// e.g. "user-agent") as sent, nil when absent: a view of the connection's
// buffer, valid during the Observe call only (copy to keep). It looks the
// field up when asked, so an observer that does not log pays nothing.
func (o *FastObservation) Field(lowerName string) []byte {
	if o.req == nil {
		return nil
	}
	for _, f := range o.req.fields[:o.req.nf] {
		if fold(f[0], lowerName) {
			return f[1]
		}
	}
	return nil
}

// FastListener is the listener Cache.Fast returns: serve it with the server that
// Fast prepared.
type FastListener struct {
	c      *Cache
	inner  net.Listener
	srv    *http.Server
	opts   FastOptions
	idName string // lower-case RequestIDHeader, for the parser
	idKey  string // canonical RequestIDHeader, for Observe's request
	log    *slog.Logger

	handoff chan net.Conn
	done    chan struct{}
	once    sync.Once
	mu      sync.Mutex
	conns   map[*fastConn]struct{}
	closing atomic.Bool
	wg      sync.WaitGroup // fast connections and the accept loop
	bufs    sync.Pool
}

// Fast prepares srv, before it serves the returned listener, to have fresh
// hits of this cache on plain HTTP/1.1 answered without net/http (see the comment
// at the top of fast.go), and everything else by srv as usual:
//
//	fl := c.Fast(srv, ln, cache.FastOptions{Route: ...})
//	go srv.Serve(fl)
//	...
//	srv.Shutdown(ctx); fl.Drain(ctx)
//
// Like Coalesce, which it includes, it chains srv.ConnContext, and applies
// to plain-text listeners only (HTTP/2 with prior knowledge goes to srv).
// srv.Shutdown and Close close idle fast connections at once and the others
// after the response they are sending; Drain waits for those.
func (c *Cache) Fast(srv *http.Server, ln net.Listener, opts FastOptions) *FastListener {
	Coalesce(srv, nil) // the ConnContext hook only; the listener is ours
	l := &FastListener{
		c: c, inner: ln, srv: srv, opts: opts, log: opts.Logger,
		handoff: make(chan net.Conn),
		done:    make(chan struct{}),
		conns:   map[*fastConn]struct{}{},
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	if opts.NewRequestID != nil {
		l.idName = strings.ToLower(opts.RequestIDHeader)
		l.idKey = textproto.CanonicalMIMEHeaderKey(opts.RequestIDHeader)
	}
	l.bufs.New = func() any { b := make([]byte, fastBufSize); return &b }
	// A connection handed to the server comes back to the fast path after
	// each response that leaves it reusable (see reclaim); and the lookup
	// the fast path made for its first request is used by that request only.
	inner := srv.Handler
	if inner == nil {
		inner = http.DefaultServeMux
	}
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cc, _ := r.Context().Value(connValue).(*coalescingConn)
		if cc != nil {
			if f := cc.found.Load(); f != nil && f.reqID != "" {
				// The request ID the site's hooks saw: the server's request
				// ID middleware keeps a valid one, so the response and the
				// plugins agree (see serveFast).
				r.Header.Set(l.idKey, f.reqID)
			}
		}
		if cc == nil || cc.fast != l || !reclaimable(r) {
			inner.ServeHTTP(w, r)
			if cc != nil && cc.found.Load() != nil {
				cc.dropFound()
			}
			return
		}
		rw := &reclaimWriter{ResponseWriter: w}
		inner.ServeHTTP(rw, r)
		cc.dropFound()
		// Only for a site whose hits the fast path answers: a connection
		// of a plugin site would just be handed back at its next request,
		// paying a hand-off and a hijack each time. And only after as many
		// complete responses as the connection's bounces call for.
		if rw.complete(r) && !l.closing.Load() && l.answers(r.Host) {
			if cc.responses++; cc.responses >= reclaimAfter(cc.streak) {
				l.reclaim(w, cc.streak)
			}
		}
	})
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

// reclaimAfter is how many complete responses net/http serves on a handed-off
// connection of bounce streak s (fastConn.streak) before it is taken back: 1
// for a connection the fast path answered on (or a new one), then doubling
// with each immediate bounce, up to 64. A bounce is a request handed on for
// what the client asked (not fastFound.cacheState: a miss or a stale
// object). A
// browser that misses now and then comes back at once; a client whose every
// request goes to net/http pays a hand-off and a hijack once per 64
// requests instead of each time (on a `meridian dev` PoP, wrk sending a header the fast path
// hands on: 61.7 µs of CPU per request before, 25.0–25.8 µs after); a
// connection whose traffic turns into hits is back within 64 responses.
func reclaimAfter(s int) int {
	return 1 << min(max(s-1, 0), 6)
}

// fastBufSize is the read buffer of a fast connection: a request head that
// does not fit goes to net/http (whose limit is larger).
const fastBufSize = 4 << 10

// Accept returns the connections the fast path hands to the server.
func (l *FastListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.handoff:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Addr is the listening address.
func (l *FastListener) Addr() net.Addr { return l.inner.Addr() }

// Close stops accepting, closes idle fast connections, and has the others
// close after their current response.
func (l *FastListener) Close() error {
	var err error
	l.once.Do(func() {
		l.closing.Store(true)
		err = l.inner.Close()
		close(l.done)
		l.mu.Lock()
		for c := range l.conns {
			if c.state.CompareAndSwap(fastIdle, fastClosed) {
				_ = c.conn.Close()
			}
		}
		l.mu.Unlock()
	})
	return err
}

// Drain waits, after Close, until the fast path's connections are gone, or
// ctx ends (then it closes them).
func (l *FastListener) Drain(ctx context.Context) error {
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		l.mu.Lock()
		for c := range l.conns {
			_ = c.conn.Close()
		}
		l.mu.Unlock()
		<-done
		return ctx.Err()
	}
}

func (l *FastListener) acceptLoop() {
	defer l.wg.Done()
	var backoff time.Duration
	for {
		c, err := l.inner.Accept()
		if err != nil {
			if l.closing.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.log.Warn("cache: fast path: accept failed; retrying", "err", err, "in", backoff)
			select {
			case <-time.After(backoff):
			case <-l.done:
				return
			}
			continue
		}
		backoff = 0
		if !l.start(c, nil, 0, true) {
			return
		}
	}
}

// start serves c on the fast path, initial being bytes already read from it
// and streak its bounce count (see fastConn.streak); accepted: c is new
// from the listener, not back from net/http. False (and c closed) once the
// listener is closed.
func (l *FastListener) start(c net.Conn, initial []byte, streak int, accepted bool) bool {
	fc := &fastConn{l: l, conn: c, streak: streak, accepted: accepted}
	l.mu.Lock()
	if l.closing.Load() {
		l.mu.Unlock()
		_ = c.Close()
		return false
	}
	l.conns[fc] = struct{}{}
	l.wg.Add(1)
	l.mu.Unlock()
	go fc.serve(initial)
	return true
}

func (l *FastListener) forget(fc *fastConn) {
	l.mu.Lock()
	delete(l.conns, fc)
	l.mu.Unlock()
	l.wg.Done()
}

// preambleSocket is a listener's connection that is a TCP socket once a
// preamble is read (gateway/realip.Conn: the PROXY protocol header): Socket
// reads it, then returns the socket and the bytes read past the preamble,
// which the caller takes over. The connection itself is kept for
// RemoteAddr, deadlines and Close.
type preambleSocket interface {
	Socket() (*net.TCPConn, []byte, error)
}

// Connection states, for Close.
const (
	fastIdle   int32 = iota // waiting for a request: Close closes it
	fastActive              // reading a request or answering it
	fastClosed
)

type fastConn struct {
	l     *FastListener
	conn  net.Conn
	state atomic.Int32
	buf   []byte
	bufp  *[]byte
	r, w  int // unread bytes: buf[r:w]
	req   fastRequest
	// rule is the site's path rule the request matched, nil when none.
	rule   *PathRule
	out    []byte
	remote string // RemoteAddr, for Observe
	// rc is the socket's descriptor access when the connection is a TCP
	// socket itself (tcpSocket; nil otherwise): with it, reads, writev and
	// sendfile go to the system directly.
	rc  syscall.RawConn
	hw  fileHeadWriter // the connection's writer, reused per response
	key []byte         // scratch for a request's cache key
	// lastHost is the last request's Host (see host).
	lastHost string
	// streak counts the times in a row this connection came back from
	// net/http and handed its very next request off again (a client whose
	// every request the fast path hands on: Range, Authorization, a
	// Cache-Control on each request). It makes net/http keep the connection
	// for more responses before the next reclaim (see reclaimAfter), so
	// such a client does not pay a hand-off and a hijack per request.
	streak int
	served bool // a request was answered here since the connection came
	// handedOff: the connection went to the server (serve must not close
	// it). For readHead: the current head's deadline, whether the idle
	// deadline is set for the current wait, and whether the last raw read
	// emptied the socket.
	handedOff, idleArmed, drained bool
	headerBy                      time.Time
	// accepted: the connection is new from the listener and no request
	// head has been read from it yet (the header timeout applies from
	// the accept, not the idle timeout).
	accepted bool
	// For a site's hooks (fasthooks.go): the last path (reused as
	// lastHost), the client's address, parsed once (from remoteAddr), and
	// the request and header views handed to them, reused.
	lastPath string
	client   netip.AddrPort
	hookReq  FastHookRequest
	fh       FastHeader
	// For Observe: the last request target (reused as lastHost) and the
	// observation handed over, reused.
	lastTarget string
	obs        FastObservation
	// For ClientAddr: the connection's peer (invalid until the first
	// request; noPeer when it has no IP address), and the header values
	// handed to it, reused.
	peer     netip.AddrPort
	noPeer   bool
	vals     [][]byte
	valuesFn func(string) [][]byte
}

func (c *fastConn) serve(initial []byte) {
	bp := c.l.bufs.Get().(*[]byte)
	c.bufp, c.buf = bp, *bp
	defer func() {
		if !c.handedOff {
			_ = c.conn.Close()
		}
		c.l.bufs.Put(c.bufp)
		c.l.forget(c)
	}()
	// The socket is found here, in the connection's goroutine, not in the
	// accept loop: a listener's connection that reads a preamble first
	// (gateway/realip's PROXY header) may wait for it.
	c.rc = tcpSocket(c.conn)
	if ps, ok := c.conn.(preambleSocket); ok && c.rc == nil {
		tc, pending, err := ps.Socket()
		if err != nil {
			return // refused (and closed) by the listener
		}
		if tc != nil {
			c.rc = tcpSocket(tc)
			if len(pending) > 0 {
				initial = append(initial[:len(initial):len(initial)], pending...)
			}
		}
	}
	c.hw = fileHeadWriter{headWriter: headWriter{conn: c.conn, vw: newVecWriter(c.rc)}}
	if c.l.opts.Sendfile {
		c.hw.fs = connSender(c.rc)
	}
	if len(initial) > len(c.buf) {
		c.handedOff = c.handOffBytes(initial, nil)
		return
	}
	c.w = copy(c.buf, initial)
	if c.rc != nil {
		// The whole connection is served inside one raw read, so that the
		// poller's readiness is not reset before every read (as each
		// conn.Read does): after a read that left the socket empty, the
		// next request is waited for instead of tried first. A keep-alive
		// client sends its next request only after reading the response,
		// so trying first fails with EAGAIN on most requests: a system call
		// per hit, which nginx avoids the same way (its recv after a short
		// read waits for the next epoll event). An error here is a closed
		// connection or an expired deadline: the connection closes.
		_ = c.rc.Read(func(fd uintptr) bool { return c.loop(int(fd)) })
		return
	}
	c.loop(-1)
}

// loop serves requests until the connection is done (true: closed, to be
// closed, or handed off, c.handedOff telling which) or, with a raw
// descriptor (fd >= 0), until the socket must be waited for (false). With
// fd < 0 it reads through c.conn and never returns false.
func (c *fastConn) loop(fd int) bool {
	for {
		end, st := c.readHead(fd)
		switch st {
		case headRead:
		case headWait:
			return false
		default:
			c.handedOff = st == headHandedOff
			return true
		}
		start := time.Now()
		head := c.buf[c.r : c.r+end]
		if !parseFastRequest(head, c.l.idName, &c.req) {
			c.l.c.metrics.fastUnparsed.Inc()
			c.handedOff = c.handOff(nil)
			return true
		}
		if c.l.opts.ClientAddr != nil && !c.noPeer {
			c.resolveClient()
		}
		var (
			sh    *siteHandler
			hooks FastHooks
		)
		if !c.l.serverPath(c.req.path) {
			sh, hooks = fastSite(c.l.route(c.host(c.req.host)))
		}
		c.rule = nil
		if sh != nil && len(sh.site.Rules) > 0 {
			c.rule = ruleFor(&sh.site, c.req.path)
		}
		if sh == nil || sh.c != c.l.c || sh.site.Bypass || (c.rule != nil && (c.rule.Bypass || c.rule.Redirect != "")) {
			c.l.c.metrics.fastRoute.Inc()
			c.handedOff = c.handOff(nil)
			return true
		}
		found, served, err := sh.serveFast(c, hooks, start)
		if !served {
			if err == nil {
				c.handedOff = c.handOff(found)
			}
			return true
		}
		c.r += end
		c.served = true
		if c.req.close || c.l.closing.Load() {
			return true
		}
	}
}

func (l *FastListener) serverPath(p []byte) bool {
	for _, pre := range l.opts.ServerPaths {
		if bytes.HasPrefix(p, []byte(pre)) {
			return true
		}
	}
	return false
}

// answers reports whether the fast path answers hits for host.
func (l *FastListener) answers(host string) bool {
	if l.opts.Route == nil {
		return false
	}
	sh, _ := fastSite(l.opts.Route(host))
	return sh != nil && sh.c == l.c && !sh.site.Bypass
}

func (l *FastListener) route(host string) http.Handler {
	if l.opts.Route == nil {
		return nil
	}
	return l.opts.Route(host)
}

// host returns b as a string, reusing the connection's last one when b
// holds the same bytes (a connection nearly always names one host), so a
// request's routing allocates nothing. Routing itself runs per request.
func (c *fastConn) host(b []byte) string {
	if string(b) != c.lastHost {
		c.lastHost = string(b)
	}
	return c.lastHost
}

// Outcomes of readHead.
const (
	headRead      = iota
	headDone      // closed, timed out, or Close called: close the connection
	headHandedOff // a head the fast path does not read was handed off
	headWait      // wait until the socket is readable, then call again
)

// readHead reads until buf[r:] holds a complete request head and returns its
// length. With a raw descriptor (fd >= 0) it reads the socket itself and
// returns headWait instead of reading when the last read left the socket
// empty or a read found it so; without one it reads through c.conn.
func (c *fastConn) readHead(fd int) (int, int) {
	srv := c.l.srv
	for {
		if c.r < c.w {
			switch i := indexHeadEnd(c.buf[c.r:c.w]); {
			case i >= 0:
				if c.state.Swap(fastActive) == fastClosed {
					return 0, headDone
				}
				c.headerBy, c.idleArmed, c.accepted = time.Time{}, false, false
				return i, headRead
			case i == bareLF:
				return 0, c.handOffHead()
			}
		} else {
			c.r, c.w = 0, 0
		}
		if c.w == len(c.buf) {
			if c.r == 0 {
				return 0, c.handOffHead() // a head larger than the buffer
			}
			c.w = copy(c.buf, c.buf[c.r:c.w])
			c.r = 0
		}
		if c.r == c.w {
			// Between requests: idle, and Close may close it.
			c.state.Store(fastIdle)
			if c.l.closing.Load() {
				return 0, headDone
			}
			if c.accepted {
				// A new connection's first request has, as net/http gives
				// it, the header timeout from the accept: a client that
				// connects and sends nothing is not an idle keep-alive
				// connection, and must not hold a socket for IdleTimeout.
				if c.headerBy.IsZero() {
					d := headerTimeout(srv)
					if d <= 0 {
						d = idleTimeout(srv) // no header timeout: still not forever
					}
					if d > 0 {
						c.headerBy = time.Now().Add(d)
						_ = c.conn.SetReadDeadline(c.headerBy)
					}
				}
			} else if d := idleTimeout(srv); d > 0 && !c.idleArmed {
				c.idleArmed = true // once per wait, not per wake-up
				_ = c.conn.SetReadDeadline(time.Now().Add(d))
			}
		} else if c.headerBy.IsZero() {
			// Kept across wake-ups: a head sent a byte at a time must still
			// be complete by this deadline.
			if d := headerTimeout(srv); d > 0 {
				c.headerBy = time.Now().Add(d)
				_ = c.conn.SetReadDeadline(c.headerBy)
			}
		}
		var (
			n   int
			err error
		)
		if fd < 0 {
			n, err = c.conn.Read(c.buf[c.w:])
		} else {
			if c.drained {
				c.drained = false
				return 0, headWait
			}
			room := len(c.buf) - c.w
			if n, err = readFD(fd, c.buf[c.w:]); err == syscall.EAGAIN {
				return 0, headWait
			}
			// A short read took all the socket held.
			c.drained = err == nil && n < room
		}
		c.w += n
		if err != nil {
			if n > 0 && c.r < c.w {
				continue // look at what arrived with the error first
			}
			return 0, headDone
		}
		if c.state.Load() == fastClosed {
			return 0, headDone
		}
	}
}

// handOffHead hands off a request the fast path cannot even delimit.
func (c *fastConn) handOffHead() int {
	c.l.c.metrics.fastUnparsed.Inc()
	if c.handOff(nil) {
		return headHandedOff
	}
	return headDone
}

// bareLF: the head ends in LF LF, which the fast path leaves to net/http.
const bareLF = -2

// indexHeadEnd returns the length of the request head at the start of b, -1
// when it is not complete yet, or bareLF.
func indexHeadEnd(b []byte) int {
	for i := 0; i+1 < len(b); i++ {
		if b[i] != '\n' {
			continue
		}
		if b[i+1] == '\n' {
			return bareLF // net/http's to handle
		}
		if i > 0 && b[i-1] == '\r' && i+2 < len(b) && b[i+1] == '\r' && b[i+2] == '\n' {
			return i + 3
		}
	}
	return -1
}

func idleTimeout(s *http.Server) time.Duration {
	if s.IdleTimeout > 0 {
		return s.IdleTimeout
	}
	return s.ReadTimeout
}

func headerTimeout(s *http.Server) time.Duration {
	if s.ReadHeaderTimeout > 0 {
		return s.ReadHeaderTimeout
	}
	return s.ReadTimeout
}

// handOff gives the connection, with every byte not yet answered, to the
// server. found is the lookup made for the first of those requests.
func (c *fastConn) handOff(found *fastFound) bool {
	return c.handOffBytes(append([]byte(nil), c.buf[c.r:c.w]...), found)
}

// handOffBytes hands off the connection with rest to be read first.
func (c *fastConn) handOffBytes(rest []byte, found *fastFound) bool {
	_ = c.conn.SetReadDeadline(time.Time{})
	// A hand-off for what the client asked (not for the cache's state,
	// which the next request need not share) right after coming back, or
	// as a new connection's first request, is a bounce.
	streak := 1
	if !found.cacheState() && !c.served {
		streak = c.streak + 1
	}
	cc := &coalescingConn{Conn: &prefixConn{Conn: c.conn, pre: rest}, fast: c.l, streak: streak}
	cc.found.Store(found)
	select {
	case c.l.handoff <- cc:
		return true
	case <-c.l.done:
		found.release()
		return false
	}
}

// prefixConn reads pre before the connection.
type prefixConn struct {
	net.Conn
	pre []byte
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.pre) > 0 {
		n := copy(b, p.pre)
		p.pre = p.pre[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

// WriteTo is not offered (net.TCPConn's would bypass pre); ReadFrom keeps
// sendfile for responses net/http copies from files.
func (p *prefixConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := p.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(p.Conn, r)
}

// CloseWrite keeps net/http's graceful close of TCP connections.
func (p *prefixConn) CloseWrite() error {
	if cw, ok := p.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// fastFound is the fast path's lookup for the request it hands off.
type fastFound struct {
	key      string
	st       *stored
	varyMiss bool
	// stale: the stored response is not a fresh 200 (st may be nil: a miss).
	stale bool
	// noLookup: none was made (the site's hooks changed more than
	// headers); key and st are empty.
	noLookup bool
	// call is the site's hooks' run for the request, for the server's
	// middleware to take over (TakeFastCall); nil box when none.
	call atomic.Pointer[callBox]
	// reqID is the request ID the hooks saw, which the server's handler
	// is given (see Fast); "" when none ran.
	reqID string
}

// cacheState reports whether f was handed off for the cache's state (a miss
// or a stale object) rather than for what the request asked; nil (no lookup
// made) is the request's.
func (f *fastFound) cacheState() bool { return f != nil && !f.noLookup && (f.st == nil || f.stale) }

// release ends what no handler took: the stored response and the hooks'
// call.
func (f *fastFound) release() {
	if f != nil {
		f.st.close()
		if b := f.call.Swap(nil); b != nil {
			b.c.Close()
		}
	}
}
