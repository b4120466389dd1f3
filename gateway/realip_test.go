package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway"
	"github.com/meridian-edge/meridian/gateway/realip"
	"github.com/meridian-edge/meridian/gateway/tlsedge"
	"github.com/meridian-edge/meridian/gateway/tlsedge/devca"
	mtestutil "github.com/meridian-edge/meridian/internal/testutil"
	"github.com/pires/go-proxyproto"
)

// The balancer is 127.0.0.2, trusted; clients dialling from 127.0.0.1 reach
// the PoP directly.
var balancer = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}

// xffOrigin is cacheable and remembers the X-Forwarded-For it was sent.
type xffOrigin struct {
	*httptest.Server
	mu  sync.Mutex
	xff []string
}

func newXFFOrigin(t *testing.T) *xffOrigin {
	o := &xffOrigin{}
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.mu.Lock()
		o.xff = append(o.xff, r.Header.Get("X-Forwarded-For"))
		o.mu.Unlock()
		w.Header().Set("Cache-Control", "max-age=600")
		io.WriteString(w, "object "+r.URL.Path)
	}))
	t.Cleanup(o.Close)
	return o
}

func (o *xffOrigin) seen() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.xff...)
}

func proxyHeader(t *testing.T, version byte, client string, dst net.Addr) *proxyproto.Header {
	t.Helper()
	src, err := net.ResolveTCPAddr("tcp", client)
	if err != nil {
		t.Fatal(err)
	}
	return proxyproto.HeaderProxyFromAddrs(version, src, dst)
}

// dialFrom connects to addr from local (nil: 127.0.0.1).
func dialFrom(t *testing.T, local *net.TCPAddr, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if local != nil {
		d.LocalAddr = local
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestProxyProtocolPlainHTTP: behind a balancer, the client of a PROXY
// header is the one the access log, the origin's X-Forwarded-For and the
// fast hit path see; a header from a peer that is not a trusted balancer
// is refused and counted.
func TestProxyProtocolPlainHTTP(t *testing.T) {
	o := newXFFOrigin(t)
	logs := &mtestutil.SyncBuffer{}
	p := startPoP(t, gateway.Options{
		Logger:        slog.New(slog.NewJSONHandler(logs, nil)),
		Sites:         []gateway.Site{{Name: "a", Hosts: []string{"a.test"}, Origin: pool(t, "a", o.URL, 0)}},
		ProxyProtocol: realip.Options{Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}, Required: true},
	})
	c := dialFrom(t, balancer, p.HTTPAddr())
	if _, err := proxyHeader(t, 1, "203.0.113.7:50123", c.LocalAddr()).WriteTo(c); err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	for i := range 2 { // a miss (net/http), then a hit (the fast path)
		io.WriteString(c, "GET /x HTTP/1.1\r\nHost: a.test\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %s", i, resp.Status)
		}
	}
	if got := o.seen(); len(got) != 1 || got[0] != "203.0.113.7" {
		t.Errorf("origin saw X-Forwarded-For %q, want [203.0.113.7]", got)
	}
	reg := p.Registry()
	if n := mtestutil.CounterSum(t, reg, "meridian_cache_fast_requests_total", "outcome", "served"); n != 1 {
		t.Fatalf("fast path served %v, want the hit (1)", n)
	}
	// A balancer that sends the header and the first request together
	// (one segment): the fast path answers the hit from the bytes read
	// past the header.
	c2 := dialFrom(t, balancer, p.HTTPAddr())
	var first bytes.Buffer
	proxyHeader(t, 2, "203.0.113.8:50124", c2.LocalAddr()).WriteTo(&first)
	first.WriteString("GET /x HTTP/1.1\r\nHost: a.test\r\n\r\n")
	c2.Write(first.Bytes())
	c2.SetDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c2), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("header and request in one write: %v, %v", resp, err)
	}
	if n := mtestutil.CounterSum(t, reg, "meridian_cache_fast_requests_total", "outcome", "served"); n != 2 {
		t.Fatalf("fast path served %v, want 2", n)
	}
	mtestutil.WaitFor(t, "three access log lines", func() bool { return strings.Count(logs.String(), `"msg":"request"`) == 3 })
	if n := strings.Count(logs.String(), `"remote":"203.0.113.7:50123"`); n != 2 {
		t.Errorf("%d access log lines with the client's address, want 2 (miss and fast hit):\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), `"remote":"203.0.113.8:50124"`) {
		t.Errorf("access log lacks the second client:\n%s", logs.String())
	}

	// A client that connects directly cannot claim another address.
	spoof := dialFrom(t, nil, p.HTTPAddr())
	proxyHeader(t, 2, "198.51.100.99:1", spoof.LocalAddr()).WriteTo(spoof)
	io.WriteString(spoof, "GET /x HTTP/1.1\r\nHost: a.test\r\n\r\n")
	spoof.SetDeadline(time.Now().Add(10 * time.Second))
	if resp, err := http.ReadResponse(bufio.NewReader(spoof), nil); err == nil {
		t.Fatalf("a header from 127.0.0.1 was served: %s", resp.Status)
	}
	if n := mtestutil.CounterSum(t, reg, "meridian_proxy_protocol_rejected_total", "reason", "untrusted"); n != 1 {
		t.Errorf("rejected{reason=untrusted} = %v, want 1", n)
	}
	// Without a header it is served as itself.
	direct := mtestutil.Exchange(t, p.HTTPAddr(), "GET /y HTTP/1.1\r\nHost: a.test\r\n\r\n")
	if direct[0].StatusCode != 200 {
		t.Fatalf("direct client: %s", direct[0].Status)
	}
	if got := o.seen(); len(got) != 2 || got[1] != "127.0.0.1" {
		t.Errorf("origin saw X-Forwarded-For %q for the direct client, want 127.0.0.1", got)
	}
}

