package realip

import (
	"bufio"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pires/go-proxyproto"
)

// headerBufSize holds a whole v1 header (107 bytes at most, which
// go-proxyproto needs in one read) and a v2 header with the usual TLVs;
// larger v2 headers are read in several fills.
const headerBufSize = 256

// Conn is a connection accepted by a Listener. Its first Read, Write,
// ReadFrom or RemoteAddr reads the PROXY header (in the caller's goroutine,
// bounded by the header timeout); from then on RemoteAddr is the client's
// address when the header carried one, and the bytes after the header are
// read as usual. A refused connection is closed, and its Read and Write
// fail.
type Conn struct {
	net.Conn // the socket
	l        *Listener
	pol      *listenerPolicy // the rules it was accepted under
	trusted  bool

	once sync.Once
	err  error
	// br holds bytes read past the header (or the first bytes of a stream
	// without one) until Read hands them out; nil once empty.
	br *bufio.Reader
	// remote is the client's address from the header; nil: the peer's.
	remote net.Addr
	// deadline is the caller's read deadline, restored after the header.
	deadline atomic.Pointer[time.Time]
}

func newConn(c net.Conn, l *Listener, pol *listenerPolicy) *Conn {
	return &Conn{Conn: c, l: l, pol: pol, trusted: pol.trusts(c.RemoteAddr())}
}

// rejectError is the error of a refused connection.
type rejectError struct {
	reason string
	err    error
}

func (e *rejectError) Error() string {
	return "proxy protocol: connection refused (" + e.reason + "): " + e.err.Error()
}

func (e *rejectError) Unwrap() error { return e.err }

var (
	errUntrusted = errors.New("PROXY header from a peer outside trusted")
	errMissing   = errors.New("no PROXY header from a trusted peer, and one is required")
)

// ready reads the header once and returns the connection's error, if
// refused.
func (c *Conn) ready() error {
	c.once.Do(func() { c.err = c.readHeader() })
	return c.err
}

// countingReader counts the bytes read from the socket during the header
// read, to tell a silent peer from one cut off mid-header.
type countingReader struct {
	r io.Reader
	n int
}

func (r *countingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.n += n
	return n, err
}

func (c *Conn) readHeader() error {
	var user time.Time
	if d := c.deadline.Load(); d != nil {
		user = *d
	}
	until := time.Now().Add(c.pol.timeout)
	if !user.IsZero() && user.Before(until) {
		until = user // never extend the caller's own deadline
	}
	if err := c.Conn.SetReadDeadline(until); err != nil {
		return err
	}
	src := &countingReader{r: c.Conn}
	c.br = bufio.NewReaderSize(src, headerBufSize)
	h, err := proxyproto.Read(c.br)
	restoreErr := c.Conn.SetReadDeadline(user)
	if c.br.Buffered() == 0 {
		c.br = nil
	}
	var ne net.Error
	switch {
	case err == nil && !c.trusted:
		return c.refuse(ReasonUntrusted, errUntrusted)
	case err == nil:
		c.remote = clientAddr(h)
		return restoreErr
	case errors.Is(err, proxyproto.ErrNoProxyProtocol):
		if src.n == 0 {
			// Closed before a byte (a balancer's TCP health check): not a
			// refusal; Read reports the end.
			return nil
		}
		if c.trusted && c.pol.required {
			return c.refuse(ReasonMissing, errMissing)
		}
		return restoreErr // a direct client; its first bytes are in br
	case errors.As(err, &ne) && ne.Timeout():
		if src.n == 0 && !(c.trusted && c.pol.required) {
			// A peer that is silent so far (a browser's preconnect) and
			// may speak without a header: nothing was consumed, so it is
			// served as it is, under the server's own timeouts.
			return restoreErr
		}
		return c.refuse(ReasonTimeout, err)
	case errors.As(err, new(*net.OpError)):
		// The socket failed (a reset): not the peer's header's fault.
		_ = c.Conn.Close()
		return err
	case !c.trusted:
		return c.refuse(ReasonUntrusted, err)
	default:
		return c.refuse(ReasonMalformed, err)
	}
}

