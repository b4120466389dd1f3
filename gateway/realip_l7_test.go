package gateway_test

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway"
	"github.com/meridian-edge/meridian/gateway/cache"
	"github.com/meridian-edge/meridian/gateway/realip"
	mtestutil "github.com/meridian-edge/meridian/internal/testutil"
)

// seenClients records the client each plugin layer is given: the chain's
// middleware on net/http (RemoteAddr, which middleware/plugin reads) and
// its hooks on the fast path (FastHookRequest.Client).
type seenClients struct {
	mu           sync.Mutex
	netHTTP, hit []string
}

func (s *seenClients) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.netHTTP = append(s.netHTTP, r.RemoteAddr)
		s.mu.Unlock()
		next.ServeHTTP(w, r)
	})
}

// BeginFast records the client and asks nothing of the request.
func (s *seenClients) BeginFast(r *cache.FastHookRequest) (cache.FastCall, bool) {
	s.mu.Lock()
	s.hit = append(s.hit, r.Client.String())
	s.mu.Unlock()
	return nil, true
}

func (s *seenClients) take() (netHTTP, hit []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	netHTTP, hit = s.netHTTP, s.hit
	s.netHTTP, s.hit = nil, nil
	return netHTTP, hit
}

// keepAlive is one client connection sending requests in turn.
type keepAlive struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func newKeepAlive(t *testing.T, from *net.TCPAddr, addr string) *keepAlive {
	c := dialFrom(t, from, addr)
	return &keepAlive{t: t, c: c, br: bufio.NewReader(c)}
}

