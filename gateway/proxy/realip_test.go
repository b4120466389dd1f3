package proxy_test

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/meridian-edge/meridian/gateway/cache/cachetest"
	"github.com/meridian-edge/meridian/gateway/proxy"
	"github.com/meridian-edge/meridian/gateway/realip"
)

// TestForwardedBehindTrustedProxy: when gateway/realip made RemoteAddr the
// client a trusted proxy named, the origin gets the incoming chain with
// the proxy appended (not the client again) and X-Real-IP the client (not
// what the request said), on both ways out: ServeHTTP and Outbound (the
// cache's fetches).
func TestForwardedBehindTrustedProxy(t *testing.T) {
	seen := make(chan http.Header, 1)
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
	}))
	defer origin.Close()
	p, err := proxy.New(proxy.Options{SiteID: "s1", PoPID: "pop-a", Transport: cachetest.Transport(t, origin.URL, 0)})
	if err != nil {
		t.Fatal(err)
	}
	// The test's client (127.0.0.1) is the trusted proxy.
	res, err := realip.NewResolver(realip.HeaderOptions{Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	if err != nil {
		t.Fatal(err)
	}
	outbound := make(chan *http.Request, 1)
	srv := httptest.NewServer(res.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/outbound" {
			outbound <- p.Outbound(r.Context(), r)
			return
		}
		if !strings.HasPrefix(r.RemoteAddr, "203.0.113.7:") {
			t.Errorf("RemoteAddr %q, want the client 203.0.113.7", r.RemoteAddr)
		}
		p.ServeHTTP(w, r)
	})))
	defer srv.Close()
	send := func(path string) {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		req.Host = "www.example.test"
		req.Header.Set("X-Forwarded-For", "198.51.100.1, 203.0.113.7")
		req.Header.Set("Forwarded", "for=203.0.113.7")
		req.Header.Set("X-Real-IP", "192.0.2.66") // a client's spoof
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	send("/")
	h := <-seen
	send("/outbound")
	out := (<-outbound).Header
	for name, got := range map[string]http.Header{"ServeHTTP": h, "Outbound": out} {
		if xff := strings.Join(got.Values("X-Forwarded-For"), ", "); xff != "198.51.100.1, 203.0.113.7, 127.0.0.1" {
			t.Errorf("%s: X-Forwarded-For %q, want the chain then the proxy 127.0.0.1", name, xff)
		}
		if fwd := strings.Join(got.Values("Forwarded"), ", "); fwd != `for=203.0.113.7, for=127.0.0.1;host="www.example.test";proto=http` {
			t.Errorf("%s: Forwarded %q, want the chain then for=127.0.0.1", name, fwd)
		}
		if rip := got.Values("X-Real-Ip"); len(rip) != 1 || rip[0] != "203.0.113.7" {
			t.Errorf("%s: X-Real-IP %q, want the client the trusted proxy named (203.0.113.7), never the value the request carried", name, rip)
		}
	}
}
