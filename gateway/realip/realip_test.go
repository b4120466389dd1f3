package realip_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway/realip"
	mtestutil "github.com/meridian-edge/meridian/internal/testutil"
	"github.com/pires/go-proxyproto"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The balancer is 127.0.0.2 (trusted); a direct client is 127.0.0.1. Both
// reach a server on 127.0.0.1 over real loopback sockets.
var (
	balancerIP = net.IPv4(127, 0, 0, 2)
	trusted    = []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}
)

// server serves, over a wrapped listener, a handler that answers with the
// request's RemoteAddr: what the access log, X-Forwarded-For and plugins
// are given.
type server struct {
	addr string
	reg  *prometheus.Registry
	logs *mtestutil.SyncBuffer
}

func startServer(t *testing.T, opts realip.Options) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{reg: prometheus.NewRegistry(), logs: &mtestutil.SyncBuffer{}}
	opts.Registerer = s.reg
	opts.PoP = "tokyo"
	opts.Logger = slog.New(slog.NewTextHandler(s.logs, nil))
	wl, err := realip.Wrap(ln, opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.RemoteAddr)
	}), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(wl)
	t.Cleanup(func() { srv.Close() })
	s.addr = ln.Addr().String()
	return s
}

// dial connects from ip (nil: the kernel's choice, 127.0.0.1).
func dial(t *testing.T, addr string, ip net.IP) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if ip != nil {
		d.LocalAddr = &net.TCPAddr{IP: ip}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func header(t *testing.T, version byte, client string) *proxyproto.Header {
	t.Helper()
	src, err := net.ResolveTCPAddr("tcp", client)
	if err != nil {
		t.Fatal(err)
	}
	dst := &net.TCPAddr{IP: net.IPv4(198, 51, 100, 1), Port: 443}
	if src.IP.To4() == nil {
		dst = &net.TCPAddr{IP: net.ParseIP("2001:db8::443"), Port: 443}
	}
	return proxyproto.HeaderProxyFromAddrs(version, src, dst)
}

// get sends a request on c (after whatever was written to it) and returns
// the body, or the error when the server closed the connection instead.
func get(c net.Conn) (string, error) {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: www.example.test\r\n\r\n"); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// refused checks that the server closed c without answering.
func refused(t *testing.T, c net.Conn) {
	t.Helper()
	body, err := get(c)
	if err == nil {
		t.Fatalf("served (%q); want the connection closed", body)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection left open: %v", err)
	}
}

// closedByServer waits for the server to close c, which sends nothing.
func closedByServer(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(make([]byte, 1))
	var ne net.Error
	if n != 0 || err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("read %d, %v; want the connection closed by the server", n, err)
	}
}

func rejected(s *server, reason string) float64 {
	mfs, _ := s.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "meridian_proxy_protocol_rejected_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["pop"] == "tokyo" && labels["reason"] == reason {
				return m.GetCounter().GetValue()
			}
		}
	}
	return -1
}

// TestClientAddressFromHeader: a trusted balancer's v1 or v2 header gives
// the handler the client's address, IPv4 or IPv6, on every request of the
// connection.
func TestClientAddressFromHeader(t *testing.T) {
	s := startServer(t, realip.Options{Trusted: trusted, Required: true})
	for _, c := range []struct {
		version byte
		client  string
	}{
		{1, "203.0.113.7:51000"},
		{2, "203.0.113.8:51001"},
		{1, "[2001:db8:5::7]:51002"},
		{2, "[2001:db8:5::8]:51003"},
	} {
		t.Run(fmt.Sprintf("v%d %s", c.version, c.client), func(t *testing.T) {
			conn := dial(t, s.addr, balancerIP)
			if _, err := header(t, c.version, c.client).WriteTo(conn); err != nil {
				t.Fatal(err)
			}
			for i := range 2 { // keep-alive: the second request too
				got, err := get(conn)
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				if got != c.client {
					t.Errorf("request %d: handler saw %s, want the header's %s", i, got, c.client)
				}
			}
		})
	}
	for _, r := range []string{"untrusted", "missing", "timeout", "malformed"} {
		if n := rejected(s, r); n != 0 {
			t.Errorf("rejected{reason=%s} = %v, want 0", r, n)
		}
	}
}