// get sends GET path with the extra header lines and checks for a 200.
func (k *keepAlive) get(path string, lines ...string) {
	k.t.Helper()
	k.c.SetDeadline(time.Now().Add(10 * time.Second))
	req := "GET " + path + " HTTP/1.1\r\nHost: a.test\r\n"
	for _, l := range lines {
		req += l + "\r\n"
	}
	if _, err := io.WriteString(k.c, req+"\r\n"); err != nil {
		k.t.Fatal(err)
	}
	resp, err := http.ReadResponse(k.br, nil)
	if err != nil {
		k.t.Fatalf("GET %s: %v", path, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		k.t.Fatalf("GET %s: %s", path, resp.Status)
	}
}

// accessRemotes returns the remote of each access log line, in order.
func accessRemotes(logs *mtestutil.SyncBuffer) []string {
	var out []string
	for _, line := range strings.Split(logs.String(), "\n") {
		if !strings.Contains(line, `"msg":"request"`) {
			continue
		}
		_, rest, _ := strings.Cut(line, `"remote":"`)
		remote, _, _ := strings.Cut(rest, `"`)
		out = append(out, remote)
	}
	return out
}

func equal(a, b []string) bool { return strings.Join(a, "|") == strings.Join(b, "|") }

// TestRealIPBehindL7Proxy: behind a trusted L7 proxy (127.0.0.2, and the
// 10.0.0.0/8 of its own hops), the X-Forwarded-For's client is the one
// the access log, the plugins and the origin's X-Forwarded-For see, on the
// fast path (hits) and on net/http (the miss, and every request with the
// fast path off); another peer's header is passed on but not believed.
func TestRealIPBehindL7Proxy(t *testing.T) {
	for _, fast := range []bool{true, false} {
		name := "fast path"
		if !fast {
			name = "net/http"
		}
		t.Run(name, func(t *testing.T) { testRealIPBehindL7Proxy(t, fast) })
	}
}

func testRealIPBehindL7Proxy(t *testing.T, fast bool) {
	o := newXFFOrigin(t)
	logs := &mtestutil.SyncBuffer{}
	seen := &seenClients{}
	p := startPoP(t, gateway.Options{
		Logger:      slog.New(slog.NewJSONHandler(logs, nil)),
		Sites:       []gateway.Site{{Name: "a", Hosts: []string{"a.test"}, Origin: pool(t, "a", o.URL, 0)}},
		NoFastPath:  !fast,
		Plugins:     seen.middleware,
		PluginSites: func(string) bool { return true },
		PluginHooks: func(string) cache.FastHooks { return seen },
		RealIP: realip.HeaderOptions{Trusted: []netip.Prefix{
			netip.MustParsePrefix("127.0.0.2/32"), netip.MustParsePrefix("10.0.0.0/8"),
		}},
	})
	proxy := newKeepAlive(t, balancer, p.HTTPAddr())
	peer := proxy.c.LocalAddr().String()
	proxy.get("/x", "X-Forwarded-For: 198.51.100.1, 203.0.113.7")                // miss: net/http
	proxy.get("/x", "X-Forwarded-For: 203.0.113.8", "X-Forwarded-For: 10.0.0.1") // hit, trusted hop skipped
	proxy.get("/x", "X-Forwarded-For: 10.0.0.5, 10.0.0.6")                       // all trusted: the leftmost
	proxy.get("/x", "X-Forwarded-For: 203.0.113.9, bad")                         // malformed nearest: the peer
	proxy.get("/x")                                                              // none: the peer

	if got, want := o.seen(), []string{"198.51.100.1, 203.0.113.7, 127.0.0.2"}; !equal(got, want) {
		t.Errorf("origin saw X-Forwarded-For %q, want %q (the chain and the proxy, the client once)", got, want)
	}
	clients := []string{"203.0.113.7:0", "203.0.113.8:0", "10.0.0.5:0", peer, peer}
	mtestutil.WaitFor(t, "five access log lines", func() bool { return len(accessRemotes(logs)) == 5 })
	if got := accessRemotes(logs); !equal(got, clients) {
		t.Errorf("access log remotes %q, want %q", got, clients)
	}
	netHTTP, hit := seen.take()
	served := mtestutil.CounterSum(t, p.Registry(), "meridian_cache_fast_requests_total", "outcome", "served")
	if fast {
		if served != 4 {
			t.Fatalf("fast path served %v, want the 4 hits", served)
		}
		// The hooks run for every request the fast path reads (the miss
		// too, before it hands it on); the middleware for the miss only.
		if !equal(hit, clients) || !equal(netHTTP, clients[:1]) {
			t.Errorf("plugins saw %q on the fast path and %q on net/http, want %q and %q", hit, netHTTP, clients, clients[:1])
		}
	} else if served != 0 || len(hit) != 0 || !equal(netHTTP, clients) {
		t.Errorf("fast path off: served %v, hooks %q; middleware saw %q, want %q", served, hit, netHTTP, clients)
	}

	// A client that connects directly cannot name another: its header
	// goes to the origin as part of the chain, with its own address last.
	direct := newKeepAlive(t, nil, p.HTTPAddr())
	self := direct.c.LocalAddr().String()
	direct.get("/x", "X-Forwarded-For: 203.0.113.66")
	direct.get("/y", "X-Forwarded-For: 203.0.113.66")
	if got := o.seen(); len(got) != 2 || got[1] != "203.0.113.66, 127.0.0.1" {
		t.Errorf("origin saw X-Forwarded-For %q for the direct client, want its chain then 127.0.0.1", got)
	}
	mtestutil.WaitFor(t, "seven access log lines", func() bool { return len(accessRemotes(logs)) == 7 })
	if got := accessRemotes(logs)[5:]; !equal(got, []string{self, self}) {
		t.Errorf("access log remotes %q for the direct client, want its own address", got)
	}
}

// TestRealIPForwardedAndReload: the Forwarded header, IPv6 quoted; the
// trusted proxies replaced while the PoP serves (SetRealIP) apply to the
// next request, on the fast path too.
func TestRealIPForwardedAndReload(t *testing.T) {
	o := newXFFOrigin(t)
	logs := &mtestutil.SyncBuffer{}
	p := startPoP(t, gateway.Options{
		Logger: slog.New(slog.NewJSONHandler(logs, nil)),
		Sites:  []gateway.Site{{Name: "a", Hosts: []string{"a.test"}, Origin: pool(t, "a", o.URL, 0)}},
		RealIP: realip.HeaderOptions{Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.3/32")}, Header: "Forwarded"},
	})
	proxy := newKeepAlive(t, balancer, p.HTTPAddr())
	peer := proxy.c.LocalAddr().String()
	fwd := `Forwarded: for="[2001:db8::1]:4711";proto=https`
	proxy.get("/x", fwd) // 127.0.0.2 is not trusted yet
	if err := p.SetRealIP(realip.HeaderOptions{Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/30")}, Header: "Forwarded"}); err != nil {
		t.Fatal(err)
	}
	proxy.get("/x", fwd) // the same connection, now trusted: a fast hit
	if err := p.SetRealIP(realip.HeaderOptions{Trusted: []netip.Prefix{{}}}); err == nil {
		t.Fatal("an invalid prefix was accepted")
	}
	proxy.get("/y", fwd) // the refused update changed nothing: a miss, on net/http
	if err := p.SetRealIP(realip.HeaderOptions{}); err != nil {
		t.Fatal(err)
	}
	proxy.get("/x", fwd) // off again
	want := []string{peer, "[2001:db8::1]:4711", "[2001:db8::1]:4711", peer}
	mtestutil.WaitFor(t, "four access log lines", func() bool { return len(accessRemotes(logs)) == 4 })
	if got := accessRemotes(logs); !equal(got, want) {
		t.Errorf("access log remotes %q, want %q", got, want)
	}
	if got, want := o.seen(), []string{"127.0.0.2", "127.0.0.2"}; !equal(got, want) {
		t.Errorf("origin saw X-Forwarded-For %q, want %q (the proxy, the only hop it knows of)", got, want)
	}
	if n := mtestutil.CounterSum(t, p.Registry(), "meridian_cache_fast_requests_total", "outcome", "served"); n != 2 {
		t.Errorf("fast path served %v, want the 2 hits", n)
	}
}

// TestRealIPAfterProxyProtocol: both layers, as behind a CDN that reaches
// the PoP through an NLB with PROXY v2: the PROXY header names the CDN's
// edge, which real_ip trusts to name the client.
func TestRealIPAfterProxyProtocol(t *testing.T) {
	o := newXFFOrigin(t)
	logs := &mtestutil.SyncBuffer{}
	p := startPoP(t, gateway.Options{
		Logger:        slog.New(slog.NewJSONHandler(logs, nil)),
		Sites:         []gateway.Site{{Name: "a", Hosts: []string{"a.test"}, Origin: pool(t, "a", o.URL, 0)}},
		ProxyProtocol: realip.Options{Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}, Required: true},
		RealIP:        realip.HeaderOptions{Trusted: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}, Header: "True-Client-IP"},
	})
	nlb := newKeepAlive(t, balancer, p.HTTPAddr())
	if _, err := proxyHeader(t, 2, "198.51.100.5:40000", nlb.c.LocalAddr()).WriteTo(nlb.c); err != nil {
		t.Fatal(err)
	}
	nlb.get("/x", "True-Client-IP: 203.0.113.9")  // miss
	nlb.get("/x", "True-Client-IP: 203.0.113.10") // hit
	if got, want := o.seen(), []string{"198.51.100.5"}; !equal(got, want) {
		t.Errorf("origin saw X-Forwarded-For %q, want %q (the CDN edge, this PoP's peer)", got, want)
	}
	want := []string{"203.0.113.9:0", "203.0.113.10:0"}
	mtestutil.WaitFor(t, "two access log lines", func() bool { return len(accessRemotes(logs)) == 2 })
	if got := accessRemotes(logs); !equal(got, want) {
		t.Errorf("access log remotes %q, want %q", got, want)
	}
	// A PROXY header naming a client outside the CDN: its True-Client-IP
	// is not believed.
	other := newKeepAlive(t, balancer, p.HTTPAddr())
	proxyHeader(t, 2, "192.0.2.44:1234", other.c.LocalAddr()).WriteTo(other.c)
	other.get("/x", "True-Client-IP: 203.0.113.11")
	mtestutil.WaitFor(t, "three access log lines", func() bool { return len(accessRemotes(logs)) == 3 })
	if got := accessRemotes(logs)[2]; got != "192.0.2.44:1234" {
		t.Errorf("access log remote %q, want the PROXY header's 192.0.2.44:1234", got)
	}
}

// TestProxyProtocolTurnedOnLive: a PoP started without the PROXY protocol
// trusts a balancer from SetProxyProtocol on, for new connections, on its
// fast path too; a connection already open stays as it was.
func TestProxyProtocolTurnedOnLive(t *testing.T) {
	o := newXFFOrigin(t)
	logs := &mtestutil.SyncBuffer{}
	p := startPoP(t, gateway.Options{
		Logger: slog.New(slog.NewJSONHandler(logs, nil)),
		Sites:  []gateway.Site{{Name: "a", Hosts: []string{"a.test"}, Origin: pool(t, "a", o.URL, 0)}},
	})
	before := newKeepAlive(t, balancer, p.HTTPAddr())
	before.get("/x") // miss
	// Each line is logged after its answer went out: wait for it before
	// the next connection's request, so that the lines keep this order.
	mtestutil.WaitFor(t, "one access log line", func() bool { return len(accessRemotes(logs)) == 1 })
	if err := p.SetProxyProtocol(realip.Options{Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}, Required: true}); err != nil {
		t.Fatal(err)
	}
	if err := p.SetProxyProtocol(realip.Options{Required: true}); err == nil {
		t.Fatal("required without trusted was accepted")
	}
	after := newKeepAlive(t, balancer, p.HTTPAddr())
	proxyHeader(t, 1, "203.0.113.7:50000", after.c.LocalAddr()).WriteTo(after.c)
	after.get("/x") // hit
	mtestutil.WaitFor(t, "two access log lines", func() bool { return len(accessRemotes(logs)) == 2 })
	before.get("/x")
	want := []string{before.c.LocalAddr().String(), "203.0.113.7:50000", before.c.LocalAddr().String()}
	mtestutil.WaitFor(t, "three access log lines", func() bool { return len(accessRemotes(logs)) == 3 })
	if got := accessRemotes(logs); !equal(got, want) {
		t.Errorf("access log remotes %q, want %q", got, want)
	}
	if n := mtestutil.CounterSum(t, p.Registry(), "meridian_cache_fast_requests_total", "outcome", "served"); n != 2 {
		t.Errorf("fast path served %v, want the 2 hits", n)
	}
}

// TestProxyProtocolNotWithHTTP3Live: SetProxyProtocol refuses what New
// refuses.
func TestProxyProtocolNotWithHTTP3Live(t *testing.T) {
	p, err := gateway.New(gateway.Options{ID: "test-pop", TLS: gateway.TLS{Addr: "127.0.0.1:0", HTTP3: true}})
	if err != nil {
		t.Fatal(err)
	}
	err = p.SetProxyProtocol(realip.Options{Trusted: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	if err == nil || !strings.Contains(err.Error(), "HTTP/3") {
		t.Fatalf("got %v, want a refusal naming HTTP/3", err)
	}
}