// TestProxyProtocolHTTPS: the balancer's v2 header precedes the TLS
// handshake; the HTTPS request's client is the header's.
func TestProxyProtocolHTTPS(t *testing.T) {
	o := newXFFOrigin(t)
	dir := t.TempDir()
	files, err := devca.Ensure(dir, "test", []string{"a.test"})
	if err != nil {
		t.Fatal(err)
	}
	certs, err := tlsedge.New(tlsedge.Options{PoP: "test-pop", Sites: []tlsedge.SiteCert{
		{Site: "a", Names: []string{"a.test"}, CertFile: files.Cert, KeyFile: files.Key},
	}})
	if err != nil {
		t.Fatal(err)
	}
	logs := &mtestutil.SyncBuffer{}
	p := startPoP(t, gateway.Options{
		Logger:        slog.New(slog.NewJSONHandler(logs, nil)),
		Sites:         []gateway.Site{{Name: "a", Hosts: []string{"a.test"}, Origin: pool(t, "a", o.URL, 0)}},
		TLS:           gateway.TLS{Addr: "127.0.0.1:0", Certs: certs},
		ProxyProtocol: realip.Options{Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/30")}, Required: true},
	})
	roots := x509.NewCertPool()
	pem, err := os.ReadFile(files.CACert)
	if err != nil {
		t.Fatal(err)
	}
	roots.AppendCertsFromPEM(pem)
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: roots},
		ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			d := net.Dialer{LocalAddr: balancer}
			c, err := d.DialContext(ctx, network, p.HTTPSAddr())
			if err != nil {
				return nil, err
			}
			if _, err := proxyHeader(t, 2, "[2001:db8:9::7]:443", c.LocalAddr()).WriteTo(c); err != nil {
				c.Close()
				return nil, err
			}
			return c, nil
		},
	}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://a.test/s")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		t.Fatalf("%s %s, want 200 over HTTP/2", resp.Proto, resp.Status)
	}
	if got := o.seen(); len(got) != 1 || got[0] != "2001:db8:9::7" {
		t.Errorf("origin saw X-Forwarded-For %q, want [2001:db8:9::7]", got)
	}
	mtestutil.WaitFor(t, "an access log line", func() bool { return strings.Contains(logs.String(), `"msg":"request"`) })
	if !strings.Contains(logs.String(), `"remote":"[2001:db8:9::7]:443"`) {
		t.Errorf("access log lacks the client's address:\n%s", logs.String())
	}
	// Both listeners share the counter (registered once), with no refusal.
	if n := mtestutil.CounterSum(t, p.Registry(), "meridian_proxy_protocol_rejected_total", "pop", "test-pop"); n != 0 {
		t.Errorf("refused %v, want 0", n)
	}
}

// TestProxyProtocolRefusesHTTP3: QUIC cannot carry the header, so the two
// are not combined.
func TestProxyProtocolRefusesHTTP3(t *testing.T) {
	_, err := gateway.New(gateway.Options{
		ID:            "test-pop",
		TLS:           gateway.TLS{Addr: "127.0.0.1:0", HTTP3: true},
		ProxyProtocol: realip.Options{Trusted: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
	})
	if err == nil || !strings.Contains(err.Error(), "HTTP/3") {
		t.Fatalf("got %v, want a refusal naming HTTP/3", err)
	}
}