// refuse closes the connection, counts and logs it.
func (c *Conn) refuse(reason string, err error) error {
	c.br = nil
	c.l.reject(reason, c.Conn.RemoteAddr(), err) // before the close, which the peer sees
	_ = c.Conn.Close()
	return &rejectError{reason: reason, err: err}
}

// clientAddr is the client's address in h, or nil when h carries none
// (a LOCAL command, such as a balancer's health check, UNKNOWN/UNSPEC, or
// a Unix socket): the connection then keeps the peer's.
func clientAddr(h *proxyproto.Header) net.Addr {
	if h.Command.IsLocal() {
		return nil
	}
	a, ok := h.SourceAddr.(*net.TCPAddr)
	if !ok {
		return nil
	}
	if ip4 := a.IP.To4(); ip4 != nil && len(a.IP) == net.IPv6len {
		// An IPv4 client behind a balancer's IPv6 side comes as
		// ::ffff:a.b.c.d; geo tables, rate-limit keys and logs want a.b.c.d,
		// as a direct IPv4 client is seen.
		return &net.TCPAddr{IP: ip4, Port: a.Port}
	}
	return a
}

// Read reads the header first (see Conn), then the stream after it.
func (c *Conn) Read(b []byte) (int, error) {
	if err := c.ready(); err != nil {
		return 0, err
	}
	if c.br != nil {
		n, err := c.br.Read(b)
		if c.br.Buffered() == 0 {
			c.br = nil // from now on the socket directly
		}
		return n, err
	}
	return c.Conn.Read(b)
}

// Write waits for the header as Read does: nothing is sent to a peer
// that is refused.
func (c *Conn) Write(b []byte) (int, error) {
	if err := c.ready(); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}

// ReadFrom keeps the socket's ReadFrom (sendfile, splice) for net/http's
// responses copied from files.
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	if err := c.ready(); err != nil {
		return 0, err
	}
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(writerOnly{c.Conn}, r)
}

// writerOnly hides a writer's ReadFrom, so that io.Copy does not loop.
type writerOnly struct{ io.Writer }

// CloseWrite half-closes the socket, for servers that shut down
// gracefully (net/http, the cache's fast path).
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// Socket waits for the header as Read does, then returns the TCP socket
// under c and the bytes already read past the header, which the caller
// takes over (c's Read will not return them again). It is for a server
// that reads and writes the socket itself, as the cache's fast path does
// (raw reads, writev, sendfile), while it keeps c for RemoteAddr,
// deadlines and Close. Call it where Read would be called, never
// concurrently with Read. The socket is nil when c is not on TCP; the error
// is c's refusal (c is closed then).
func (c *Conn) Socket() (*net.TCPConn, []byte, error) {
	if err := c.ready(); err != nil {
		return nil, nil, err
	}
	tc, ok := c.Conn.(*net.TCPConn)
	if !ok {
		return nil, nil, nil
	}
	var pending []byte
	if c.br != nil {
		pending = make([]byte, c.br.Buffered())
		// Only buffered bytes: bufio reads the socket only when empty.
		n, _ := io.ReadFull(c.br, pending)
		pending = pending[:n]
		c.br = nil
	}
	return tc, pending, nil
}

// RemoteAddr is the client's address from the PROXY header, or the peer's
// when there was none (or the connection was refused). It waits for the
// header, so it is called from the connection's goroutine (net/http and the
// cache do), not from an accept loop.
func (c *Conn) RemoteAddr() net.Addr {
	_ = c.ready()
	if c.remote != nil {
		return c.remote
	}
	return c.Conn.RemoteAddr()
}

// SetDeadline sets both deadlines, remembering the read one for after the
// header.
func (c *Conn) SetDeadline(t time.Time) error {
	c.deadline.Store(&t)
	return c.Conn.SetDeadline(t)
}

// SetReadDeadline sets the read deadline, remembering it for after the
// header.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.deadline.Store(&t)
	return c.Conn.SetReadDeadline(t)
}
