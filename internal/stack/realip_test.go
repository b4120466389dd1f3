package stack_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/internal/config"
	"github.com/meridian-edge/meridian/internal/demoorigin"
	"github.com/meridian-edge/meridian/internal/stack"
	mtestutil "github.com/meridian-edge/meridian/internal/testutil"
	"github.com/meridian-edge/meridian/plugins/plugintest"
	"github.com/pires/go-proxyproto"
)

// xffOrigin is an origin that answers "hello" and sends the
// X-Forwarded-For of each request it gets on xff (buffered n).
func xffOrigin(t *testing.T, n int) (url string, xff chan string) {
	xff = make(chan string, n)
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		xff <- r.Header.Get("X-Forwarded-For")
		io.WriteString(w, "hello")
	}))
	t.Cleanup(origin.Close)
	return origin.URL, xff
}

// edgeConfig is a one-PoP configuration (edge-1 on loopback, site www at
// originURL) with popExtra appended to the PoP's section.
func edgeConfig(t *testing.T, originURL, popExtra string) string {
	return fmt.Sprintf(`data_dir: %s
nats:
  embedded:
    listen: 127.0.0.1:0
pops:
  - id: edge-1
    region: us-east-1
    http: 127.0.0.1:0
    admin: 127.0.0.1:0
    addresses: [127.0.0.1]
%ssites:
  - name: www
    hosts: [www.example.test]
    origins:
      - url: %s
`, t.TempDir(), popExtra, originURL)
}

// TestProxyProtocolFromConfig: a PoP configured with proxy_protocol, as ops
// write it, takes the client's address from a trusted balancer's header
// (the origin's X-Forwarded-For shows it), refuses a header from anyone
// else and counts it on its /metrics, and follows a reload that changes
// the trusted balancers, without a restart.
func TestProxyProtocolFromConfig(t *testing.T) {
	origin, xff := xffOrigin(t, 4)
	text := edgeConfig(t, origin, "    proxy_protocol:\n      trusted: [127.0.0.2]\n      required: true\n")
	cfg, err := config.Parse("pop.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	st := runStack(t, cfg, stack.Roles{PoPs: []string{"edge-1"}}, nil)
	pop := st.PoP("edge-1")

	request := func(from net.IP, client string) (*http.Response, error) {
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: from}}
		c, err := d.Dial("tcp", pop.HTTPAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		src, _ := net.ResolveTCPAddr("tcp", client)
		if _, err := proxyproto.HeaderProxyFromAddrs(2, src, c.LocalAddr()).WriteTo(c); err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: www.example.test\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		return resp, err
	}
	resp, err := request(net.IPv4(127, 0, 0, 2), "203.0.113.9:40000")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("through the balancer: %v %v", resp, err)
	}
	if got := <-xff; got != "203.0.113.9" {
		t.Errorf("origin saw X-Forwarded-For %q, want the header's 203.0.113.9", got)
	}
	if resp, err := request(net.IPv4(127, 0, 0, 1), "198.51.100.1:1"); err == nil {
		t.Fatalf("a header from an untrusted peer was served: %s", resp.Status)
	}
	mresp, err := http.Get("http://" + pop.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	if want := `meridian_proxy_protocol_rejected_total{pop="edge-1",reason="untrusted"} 1`; !strings.Contains(string(metrics), want) {
		t.Errorf("/metrics lacks %s", want)
	}

	// A reload moves the trust to 127.0.0.1 (no restart): new connections
	// follow it.
	next, err := config.Parse("pop.yaml", []byte(strings.Replace(text, "trusted: [127.0.0.2]", "trusted: [127.0.0.1]", 1)))
	if err != nil {
		t.Fatal(err)
	}
	next.PoPs[0].HTTP, next.PoPs[0].Admin = cfg.PoPs[0].HTTP, cfg.PoPs[0].Admin
	next.DataDir, next.NATS = cfg.DataDir, cfg.NATS
	if err := st.Reload(next); err != nil {
		t.Fatalf("reload changing proxy_protocol.trusted: %v", err)
	}
	resp, err = request(net.IPv4(127, 0, 0, 1), "203.0.113.10:40000")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("through the newly trusted balancer: %v %v", resp, err)
	}
	if got := <-xff; got != "203.0.113.10" {
		t.Errorf("origin saw X-Forwarded-For %q, want the header's 203.0.113.10", got)
	}
	if resp, err := request(net.IPv4(127, 0, 0, 2), "198.51.100.2:1"); err == nil {
		t.Fatalf("a header from the balancer no longer trusted was served: %s", resp.Status)
	}
}