// TestMappedClientUnmapped: an IPv4 client carried as an IPv4-mapped IPv6
// address (a balancer's IPv6 side) is seen as the IPv4 client it is.
func TestMappedClientUnmapped(t *testing.T) {
	s := startServer(t, realip.Options{Trusted: trusted})
	conn := dial(t, s.addr, balancerIP)
	src := &net.TCPAddr{IP: net.ParseIP("::ffff:203.0.113.7"), Port: 51000}
	h := proxyproto.HeaderProxyFromAddrs(2, src, &net.TCPAddr{IP: net.ParseIP("2001:db8::443"), Port: 443})
	if h.TransportProtocol != proxyproto.TCPv6 {
		t.Fatalf("test bug: header is %v, want TCPv6", h.TransportProtocol)
	}
	h.WriteTo(conn)
	if got, err := get(conn); err != nil || got != "203.0.113.7:51000" {
		t.Errorf("handler saw %q, %v; want 203.0.113.7:51000", got, err)
	}
}

// TestHeaderAndRequestInOneSegment: a balancer that sends the header and
// the client's first bytes in one write loses none of them.
func TestHeaderAndRequestInOneSegment(t *testing.T) {
	s := startServer(t, realip.Options{Trusted: trusted})
	conn := dial(t, s.addr, balancerIP)
	var b bytes.Buffer
	header(t, 2, "203.0.113.9:40000").WriteTo(&b)
	b.WriteString("GET / HTTP/1.1\r\nHost: www.example.test\r\n\r\n")
	if _, err := conn.Write(b.Bytes()); err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "203.0.113.9:40000" {
		t.Errorf("handler saw %s", body)
	}
}

// TestLocalCommandKeepsPeer: a v2 LOCAL header (balancers' health checks)
// carries no client; the balancer's own address is used.
func TestLocalCommandKeepsPeer(t *testing.T) {
	s := startServer(t, realip.Options{Trusted: trusted, Required: true})
	conn := dial(t, s.addr, balancerIP)
	h := &proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}
	if _, err := h.WriteTo(conn); err != nil {
		t.Fatal(err)
	}
	got, err := get(conn)
	if err != nil {
		t.Fatal(err)
	}
	if host, _, _ := net.SplitHostPort(got); host != "127.0.0.2" {
		t.Errorf("handler saw %s, want the balancer 127.0.0.2", got)
	}
}

// TestTrustRules: who may send a header, and who may go without one.
func TestTrustRules(t *testing.T) {
	cases := []struct {
		name     string
		required bool
		from     net.IP // nil: 127.0.0.1, not trusted
		sendHdr  bool
		want     string // the address the handler sees; "" refused
		reason   string // counted reason when refused
	}{
		{"untrusted peer with a header is refused", false, nil, true, "", "untrusted"},
		{"untrusted peer with a header is refused, required", true, nil, true, "", "untrusted"},
		{"untrusted peer without a header is served as itself", true, nil, false, "127.0.0.1", ""},
		{"trusted peer without a header, required: refused", true, balancerIP, false, "", "missing"},
		{"trusted peer without a header, optional: served as itself", false, balancerIP, false, "127.0.0.2", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := startServer(t, realip.Options{Trusted: trusted, Required: c.required})
			conn := dial(t, s.addr, c.from)
			if c.sendHdr {
				if _, err := header(t, 2, "203.0.113.7:51000").WriteTo(conn); err != nil {
					t.Fatal(err)
				}
			}
			if c.want == "" {
				refused(t, conn)
				if n := rejected(s, c.reason); n != 1 {
					t.Errorf("rejected{reason=%s} = %v, want 1", c.reason, n)
				}
				if !strings.Contains(s.logs.String(), "reason="+c.reason) {
					t.Errorf("no log line for %s:\n%s", c.reason, s.logs)
				}
				return
			}
			got, err := get(conn)
			if err != nil {
				t.Fatal(err)
			}
			if host, _, _ := net.SplitHostPort(got); host != c.want {
				t.Errorf("handler saw %s, want %s", got, c.want)
			}
		})
	}
}

// TestMalformedHeader: a trusted peer's broken header closes that
// connection only, counted as malformed; the listener serves on.
func TestMalformedHeader(t *testing.T) {
	s := startServer(t, realip.Options{Trusted: trusted})
	v2 := &bytes.Buffer{}
	header(t, 2, "203.0.113.7:51000").WriteTo(v2)
	badLen := v2.Bytes()
	badLen[14], badLen[15] = 0, 3 // length 3: shorter than two IPv4 addresses and ports
	for i, bad := range [][]byte{
		[]byte("PROXY TCP4 not-an-ip 198.51.100.1 51000 443\r\n"),
		[]byte("PROXY TCP4 203.0.113.7 198.51.100.1 51000\n"), // no CR, a field short
		[]byte("PROXY SCTP 203.0.113.7 198.51.100.1 51000 443\r\n"),
		badLen[:16+3],
	} {
		conn := dial(t, s.addr, balancerIP)
		if _, err := conn.Write(bad); err != nil {
			t.Fatal(err)
		}
		refused(t, conn)
		if n := rejected(s, "malformed"); n != float64(i+1) {
			t.Errorf("after %q: rejected{reason=malformed} = %v, want %d", bad, n, i+1)
		}
	}
	conn := dial(t, s.addr, balancerIP)
	header(t, 1, "203.0.113.50:1234").WriteTo(conn)
	if got, err := get(conn); err != nil || got != "203.0.113.50:1234" {
		t.Errorf("a good header after bad ones: %q, %v", got, err)
	}
	// The log is rate-limited: one line for the four.
	if n := strings.Count(s.logs.String(), "reason=malformed"); n != 1 {
		t.Errorf("%d log lines for 4 malformed headers, want 1:\n%s", n, s.logs)
	}
}