// TestRealIPFromConfig: a PoP behind an L7 proxy, as ops configure it. A
// reload adds real_ip (the access log then shows the X-Forwarded-For's
// client, the origin still gets the whole chain), then turns the PROXY
// protocol on for a PoP started without it; neither needs a restart.
func TestRealIPFromConfig(t *testing.T) {
	origin, xff := xffOrigin(t, 8)
	text := edgeConfig(t, origin, "")
	cfg, err := config.Parse("pop.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	logs := &mtestutil.SyncBuffer{}
	st := runStack(t, cfg, stack.Roles{PoPs: []string{"edge-1"}}, slog.New(slog.NewJSONHandler(logs, nil)))
	pop := st.PoP("edge-1")
	reload := func(section string) {
		t.Helper()
		next, err := config.Parse("pop.yaml", []byte(strings.Replace(text, "    addresses: [127.0.0.1]\n", "    addresses: [127.0.0.1]\n"+section, 1)))
		if err != nil {
			t.Fatal(err)
		}
		next.PoPs[0].HTTP, next.PoPs[0].Admin = cfg.PoPs[0].HTTP, cfg.PoPs[0].Admin
		next.DataDir, next.NATS = cfg.DataDir, cfg.NATS
		if err := st.Reload(next); err != nil {
			t.Fatalf("reload: %v", err)
		}
	}
	// request sends one request from 127.0.0.2 (the ingress), after a
	// PROXY header naming proxied when it is set, and returns the access
	// log's remote and the origin's X-Forwarded-For.
	lines := 0
	request := func(proxied string) (remote, forwarded string) {
		t.Helper()
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
		c, err := d.Dial("tcp", pop.HTTPAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if proxied != "" {
			src, _ := net.ResolveTCPAddr("tcp", proxied)
			proxyproto.HeaderProxyFromAddrs(2, src, c.LocalAddr()).WriteTo(c)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: www.example.test\r\nX-Forwarded-For: 198.51.100.1, 203.0.113.7\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("request: %v %v", resp, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		forwarded = <-xff
		lines++
		mtestutil.WaitFor(t, "the access log line", func() bool { return strings.Count(logs.String(), `"msg":"request"`) == lines })
		all := strings.Split(strings.TrimSpace(logs.String()), "\n")
		for i := len(all) - 1; i >= 0; i-- {
			if strings.Contains(all[i], `"msg":"request"`) {
				_, rest, _ := strings.Cut(all[i], `"remote":"`)
				remote, _, _ = strings.Cut(rest, `"`)
				break
			}
		}
		return remote, forwarded
	}
	if remote, fwd := request(""); !strings.HasPrefix(remote, "127.0.0.2:") || fwd != "198.51.100.1, 203.0.113.7, 127.0.0.2" {
		t.Errorf("without real_ip: access log %q, origin X-Forwarded-For %q; want the ingress and the chain with it", remote, fwd)
	}
	reload("    real_ip:\n      trusted: [127.0.0.2]\n")
	if remote, fwd := request(""); remote != "203.0.113.7:0" || fwd != "198.51.100.1, 203.0.113.7, 127.0.0.2" {
		t.Errorf("with real_ip: access log %q, origin X-Forwarded-For %q; want 203.0.113.7:0 and the same chain", remote, fwd)
	}
	// An NLB (127.0.0.2, PROXY v2) now carries the ingress's connections:
	// real_ip trusts the ingress's address as the PROXY header gives it.
	reload("    proxy_protocol:\n      trusted: [127.0.0.2]\n    real_ip:\n      trusted: [10.0.0.0/8]\n")
	if remote, fwd := request("10.1.1.1:3000"); remote != "203.0.113.7:0" || fwd != "198.51.100.1, 203.0.113.7, 10.1.1.1" {
		t.Errorf("behind the NLB: access log %q, origin X-Forwarded-For %q; want 203.0.113.7:0 and the chain with the ingress 10.1.1.1", remote, fwd)
	}
	if !strings.Contains(logs.String(), "reload: proxy_protocol applied") || !strings.Contains(logs.String(), "reload: real_ip applied") {
		t.Errorf("the applied changes were not logged:\n%s", logs.String())
	}
}

// TestRateLimitPerClientBehindL7Proxy: the ratelimit example plugin, which
// counts per client address, on a PoP behind a trusted L7 proxy
// (127.0.0.2): each client the proxy names has its own count, so one
// client past its limit does not block another, and a client connecting
// directly cannot borrow a blocked client's address through the header.
func TestRateLimitPerClientBehindL7Proxy(t *testing.T) {
	wasm, err := plugintest.BuildGo(context.Background(), t.TempDir(), "ratelimit")
	if err != nil {
		t.Fatal(err)
	}
	origin := httptest.NewServer(demoorigin.New())
	defer origin.Close()
	cfg := devConfig(t, origin.URL)
	const pop = "eu-west-2"
	for i := range cfg.PoPs {
		if cfg.PoPs[i].ID == pop {
			cfg.PoPs[i].RealIP = &config.RealIP{Trusted: []string{"127.0.0.2"}, Header: "X-Forwarded-For"}
		}
	}
	st := runStack(t, cfg, stack.Roles{AllPoPs: true}, nil)
	pushPlugin(t, st, pop, "ratelimit", url.Values{"config": {"limit=3"}}, wasm["ratelimit"])
	addr := st.PoP(pop).HTTPAddr()
	client := func(from net.IP) *http.Client {
		d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: from}}
		tr := &http.Transport{DialContext: d.DialContext}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 10 * time.Second}
	}
	viaProxy, direct := client(net.IPv4(127, 0, 0, 2)), client(net.IPv4(127, 0, 0, 1))
	get := func(c *http.Client, xff string) *http.Response {
		t.Helper()
		r, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
		r.Host = "www.example.test"
		r.Header.Set("X-Forwarded-For", xff)
		resp, err := c.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	// Generous: compiling a Go plugin takes tens of seconds under -race.
	deadline := time.Now().Add(180 * time.Second)
	var remaining string
	for remaining == "" {
		resp := get(viaProxy, "203.0.113.1")
		if resp.StatusCode == http.StatusTooManyRequests {
			t.Fatal("429 before any answer showed the remaining count")
		}
		remaining = resp.Header.Get("X-Ratelimit-Remaining")
		if remaining == "" && time.Now().After(deadline) {
			t.Fatal("the pushed ratelimit plugin is not answering after 180s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for n, _ := strconv.Atoi(remaining); n > 0; n-- {
		if resp := get(viaProxy, "203.0.113.1"); resp.StatusCode != 200 {
			t.Fatalf("client 203.0.113.1 within its limit: %d", resp.StatusCode)
		}
	}
	if resp := get(viaProxy, "203.0.113.1"); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("client 203.0.113.1 past its limit: %d, want 429", resp.StatusCode)
	}
	// Another client behind the same proxy, on the same connection: its
	// own count.
	if resp := get(viaProxy, "198.51.100.1, 203.0.113.2"); resp.StatusCode != 200 || resp.Header.Get("X-Ratelimit-Remaining") != "2" {
		t.Errorf("client 203.0.113.2: %d, remaining %q; want 200 and 2 (its first request)", resp.StatusCode, resp.Header.Get("X-Ratelimit-Remaining"))
	}
	// A direct client naming the blocked one is counted as itself.
	if resp := get(direct, "203.0.113.1"); resp.StatusCode != 200 || resp.Header.Get("X-Ratelimit-Remaining") != "2" {
		t.Errorf("direct client claiming 203.0.113.1: %d, remaining %q; want 200 and 2 (counted as 127.0.0.1)", resp.StatusCode, resp.Header.Get("X-Ratelimit-Remaining"))
	}
}