// TestSilentPeerDoesNotBlockAccept: a balancer connection that sends
// nothing waits in its own goroutine; other clients are served meanwhile.
func TestSilentPeerDoesNotBlockAccept(t *testing.T) {
	s := startServer(t, realip.Options{Trusted: trusted, Required: true, HeaderTimeout: time.Minute})
	silent := dial(t, s.addr, balancerIP)
	_ = silent
	for i := range 3 {
		conn := dial(t, s.addr, balancerIP)
		client := fmt.Sprintf("203.0.113.%d:1000", 10+i)
		header(t, byte(1+i%2), client).WriteTo(conn)
		if got, err := get(conn); err != nil || got != client {
			t.Fatalf("client %d while a peer is silent: %q, %v", i, got, err)
		}
	}
}

// TestSilentPeerClosedAfterTimeout: with the header required, a peer that
// sends nothing is closed once the header timeout passes, and counted.
func TestSilentPeerClosedAfterTimeout(t *testing.T) {
	s := startServer(t, realip.Options{Trusted: trusted, Required: true, HeaderTimeout: 50 * time.Millisecond})
	silent := dial(t, s.addr, balancerIP)
	closedByServer(t, silent)
	if n := rejected(s, "timeout"); n != 1 {
		t.Errorf("rejected{reason=timeout} = %v, want 1", n)
	}
	// Partial headers are cut off the same way: a signature's start, and a
	// v2 header without its addresses. (A partial v1 line is refused at
	// once as malformed: go-proxyproto wants it in one segment.)
	v2 := &bytes.Buffer{}
	header(t, 2, "203.0.113.7:51000").WriteTo(v2)
	for i, partial := range [][]byte{[]byte("PROX"), v2.Bytes()[:20]} {
		c := dial(t, s.addr, balancerIP)
		c.Write(partial)
		closedByServer(t, c)
		if n := rejected(s, "timeout"); n != float64(2+i) {
			t.Errorf("after partial header %q: rejected{reason=timeout} = %v, want %d", partial, n, 2+i)
		}
	}
}

// TestSilentDirectClientKept: a direct client (untrusted, so it cannot
// send a header) that is slow to speak is not cut off by the header
// timeout: browsers open connections before they need them.
func TestSilentDirectClientKept(t *testing.T) {
	s := startServer(t, realip.Options{Trusted: trusted, Required: true, HeaderTimeout: 20 * time.Millisecond})
	conn := dial(t, s.addr, nil)
	// Wait until the header timeout has surely fired: a request from a
	// trusted peer that stays silent meanwhile is refused for it.
	closedByServer(t, dial(t, s.addr, balancerIP))
	got, err := get(conn)
	if err != nil {
		t.Fatal(err)
	}
	if host, _, _ := net.SplitHostPort(got); host != "127.0.0.1" {
		t.Errorf("handler saw %s", got)
	}
}

// TestHealthCheckConnectCloseNotCounted: a balancer's TCP health check
// connects and closes without a byte; that is no refusal.
func TestHealthCheckConnectCloseNotCounted(t *testing.T) {
	s := startServer(t, realip.Options{Trusted: trusted, Required: true})
	for range 3 {
		c := dial(t, s.addr, balancerIP)
		c.Close()
	}
	// A request after them is served, and by then the server has read the
	// three closes (connections are accepted in order).
	conn := dial(t, s.addr, balancerIP)
	header(t, 2, "203.0.113.7:51000").WriteTo(conn)
	if _, err := get(conn); err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"untrusted", "missing", "timeout", "malformed"} {
		if n := rejected(s, r); n != 0 {
			t.Errorf("rejected{reason=%s} = %v, want 0", r, n)
		}
	}
}

// TestTLSOverProxyV2: the header comes first, then the TLS handshake; an
// HTTPS client (HTTP/2) behind the balancer is seen with its address.
func TestTLSOverProxyV2(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wl, err := realip.Wrap(ln, realip.Options{Trusted: trusted, Required: true})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", r.Proto, r.RemoteAddr)
	}))
	ts.Listener = wl
	ts.EnableHTTP2 = true
	ts.StartTLS()
	defer ts.Close()
	tr := ts.Client().Transport.(*http.Transport).Clone()
	tr.ForceAttemptHTTP2 = true
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: balancerIP}}
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if _, err := header(t, 2, "[2001:db8:77::1]:61000").WriteTo(c); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if got := string(body); got != "HTTP/2.0 [2001:db8:77::1]:61000" {
		t.Errorf("got %q, want HTTP/2.0 from the header's client", got)
	}
}

// TestWrapOptions: off without trusted prefixes; refused combinations; two
// listeners of one PoP share the counter.
func TestWrapOptions(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if got, err := realip.Wrap(ln, realip.Options{}); err != nil || got != ln {
		t.Errorf("no trusted prefixes: %v, %v; want the listener itself", got, err)
	}
	if _, err := realip.Wrap(ln, realip.Options{Required: true}); err == nil || !strings.Contains(err.Error(), "Trusted") {
		t.Errorf("required without trusted: %v", err)
	}
	if _, err := realip.Wrap(ln, realip.Options{Trusted: []netip.Prefix{{}}}); err == nil {
		t.Error("an invalid prefix was accepted")
	}
	reg := prometheus.NewRegistry()
	for range 2 {
		if _, err := realip.Wrap(ln, realip.Options{Trusted: trusted, Registerer: reg, PoP: "tokyo"}); err != nil {
			t.Fatalf("second listener on one registry: %v", err)
		}
	}
	if n := testutil.CollectAndCount(reg, "meridian_proxy_protocol_rejected_total"); n != 4 {
		t.Errorf("%d series, want one per reason (4)", n)
	}
}

// TestMappedTrustedPrefix: a trusted prefix written as an IPv4-mapped IPv6
// block trusts IPv4 peers.
func TestMappedTrustedPrefix(t *testing.T) {
	s := startServer(t, realip.Options{Trusted: []netip.Prefix{netip.MustParsePrefix("::ffff:127.0.0.2/128")}, Required: true})
	conn := dial(t, s.addr, balancerIP)
	header(t, 1, "203.0.113.7:51000").WriteTo(conn)
	if got, err := get(conn); err != nil || got != "203.0.113.7:51000" {
		t.Errorf("%q, %v", got, err)
	}
}

// TestSocketHandsOverPendingBytes: a server that reads the socket itself
// (the cache's fast path) gets the bytes that came with the header, once,
// and the socket carries on after them.
func TestSocketHandsOverPendingBytes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	wl, err := realip.Wrap(ln, realip.Options{Trusted: trusted, Required: true})
	if err != nil {
		t.Fatal(err)
	}
	client := dial(t, ln.Addr().String(), balancerIP)
	var first bytes.Buffer
	header(t, 2, "203.0.113.7:51000").WriteTo(&first)
	first.WriteString("hello ")
	if _, err := client.Write(first.Bytes()); err != nil {
		t.Fatal(err)
	}
	c, err := wl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	rc := c.(*realip.Conn)
	tc, pending, err := rc.Socket()
	if err != nil || tc == nil {
		t.Fatalf("Socket: %v, %v", tc, err)
	}
	if string(pending) != "hello " {
		t.Errorf("pending %q, want the bytes sent with the header", pending)
	}
	if got := c.RemoteAddr().String(); got != "203.0.113.7:51000" {
		t.Errorf("RemoteAddr %s", got)
	}
	io.WriteString(client, "world")
	b := make([]byte, 5)
	if _, err := io.ReadFull(tc, b); err != nil || string(b) != "world" {
		t.Errorf("socket read %q, %v; want what followed", b, err)
	}
	// Nothing is returned twice through the connection either.
	io.WriteString(client, "!")
	if n, err := c.Read(b); err != nil || string(b[:n]) != "!" {
		t.Errorf("Read after Socket: %q, %v", b[:n], err)
	}
}

// TestSocketOfRefusedConn: a refused connection gives its refusal.
func TestSocketOfRefusedConn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	wl, err := realip.Wrap(ln, realip.Options{Trusted: trusted})
	if err != nil {
		t.Fatal(err)
	}
	client := dial(t, ln.Addr().String(), nil) // untrusted
	header(t, 1, "203.0.113.7:51000").WriteTo(client)
	c, err := wl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if tc, _, err := c.(*realip.Conn).Socket(); err == nil || tc != nil || !strings.Contains(err.Error(), "untrusted") {
		t.Errorf("Socket of a refused connection: %v, %v", tc, err)
	}
}
