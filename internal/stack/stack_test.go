package stack_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/deploy"
	"github.com/meridian-edge/meridian/gateway/tlsedge/devca"
	"github.com/meridian-edge/meridian/internal/config"
	"github.com/meridian-edge/meridian/internal/demoorigin"
	"github.com/meridian-edge/meridian/internal/stack"
	"github.com/meridian-edge/meridian/internal/testutil"
	"github.com/meridian-edge/meridian/plugins/plugintest"
	"github.com/meridian-edge/meridian/plugins/rollout"
	"github.com/miekg/dns"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// devConfig is the shipped dev stack moved to free ports, with fast beacons
// and the demo origin run by the test.
func devConfig(t testing.TB, originURL string) *config.Config {
	t.Helper()
	data, err := deploy.File("dev.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("dev.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = t.TempDir()
	cfg.NATS.Embedded.Listen = "127.0.0.1:0"
	for i := range cfg.PoPs {
		p := &cfg.PoPs[i]
		host, _, _ := net.SplitHostPort(p.HTTP)
		p.HTTP, p.Admin = host+":0", host+":0"
		if p.HTTPS != "" {
			p.HTTPS = host + ":0"
		}
	}
	cfg.Sites[0].Origins[0].URL = originURL
	cfg.DNS.Listen = "127.0.0.1:0"
	cfg.DNS.Metrics = ""
	cfg.DNS.Health.BeaconInterval = 100 * time.Millisecond
	cfg.DNS.Health.ProbeInterval = 100 * time.Millisecond
	return cfg
}

// reloadConfig is devConfig for a reload of the stack started from cfg: it
// keeps cfg's PoPs, DNS listener and data directory, which cannot change
// live.
func reloadConfig(t testing.TB, cfg *config.Config, originURL string) *config.Config {
	t.Helper()
	next := devConfig(t, originURL)
	next.PoPs, next.DNS.Listen, next.DataDir = cfg.PoPs, cfg.DNS.Listen, cfg.DataDir
	return next
}

func startDev(t *testing.T) *stack.Stack {
	t.Helper()
	origin := httptest.NewServer(demoorigin.New())
	t.Cleanup(origin.Close)
	return runStack(t, devConfig(t, origin.URL), stack.Roles{AllPoPs: true, DNS: true}, nil)
}

// runStack starts cfg's roles (logging to log; nil discards) and shuts the
// stack down when the test ends, failing it if the shutdown does.
func runStack(t *testing.T, cfg *config.Config, roles stack.Roles, log *slog.Logger) *stack.Stack {
	t.Helper()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	st, err := stack.Start(context.Background(), cfg, roles, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := st.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return st
}

// siteGet sends GET path with the dev site's Host to one PoP of st and
// returns the response (body read and closed) and the body.
func siteGet(t testing.TB, st *stack.Stack, pop, path string) (*http.Response, string) {
	t.Helper()
	resp, b, err := siteRead(t, st, pop, path)
	if err != nil {
		t.Fatalf("GET %s at %s: %v", path, pop, err)
	}
	return resp, string(b)
}

// siteRead is siteGet for a test that expects the body to break off: it
// returns what arrived and the read error.
func siteRead(t testing.TB, st *stack.Stack, pop, path string) (*http.Response, []byte, error) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+st.PoP(pop).HTTPAddr()+path, nil)
	req.Host = "www.example.test"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

// queryA asks for name A with an ECS option for subnet over net ("udp"/"tcp").
func queryA(t *testing.T, network, server, name, subnet string) []string {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	ip, ipnet, err := net.ParseCIDR(subnet)
	if err != nil {
		t.Fatal(err)
	}
	ones, _ := ipnet.Mask.Size()
	o := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
	o.SetUDPSize(1232)
	o.Option = append(o.Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: uint8(ones), Address: ip.To4()})
	m.Extra = append(m.Extra, o)
	c := &dns.Client{Net: network, Timeout: 2 * time.Second}
	r, _, err := c.Exchange(m, server)
	if err != nil {
		t.Fatalf("%s query: %v", network, err)
	}
	if r.Rcode != dns.RcodeSuccess || !r.Authoritative {
		t.Fatalf("%s query: rcode %s, AA=%v", network, dns.RcodeToString[r.Rcode], r.Authoritative)
	}
	var out []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			out = append(out, a.A.String())
		}
	}
	return out
}

// TestDevStackEndToEnd is the walking skeleton: GeoDNS picks the nearest PoP
// from ECS over UDP and TCP, that PoP proxies to the origin by Host, and a
// PoP whose beacons stop loses its clients to the next nearest.
func TestDevStackEndToEnd(t *testing.T) {
	st := startDev(t)
	dnsAddr := st.DNS().Addr()

	for _, network := range []string{"udp", "tcp"} {
		if got := queryA(t, network, dnsAddr, "www.example.test", "203.0.113.0/24"); len(got) != 1 || got[0] != "127.0.0.13" {
			t.Fatalf("Tokyo subnet over %s: got %v, want [127.0.0.13]", network, got)
		}
	}
	if got := queryA(t, "udp", dnsAddr, "WWW.Example.TEST", "198.51.100.0/24"); len(got) != 1 || got[0] != "127.0.0.12" {
		t.Fatalf("London subnet: got %v, want [127.0.0.12]", got)
	}

	// HTTP to the PoP the DNS chose, with the site's Host.
	tokyo := st.PoP("ap-northeast-1")
	req, _ := http.NewRequest("GET", "http://"+tokyo.HTTPAddr()+"/", nil)
	req.Host = "www.example.test"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "Hello from the Meridian demo origin") {
		t.Fatalf("PoP answer: %d %q", resp.StatusCode, body)
	}
	if via := resp.Header.Get("Via"); !strings.Contains(via, "meridian-ap-northeast-1") {
		t.Fatalf("Via = %q; the answer did not come through the Tokyo PoP", via)
	}

	// An unknown Host never reaches the site's origin.
	req, _ = http.NewRequest("GET", "http://"+tokyo.HTTPAddr()+"/", nil)
	req.Host = "attacker.test"
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusMisdirectedRequest || strings.Contains(string(body), "demo origin") {
		t.Fatalf("unknown Host: %d %q", resp.StatusCode, body)
	}

	// Tokyo stops beaconing: Tokyo's clients move to the next nearest, London.
	tokyo.StopBeacons()
	deadline := time.Now().Add(15 * time.Second)
	var got []string
	for time.Now().Before(deadline) {
		got = queryA(t, "udp", dnsAddr, "www.example.test", "203.0.113.0/24")
		if len(got) == 1 && got[0] == "127.0.0.12" {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(got) != 1 || got[0] != "127.0.0.12" {
		t.Fatalf("after Tokyo's beacons stopped, Tokyo subnet gets %v; want London's [127.0.0.12]", got)
	}
	// And the TCP path agrees.
	if got := queryA(t, "tcp", dnsAddr, "www.example.test", "203.0.113.0/24"); len(got) != 1 || got[0] != "127.0.0.12" {
		t.Fatalf("TCP after failover: %v", got)
	}
}

// TestTakenPortFailsWithAddressAndStartsNothing: a port in use stops the
// start with the address in the error, and nothing is left listening.
func TestTakenPortFailsWithAddressAndStartsNothing(t *testing.T) {
	origin := httptest.NewServer(demoorigin.New())
	defer origin.Close()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	cfg := devConfig(t, origin.URL)
	// Fixed ports for the PoPs so that we can check they were released.
	free := make([]string, len(cfg.PoPs))
	for i := range cfg.PoPs {
		l, _ := net.Listen("tcp", strings.TrimSuffix(cfg.PoPs[i].HTTP, ":0")+":0")
		free[i] = l.Addr().String()
		l.Close()
		cfg.PoPs[i].HTTP = free[i]
	}
	cfg.DNS.Metrics = busy.Addr().String() // the last listener to bind

	_, err = stack.Start(context.Background(), cfg, stack.Roles{AllPoPs: true, DNS: true}, slog.New(slog.DiscardHandler))
	if err == nil {
		t.Fatal("started with a taken port")
	}
	if !strings.Contains(err.Error(), busy.Addr().String()) {
		t.Fatalf("error does not name the taken address %s: %v", busy.Addr(), err)
	}
	for _, addr := range free {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			t.Errorf("PoP address %s still listening after a failed start", addr)
		}
	}
}

// TestReload: sites and DNS names change live; a change of listen address is
// refused and nothing is applied.
func TestReload(t *testing.T) {
	originA := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "origin A") }))
	defer originA.Close()
	originB := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "origin B") }))
	defer originB.Close()
	cfg := devConfig(t, originA.URL)
	st, err := stack.Start(context.Background(), cfg, stack.Roles{AllPoPs: true, DNS: true}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Shutdown(context.Background())
	get := func() string {
		_, body := siteGet(t, st, "us-east-1", "/")
		return body
	}
	if got := get(); got != "origin A" {
		t.Fatalf("before reload: %q", got)
	}
	query := func(name string) int {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		r, err := dns.Exchange(m, st.DNS().Addr())
		if err != nil {
			t.Fatal(err)
		}
		return r.Rcode
	}
	if rc := query("api.example.test."); rc != dns.RcodeNameError {
		t.Fatalf("api before reload: %s", dns.RcodeToString[rc])
	}

	// A bad reload (listen address changed) is refused whole.
	bad := devConfig(t, originB.URL)
	bad.PoPs, bad.DNS.Listen = cfg.PoPs, cfg.DNS.Listen
	bad.PoPs = append([]config.PoP(nil), cfg.PoPs...)
	bad.PoPs[0].HTTP = "127.0.0.11:1"
	if err := st.Reload(bad); err == nil || !strings.Contains(err.Error(), "cannot change live") {
		t.Fatalf("reload with a new listen address: %v", err)
	}
	if got := get(); got != "origin A" {
		t.Fatalf("refused reload changed the origin: %q", got)
	}
	// Settings read only at a PoP's start are refused by name too, rather
	// than reported reloaded while the old values stay in force.
	off := false
	for _, c := range []struct {
		field  string
		change func(p *config.PoP)
	}{
		{"cache.l1_size", func(p *config.PoP) { p.Cache.L1Size *= 2 }},
		{"cache.l2", func(p *config.PoP) { p.Cache.L2.Dir = t.TempDir() }},
		{"fast_hits", func(p *config.PoP) { p.FastHits = &off }},
		{"region", func(p *config.PoP) { p.Region = "eu-central-1" }},
	} {
		bad := reloadConfig(t, cfg, originB.URL)
		bad.PoPs = append([]config.PoP(nil), cfg.PoPs...)
		c.change(&bad.PoPs[1])
		want := "pops " + bad.PoPs[1].ID + ": " + c.field + " cannot change live"
		if err := st.Reload(bad); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("reload changing %s: %v, want %q", c.field, err, want)
		}
	}
	if got := get(); got != "origin A" {
		t.Fatalf("refused reload changed the origin: %q", got)
	}

	// The plugin admin API knows the configured sites, and learns a new
	// one from the reload.
	plugins := func(site string) (int, string) {
		return adminDo(t, st, "us-east-1", "GET", "/admin/plugins/"+site, "dev-ops-token")
	}
	if code, body := plugins("shop"); code != http.StatusNotFound || !strings.Contains(body, `unknown site \"shop\"`) || !strings.Contains(body, "www") {
		t.Fatalf("plugins of an unknown site before reload: %d %s", code, body)
	}

	next := reloadConfig(t, cfg, originB.URL)
	next.DNS.Zones[0].Names = append(next.DNS.Zones[0].Names, "api")
	next.Sites = append(next.Sites, config.Site{Name: "shop", Hosts: []string{"shop.example.test"}, Origins: []config.Origin{{URL: originB.URL}}})
	if err := st.Reload(next); err != nil {
		t.Fatal(err)
	}
	if got := get(); got != "origin B" {
		t.Fatalf("after reload: %q, want origin B", got)
	}
	if rc := query("api.example.test."); rc != dns.RcodeSuccess {
		t.Fatalf("api after reload: %s", dns.RcodeToString[rc])
	}
	if code, body := plugins("shop"); code != http.StatusOK {
		t.Fatalf("plugins of the site added by the reload: %d %s", code, body)
	}
}

// TestPurgeReachesEveryPoP: a site owner purges at one PoP; every PoP stops
// serving the purged object, and the purge is in every PoP's replicated state.
func TestPurgeReachesEveryPoP(t *testing.T) {
	originHits := 0
	var mu sync.Mutex
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		originHits++
		n := originHits
		mu.Unlock()
		w.Header().Set("Cache-Control", "public, max-age=600")
		fmt.Fprintf(w, "version %d", n)
	}))
	defer origin.Close()
	st, err := stack.Start(context.Background(), devConfig(t, origin.URL), stack.Roles{AllPoPs: true, DNS: true}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Shutdown(context.Background())

	get := func(pop string) (string, string) {
		resp, body := siteGet(t, st, pop, "/page")
		return body, resp.Header.Get("Cache-Status")
	}
	pops := st.PoPIDs()
	for _, id := range pops {
		get(id)
		// A hit, though not always of the first GET's copy: the tiers are
		// written after the reply, and the shared L3 may answer with
		// another PoP's fresh copy before this PoP's L1 holds its own.
		if body, cs := get(id); !strings.HasPrefix(body, "version ") || !strings.Contains(cs, "hit") {
			t.Fatalf("%s: second GET %q (%s), want a hit", id, body, cs)
		}
	}

	purge := func(token, body string) int {
		req, _ := http.NewRequest("POST", "http://"+st.PoP("eu-west-2").AdminAddr()+"/admin/purge", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := purge("wrong-token", `{"site":"www","kind":"url","value":"http://www.example.test/page"}`); code != 401 {
		t.Fatalf("purge with a wrong token: %d", code)
	}
	if code := purge("dev-www-token", `{"site":"www","kind":"url","value":"ftp://nope"}`); code != 400 {
		t.Fatalf("purge with a bad URL: %d", code)
	}
	mu.Lock()
	beforePurge := originHits
	mu.Unlock()
	if code := purge("dev-www-token", `{"site":"www","kind":"url","value":"http://WWW.example.test:80/page"}`); code != 200 {
		t.Fatalf("purge by the site owner: %d", code)
	}

	// Every PoP must now serve a version made after the purge (fetched by
	// itself or, through the shared L3, by another PoP), never an older one.
	for _, id := range pops {
		deadline := time.Now().Add(10 * time.Second)
		for {
			body, cs := get(id)
			var v int
			fmt.Sscanf(body, "version %d", &v)
			if v > beforePurge {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s still serves %q (%s) 10s after the purge; versions up to %d predate it", id, body, cs, beforePurge)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// TestHTTPS: the dev stack serves its site over HTTPS with the dev CA's
// certificate, over HTTP/2 and HTTP/3, through the same cache.
func TestHTTPS(t *testing.T) {
	st := startDev(t)
	ca, ok := st.DevCA()
	if !ok {
		t.Fatal("the dev stack made no dev CA")
	}
	pem, err := os.ReadFile(ca.CACert)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	tokyo := st.PoP("ap-northeast-1")
	addr := tokyo.HTTPSAddr()
	tlsConf := &tls.Config{RootCAs: roots, ServerName: "www.example.test"}

	h2 := &http.Client{Transport: &http.Transport{
		TLSClientConfig:   tlsConf,
		ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}}
	h3tr := &http3.Transport{TLSClientConfig: tlsConf, Dial: func(ctx context.Context, _ string, tc *tls.Config, qc *quic.Config) (*quic.Conn, error) {
		return quic.DialAddr(ctx, addr, tc, qc)
	}}
	defer h3tr.Close()
	h3 := &http.Client{Transport: h3tr}

	for i, c := range []struct {
		name   string
		client *http.Client
		proto  string
	}{{"h2", h2, "HTTP/2.0"}, {"h3", h3, "HTTP/3.0"}} {
		resp, err := c.client.Get("https://www.example.test/")
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Proto != c.proto || !strings.Contains(string(body), "Hello from the Meridian demo origin") {
			t.Fatalf("%s: %d %s %q", c.name, resp.StatusCode, resp.Proto, body)
		}
		cs := resp.Header.Get("Cache-Status")
		if i > 0 && !strings.Contains(cs, "hit") {
			t.Fatalf("%s: Cache-Status %q; the h3 request should hit what h2 stored", c.name, cs)
		}
		if c.name == "h2" && !strings.HasPrefix(resp.Header.Get("Alt-Svc"), "h3=") {
			t.Fatalf("h2 response has no Alt-Svc advertising h3: %q", resp.Header.Get("Alt-Svc"))
		}
	}

	// A body sent over HTTP/3 reaches the origin intact, and a GET body
	// (unknown length) is not mistaken for none.
	for _, c := range []struct{ method, body string }{{"POST", "payload over h3"}, {"GET", "a GET with a body"}} {
		req, _ := http.NewRequest(c.method, "https://www.example.test/echo", strings.NewReader(c.body))
		req.ContentLength = -1
		resp, err := h3.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.HasSuffix(string(body), c.body) {
			t.Fatalf("h3 %s with a body: origin echoed %q", c.method, body)
		}
		if cs := resp.Header.Get("Cache-Status"); c.method == "GET" && !strings.Contains(cs, "request-body") {
			t.Fatalf("h3 GET with a body: Cache-Status %q, want a bypass", cs)
		}
	}

	// An unknown server name gets no certificate.
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: "unknown.example.test"})
	if err == nil {
		conn.Close()
		t.Fatal("handshake for an unknown name succeeded")
	}
}

// TestPluginRolloutThroughTheStack: a site owner pushes the header-injection
// plugin (built from source) to one PoP; every PoP runs it on the site's
// traffic.
func TestPluginRolloutThroughTheStack(t *testing.T) {
	wasm, err := plugintest.BuildGo(context.Background(), t.TempDir(), "headers")
	if err != nil {
		t.Fatal(err)
	}
	st := startDev(t)
	pushPlugin(t, st, "eu-west-2", "headers", url.Values{"config": {"response=X-Edge: meridian"}}, wasm["headers"])
	for _, id := range st.PoPIDs() {
		// Generous: compiling a Go plugin takes tens of seconds under -race.
		deadline := time.Now().Add(180 * time.Second)
		for {
			if resp := getHome(t, st.PoP(id).HTTPAddr()); resp.Header.Get("X-Edge") == "meridian" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the pushed plugin is not answering after 180s", id)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// The site's hits stay on the PoP's fast path, the plugin running there
	// as its hooks: its header on every answer.
	pop := st.PoP("eu-west-2")
	served := func() float64 {
		return testutil.CounterSum(t, pop.Registry(), "meridian_cache_fast_requests_total", "outcome", "served")
	}
	before := served()
	for i := range 4 {
		resp := getHome(t, pop.HTTPAddr())
		if resp.Header.Get("X-Edge") != "meridian" || !strings.Contains(resp.Header.Get("Cache-Status"), "hit") {
			t.Fatalf("hit %d: X-Edge %q Cache-Status %q, want the plugin's header on a hit", i, resp.Header.Get("X-Edge"), resp.Header.Get("Cache-Status"))
		}
	}
	if n := served() - before; n < 3 {
		t.Errorf("the fast path answered %v of 4 hits of the plugin site, want 3 or more", n)
	}
	// Its series carry the plugin's name and version as pushed.
	if n := testutil.MetricSum(t, pop.Registry(), "meridian_plugin_calls_total", map[string]string{"site": "www", "plugin": "headers", "version": "1"}); n < 4 {
		t.Errorf("meridian_plugin_calls_total{plugin=\"headers\",version=\"1\"} = %v, want 4 or more", n)
	}
}

// getHome GETs www.example.test's home page from a PoP at addr, body read.
func getHome(t *testing.T, addr string) *http.Response {
	t.Helper()
	r, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
	r.Host = "www.example.test"
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// TestCacheTiersAcrossRestartAndPoPs: an object fetched once is served after
// a restart from the disk tier, and by another PoP from the shared L3,
// without asking the origin again.
func TestCacheTiersAcrossRestartAndPoPs(t *testing.T) {
	var mu sync.Mutex
	hits := 0
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits++
		mu.Unlock()
		w.Header().Set("Cache-Control", "public, max-age=600")
		io.WriteString(w, strings.Repeat("tiered object ", 1000))
	}))
	defer origin.Close()
	cfg := devConfig(t, origin.URL)
	start := func() *stack.Stack {
		st, err := stack.Start(context.Background(), cfg, stack.Roles{AllPoPs: true}, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	get := func(st *stack.Stack, pop string) string {
		resp, body := siteGet(t, st, pop, "/big")
		if !strings.HasPrefix(body, "tiered object") {
			t.Fatalf("%s: body %.40q", pop, body)
		}
		return resp.Header.Get("Cache-Status")
	}

	st := start()
	get(st, "ap-northeast-1")
	if cs := get(st, "ap-northeast-1"); !strings.Contains(cs, "detail=l1") {
		t.Fatalf("second GET: %s, want an L1 hit", cs)
	}
	if err := st.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	st = start()
	defer st.Shutdown(context.Background())
	if cs := get(st, "ap-northeast-1"); !strings.Contains(cs, "hit") || !strings.Contains(cs, "detail=l2") {
		t.Fatalf("after a restart: %s, want a hit from the disk tier", cs)
	}
	if cs := get(st, "eu-west-2"); !strings.Contains(cs, "hit") || !strings.Contains(cs, "detail=l3") {
		t.Fatalf("another PoP: %s, want a hit from the shared L3", cs)
	}
	mu.Lock()
	defer mu.Unlock()
	if hits != 1 {
		t.Fatalf("origin asked %d times, want once", hits)
	}
}

// TestOriginTLS: an https origin with a private CA works once the site
// trusts that CA, and is refused (502) without it.
func TestOriginTLS(t *testing.T) {
	origin := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "over TLS")
	}))
	defer origin.Close()
	caFile := filepath.Join(t.TempDir(), "origin-ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: origin.Certificate().Raw}), 0o644)

	for _, c := range []struct {
		name   string
		ca     string
		status int
	}{{"trusted", caFile, 200}, {"untrusted", "", 502}} {
		t.Run(c.name, func(t *testing.T) {
			cfg := devConfig(t, origin.URL)
			cfg.Sites[0].OriginTLS.CAFile = c.ca
			cfg.Sites[0].OriginTLS.ServerName = "example.com" // httptest's certificate name
			st, err := stack.Start(context.Background(), cfg, stack.Roles{PoPs: []string{"us-east-1"}}, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			defer st.Shutdown(context.Background())
			req, _ := http.NewRequest("GET", "http://"+st.PoP("us-east-1").HTTPAddr()+"/", nil)
			req.Host = "www.example.test"
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.status || (c.status == 200 && string(body) != "over TLS") {
				t.Fatalf("%d %q, want %d", resp.StatusCode, body, c.status)
			}
		})
	}
}

// TestReloadPicksUpNewPEM: SIGHUP (Reload) re-reads PEM certificates.
func TestReloadPicksUpNewPEM(t *testing.T) {
	origin := httptest.NewServer(demoorigin.New())
	defer origin.Close()
	cfg := devConfig(t, origin.URL)
	st, err := stack.Start(context.Background(), cfg, stack.Roles{PoPs: []string{"us-east-1"}}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Shutdown(context.Background())
	serial := func() string {
		c, err := tls.Dial("tcp", st.PoP("us-east-1").HTTPSAddr(), &tls.Config{ServerName: "www.example.test", InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	before := serial()
	ca, _ := st.DevCA()
	fresh, err := devca.Ensure(t.TempDir(), "replacement", []string{"www.example.test"})
	if err != nil {
		t.Fatal(err)
	}
	for src, dst := range map[string]string{fresh.Cert: ca.Cert, fresh.Key: ca.Key} {
		b, _ := os.ReadFile(src)
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if after := serial(); after == before {
		t.Fatalf("still serving certificate %s after reload", before)
	}
}

// TestNATSGone: with the external NATS down, PoPs keep serving (cache and
// origin), a purge is still applied locally and queued, and the DNS keeps
// answering from its last view.
func TestNATSGone(t *testing.T) {
	nsrv := testutil.StartNATS(t)
	origin := httptest.NewServer(demoorigin.New())
	defer origin.Close()
	cfg := devConfig(t, origin.URL)
	cfg.NATS.Embedded = nil
	cfg.NATS.URLs = []string{nsrv.ClientURL()}
	st, err := stack.Start(context.Background(), cfg, stack.Roles{AllPoPs: true, DNS: true}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Shutdown(context.Background())
	get := func(path string) (int, string) {
		resp, _ := siteGet(t, st, "ap-northeast-1", path)
		return resp.StatusCode, resp.Header.Get("Cache-Status")
	}
	get("/")
	nsrv.Shutdown()

	if code, cs := get("/"); code != 200 || !strings.Contains(cs, "hit") {
		t.Fatalf("cached page with NATS down: %d %s", code, cs)
	}
	if code, _ := get("/bytes/100"); code != 200 {
		t.Fatalf("origin fetch with NATS down: %d", code)
	}
	if code, body := adminSend(t, st, "ap-northeast-1", "POST", "/admin/purge", "dev-www-token",
		strings.NewReader(`{"site":"www","kind":"prefix","value":"http://www.example.test/"}`)); code != 200 {
		t.Fatalf("purge with NATS down: %d %s", code, body)
	}
	if _, cs := get("/"); strings.Contains(cs, "hit") {
		t.Fatalf("purged page still a hit with NATS down: %s", cs)
	}
	for _, network := range []string{"udp", "tcp"} {
		if got := queryA(t, network, st.DNS().Addr(), "www.example.test", "203.0.113.0/24"); len(got) != 1 {
			t.Fatalf("DNS over %s with NATS down: %v", network, got)
		}
	}
}

// TestCorruptL2ObjectIsCutNotServed flips a byte in the middle of a large
// object's file on disk between two runs of a PoP. The PoP has already sent
// the blocks before the bad one when it finds the mismatch, so the client
// must see a truncated response (never a complete one with wrong bytes), and
// the next request must get the right bytes from another tier or the origin.
func TestCorruptL2ObjectIsCutNotServed(t *testing.T) {
	for _, fast := range []bool{true, false} {
		t.Run(fmt.Sprintf("fast_hits=%v", fast), func(t *testing.T) { corruptL2ObjectIsCut(t, fast) })
	}
}

func corruptL2ObjectIsCut(t *testing.T, fast bool) {
	want := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=600")
		// Not text: the dev site's compression would store it 300 times
		// smaller, and the test needs a file of many blocks.
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(want)
	}))
	defer origin.Close()
	cfg := devConfig(t, origin.URL)
	cfg.PoPs[0].Cache.L3.Endpoint = "" // L2 is the only tier below L1
	cfg.PoPs[0].FastHits = &fast
	logs := &testutil.SyncBuffer{}
	start := func() *stack.Stack {
		st, err := stack.Start(context.Background(), cfg, stack.Roles{PoPs: []string{"us-east-1"}}, slog.New(slog.NewJSONHandler(logs, nil)))
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	get := func(st *stack.Stack) (string, []byte, error) {
		resp, b, err := siteRead(t, st, "us-east-1", "/big")
		return resp.Header.Get("Cache-Status"), b, err
	}

	st := start()
	if _, b, err := get(st); err != nil || !bytes.Equal(b, want) {
		t.Fatalf("fill: %d bytes, %v", len(b), err)
	}
	if err := st.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	flipped := 0
	filepath.WalkDir(filepath.Join(cfg.DataDir, "pops", "us-east-1", "l2"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if info, _ := d.Info(); info != nil && info.Size() > int64(len(want)) {
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			b := []byte{0}
			f.ReadAt(b, info.Size()/2)
			f.WriteAt([]byte{b[0] ^ 0xff}, info.Size()/2)
			flipped++
		}
		return nil
	})
	if flipped != 1 {
		t.Fatalf("found %d object files of 1 MiB or more in L2, want 1", flipped)
	}

	st = start()
	defer st.Shutdown(context.Background())
	cs, b, err := get(st)
	if err == nil {
		t.Fatalf("a corrupted L2 object was served whole (%d bytes, equal to the original: %v; Cache-Status %q); want a cut response", len(b), bytes.Equal(b, want), cs)
	}
	if len(b) >= len(want) || !bytes.Equal(b, want[:len(b)]) {
		t.Fatalf("the cut response carried %d bytes that are not a prefix of the object", len(b))
	}
	// The access log says what the client got: the status sent, the bytes
	// it received, and that the stored copy failed.
	var line map[string]any
	testutil.WaitFor(t, "the cut request's access log line", func() bool {
		for l := range strings.SplitSeq(logs.String(), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "request" && m["uri"] == "/big" && m["body_error"] != nil {
				line = m
				return true
			}
		}
		return false
	})
	if line["status"] != float64(200) || line["body_error"] != "store-error" || line["bytes"] != float64(len(b)) {
		t.Fatalf("access log line %v: want status 200, body_error store-error and the %d bytes the client got", line, len(b))
	}
	if n := testutil.MetricSum(t, st.PoP("us-east-1").Registry(), "meridian_http_responses_cut_total", map[string]string{"site": "www", "reason": "store-error"}); n != 1 {
		t.Errorf("meridian_http_responses_cut_total{reason=store-error}: %v, want 1", n)
	}
	cs, b, err = get(st)
	if err != nil || !bytes.Equal(b, want) {
		t.Fatalf("after the cut: %d bytes, %v (Cache-Status %q); want the object from the origin", len(b), err, cs)
	}
	if strings.Contains(cs, "detail=l2") {
		t.Fatalf("after the cut the corrupted file still answered: %s", cs)
	}
}

// TestFastHitsSwitch: pops[].fast_hits: false sends a PoP's hits through the
// full handler chain; the other PoPs keep the fast path.
func TestFastHitsSwitch(t *testing.T) {
	origin := httptest.NewServer(demoorigin.New())
	t.Cleanup(origin.Close)
	cfg := devConfig(t, origin.URL)
	off := false
	cfg.PoPs[0].FastHits = &off
	st, err := stack.Start(context.Background(), cfg, stack.Roles{AllPoPs: true}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st.Shutdown(ctx)
	})
	for i, want := range []bool{false, true} {
		pop := cfg.PoPs[i].ID
		for range 3 {
			if resp, _ := siteGet(t, st, pop, "/"); resp.StatusCode != 200 {
				t.Fatalf("%s: status %d", pop, resp.StatusCode)
			}
		}
		served := testutil.CounterSum(t, st.PoP(pop).Registry(), "meridian_cache_fast_requests_total", "outcome", "served")
		if (served > 0) != want {
			t.Errorf("%s (fast_hits %v): the fast path served %v hits", pop, want, served)
		}
	}
}

// TestReloadRotatesAdminTokens: a reload with new token hashes retires the
// old tokens and admits the new ones at once, on the PoP's own admin routes
// and on the plugin admin API alike; every refusal says why.
func TestReloadRotatesAdminTokens(t *testing.T) {
	origin := httptest.NewServer(demoorigin.New())
	defer origin.Close()
	cfg := devConfig(t, origin.URL)
	st, err := stack.Start(context.Background(), cfg, stack.Roles{AllPoPs: true}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Shutdown(context.Background())
	call := func(method, path, token string) (int, string) {
		return adminDo(t, st, "eu-west-2", method, path, token)
	}
	const drain, plugins = "/admin/drain?off=1", "/admin/plugins/www"
	if code, body := call("POST", drain, ""); code != http.StatusUnauthorized || !strings.Contains(body, "send the ops token") {
		t.Fatalf("drain without a token: %d %s", code, body)
	}
	if code, body := call("GET", plugins, ""); code != http.StatusUnauthorized || !strings.Contains(body, "send the ops token or the site owner's token") {
		t.Fatalf("plugins without a token: %d %s", code, body)
	}
	if code, body := call("POST", drain, "dev-ops-token"); code != http.StatusNoContent {
		t.Fatalf("drain with the ops token: %d %s", code, body)
	}
	if code, body := call("GET", plugins, "dev-www-token"); code != http.StatusOK {
		t.Fatalf("plugins with the owner token: %d %s", code, body)
	}

	next := devConfig(t, origin.URL)
	next.PoPs, next.DNS, next.DataDir = cfg.PoPs, cfg.DNS, cfg.DataDir
	opsSum, ownerSum := sha256.Sum256([]byte("rotated-ops")), sha256.Sum256([]byte("rotated-www"))
	next.Admin.OpsTokenSHA256 = hex.EncodeToString(opsSum[:])
	next.Sites[0].OwnerTokenSHA256 = hex.EncodeToString(ownerSum[:])
	if err := st.Reload(next); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ method, path, token string }{
		{"POST", drain, "dev-ops-token"}, {"GET", plugins, "dev-ops-token"}, {"GET", plugins, "dev-www-token"},
	} {
		if code, body := call(c.method, c.path, c.token); code != http.StatusUnauthorized || !strings.Contains(body, "not recognised") {
			t.Errorf("%s with the retired token %s: %d %s", c.path, c.token, code, body)
		}
	}
	if code, body := call("POST", drain, "rotated-ops"); code != http.StatusNoContent {
		t.Errorf("drain with the new ops token: %d %s", code, body)
	}
	for _, tok := range []string{"rotated-ops", "rotated-www"} {
		if code, body := call("GET", plugins, tok); code != http.StatusOK {
			t.Errorf("plugins with the new token %s: %d %s", tok, code, body)
		}
	}

	// Without any token configured, the refusal says so instead of
	// blaming the caller's token.
	none := devConfig(t, origin.URL)
	none.PoPs, none.DNS, none.DataDir = cfg.PoPs, cfg.DNS, cfg.DataDir
	none.Admin.OpsTokenSHA256, none.Sites[0].OwnerTokenSHA256 = "", ""
	if err := st.Reload(none); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ method, path string }{{"POST", drain}, {"GET", plugins}} {
		if code, body := call(c.method, c.path, "rotated-ops"); code != http.StatusForbidden || !strings.Contains(body, "no ops token configured") {
			t.Errorf("%s with no token configured: %d %s", c.path, code, body)
		}
	}
}

// TestPoPMetricsNameThePoP: the cache's series carry the PoP's id as their
// pop label, as the DNS's and /admin/info do, so dashboards can join them.
func TestPoPMetricsNameThePoP(t *testing.T) {
	st := startDev(t)
	siteGet(t, st, "ap-northeast-1", "/")
	_, body := adminDo(t, st, "ap-northeast-1", "GET", "/metrics", "")
	n := 0
	for line := range strings.SplitSeq(body, "\n") {
		if !strings.HasPrefix(line, "meridian_cache_") {
			continue
		}
		n++
		if !strings.Contains(line, `pop="ap-northeast-1"`) {
			t.Errorf("cache series without pop=\"ap-northeast-1\": %s", line)
		}
	}
	if n == 0 {
		t.Fatalf("no meridian_cache_ series on /metrics:\n%.2000s", body)
	}
}

// adminDo sends method path to pop's admin API with token ("" sends none)
// and returns the status and the body.
func adminDo(t *testing.T, st *stack.Stack, pop, method, path, token string) (int, string) {
	t.Helper()
	return adminSend(t, st, pop, method, path, token, nil)
}

// adminSend is adminDo with a request body.
func adminSend(t *testing.T, st *stack.Stack, pop, method, path, token string, body io.Reader) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+st.PoP(pop).AdminAddr()+path, body)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestDrainSurvivesRestart: an operator's drain (admin API) holds across a
// restart of the PoP, until it is turned off; the drain of a stop
// (DrainForShutdown) does not; /metrics shows the state.
func TestDrainSurvivesRestart(t *testing.T) {
	origin := httptest.NewServer(demoorigin.New())
	defer origin.Close()
	cfg := devConfig(t, origin.URL)
	start := func() *stack.Stack {
		st, err := stack.Start(context.Background(), cfg, stack.Roles{AllPoPs: true}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	health := func(st *stack.Stack) (int, string) { return adminDo(t, st, "ap-northeast-1", "GET", "/healthz", "") }
	gauge := func(st *stack.Stack) string {
		_, body := adminDo(t, st, "ap-northeast-1", "GET", "/metrics", "")
		for line := range strings.SplitSeq(body, "\n") {
			if strings.HasPrefix(line, "meridian_pop_draining{") {
				return line
			}
		}
		return ""
	}
	st := start()
	if code, body := adminDo(t, st, "ap-northeast-1", "POST", "/admin/drain", "dev-ops-token"); code != http.StatusNoContent {
		t.Fatalf("drain: %d %s", code, body)
	}
	if g := gauge(st); g != `meridian_pop_draining{pop="ap-northeast-1"} 1` {
		t.Errorf("gauge while drained: %q", g)
	}
	st.Shutdown(context.Background())

	st = start()
	if code, body := health(st); code != http.StatusServiceUnavailable || !strings.Contains(body, "draining") {
		t.Fatalf("/healthz after a restart of a drained PoP: %d %q, want 503 draining", code, body)
	}
	if code, _ := adminDo(t, st, "eu-west-2", "GET", "/healthz", ""); code != http.StatusOK {
		t.Fatalf("another PoP after the restart: %d", code)
	}
	if code, body := adminDo(t, st, "ap-northeast-1", "POST", "/admin/drain?off=1", "dev-ops-token"); code != http.StatusNoContent {
		t.Fatalf("drain off: %d %s", code, body)
	}
	if g := gauge(st); g != `meridian_pop_draining{pop="ap-northeast-1"} 0` {
		t.Errorf("gauge after the drain ended: %q", g)
	}
	st.DrainForShutdown() // as a stop with shutdown.drain does
	if code, _ := health(st); code != http.StatusServiceUnavailable {
		t.Fatalf("/healthz while a stop drains: %d", code)
	}
	st.Shutdown(context.Background())

	st = start()
	defer st.Shutdown(context.Background())
	if code, body := health(st); code != http.StatusOK {
		t.Fatalf("/healthz after a restart of an undrained PoP: %d %q", code, body)
	}
}

// TestPluginLimitsFromConfig: plugins.timeout reaches every PoP's plugin
// host: an endless loop is stopped at the configured deadline, the site
// (fail open) still answers, and the site owner's log names the deadline.
func TestPluginLimitsFromConfig(t *testing.T) {
	loop, err := plugintest.WAT(context.Background(), t.TempDir(), "loop")
	if err != nil {
		t.Fatal(err)
	}
	origin := httptest.NewServer(demoorigin.New())
	defer origin.Close()
	cfg := devConfig(t, origin.URL)
	cfg.Plugins.Timeout = 20 * time.Millisecond
	st, err := stack.Start(context.Background(), cfg, stack.Roles{AllPoPs: true}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Shutdown(context.Background())
	pop := st.PoP("eu-west-2")
	pushPlugin(t, st, "eu-west-2", "loop", nil, loop)
	testutil.WaitFor(t, "the loop plugin to run and be stopped at 20ms", func() bool {
		if r := getHome(t, pop.HTTPAddr()); r.StatusCode != http.StatusOK {
			t.Fatalf("the fail-open site answered %d", r.StatusCode)
		}
		_, logs := adminDo(t, st, "eu-west-2", "GET", "/admin/plugins/www/logs?plugin=loop", "dev-www-token")
		return strings.Contains(logs, "20ms")
	})
}

// pushPlugin pushes wasm as plugin name of site www to pop's admin API with
// the site owner's token and query q (config, canary...), failing t unless
// the push is accepted.
func pushPlugin(t *testing.T, st *stack.Stack, pop, name string, q url.Values, wasm []byte) {
	t.Helper()
	if code, body := adminSend(t, st, pop, "POST", "/admin/plugins/www/"+name+"?"+q.Encode(), "dev-www-token", bytes.NewReader(wasm)); code/100 != 2 {
		t.Fatalf("push %s: %d %s", name, code, body)
	}
}

// TestOriginDownSeriesFollowReloads: meridian_origin_server_down shows the
// origin servers a PoP serves with, as an operator reads it on /metrics: a
// server that failed is 1; a refused reload changes nothing; a reload that
// removes a site takes its series away and a new site's appear.
func TestOriginDownSeriesFollowReloads(t *testing.T) {
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadURL := "http://" + dead.Addr().String()
	dead.Close()
	live := httptest.NewServer(demoorigin.New())
	defer live.Close()
	cfg := devConfig(t, deadURL)
	st, err := stack.Start(context.Background(), cfg, stack.Roles{AllPoPs: true, DNS: true}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Shutdown(context.Background())
	const pop = "eu-west-2"
	series := func() map[string]string { // site -> value
		t.Helper()
		_, body := adminDo(t, st, pop, "GET", "/metrics", "")
		got := map[string]string{}
		for _, m := range regexp.MustCompile(`(?m)^meridian_origin_server_down\{.*site="([^"]+)".*\} (\S+)$`).FindAllStringSubmatch(body, -1) {
			got[m[1]] = m[2]
		}
		return got
	}
	if got := series(); got["www"] != "0" || len(got) != 1 {
		t.Fatalf("before any request: %v, want www's server up", got)
	}
	if resp, _ := siteGet(t, st, pop, "/"); resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("GET with the origin down: %d, want 502", resp.StatusCode)
	}
	if got := series(); got["www"] != "1" {
		t.Fatalf("after the origin failed: %v, want www's server down (1)", got)
	}

	bad := reloadConfig(t, cfg, live.URL)
	bad.PoPs = append([]config.PoP(nil), cfg.PoPs...)
	bad.PoPs[0].HTTP = "127.0.0.11:1"
	if err := st.Reload(bad); err == nil {
		t.Fatal("a reload changing a listen address was applied")
	}
	if got := series(); got["www"] != "1" || len(got) != 1 {
		t.Fatalf("after a refused reload: %v, want www's server still down", got)
	}

	next := reloadConfig(t, cfg, live.URL)
	next.Sites = []config.Site{{Name: "shop", Hosts: []string{"www.example.test"}, Origins: []config.Origin{{URL: live.URL}}}}
	if err := st.Reload(next); err != nil {
		t.Fatal(err)
	}
	if got := series(); got["shop"] != "0" || len(got) != 1 {
		t.Fatalf("after a reload replacing www by shop: %v, want only shop's server, up", got)
	}
}

// TestDNSNSIDFromConfig: dns.nsid reaches the DNS server, which names itself
// to `dig +nsid` over UDP and TCP, and a reload renames it.
func TestDNSNSIDFromConfig(t *testing.T) {
	cfg := devConfig(t, "http://127.0.0.1:1")
	cfg.DNS.NSID = "node-a"
	st, err := stack.Start(context.Background(), cfg, stack.Roles{DNS: true}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Shutdown(context.Background())
	nsid := func(network string) string {
		t.Helper()
		m := new(dns.Msg)
		m.SetQuestion("www.example.test.", dns.TypeA)
		m.SetEdns0(1232, false)
		m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_NSID{Code: dns.EDNS0NSID})
		r, _, err := (&dns.Client{Net: network}).Exchange(m, st.DNS().Addr())
		if err != nil {
			t.Fatal(err)
		}
		if opt := r.IsEdns0(); opt != nil {
			for _, o := range opt.Option {
				if n, ok := o.(*dns.EDNS0_NSID); ok {
					b, _ := hex.DecodeString(n.Nsid)
					return string(b)
				}
			}
		}
		return ""
	}
	for _, network := range []string{"udp", "tcp"} {
		if got := nsid(network); got != "node-a" {
			t.Errorf("NSID over %s: %q, want node-a", network, got)
		}
	}
	next := reloadConfig(t, cfg, "http://127.0.0.1:1")
	next.DNS.NSID = "node-b"
	if err := st.Reload(next); err != nil {
		t.Fatal(err)
	}
	if got := nsid("udp"); got != "node-b" {
		t.Errorf("NSID after reload: %q, want node-b", got)
	}
}

// TestRateLimitPluginThroughTheStack: the ratelimit example, which counts
// in expiring replicated counters (meridian_kv_counter_add_ttl), limits a
// client on a real PoP: the request after its limit is a 429.
func TestRateLimitPluginThroughTheStack(t *testing.T) {
	wasm, err := plugintest.BuildGo(context.Background(), t.TempDir(), "ratelimit")
	if err != nil {
		t.Fatal(err)
	}
	st := startDev(t)
	pushPlugin(t, st, "eu-west-2", "ratelimit", url.Values{"config": {"limit=3"}}, wasm["ratelimit"])
	addr := st.PoP("eu-west-2").HTTPAddr()
	// Generous: compiling a Go plugin takes tens of seconds under -race.
	deadline := time.Now().Add(180 * time.Second)
	var remaining string
	for remaining == "" {
		resp := getHome(t, addr)
		if resp.StatusCode == http.StatusTooManyRequests {
			t.Fatal("429 before any answer showed the remaining count")
		}
		remaining = resp.Header.Get("X-Ratelimit-Remaining")
		if remaining == "" && time.Now().After(deadline) {
			t.Fatal("the pushed ratelimit plugin is not answering after 180s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// This PoP counts its own requests at once: the count goes down to 0,
	// then the next is refused.
	for n, _ := strconv.Atoi(remaining); n > 0; n-- {
		resp := getHome(t, addr)
		if got := resp.Header.Get("X-Ratelimit-Remaining"); resp.StatusCode != 200 || got != strconv.Itoa(n-1) {
			t.Fatalf("within the limit: %d, remaining %q, want 200 and %d", resp.StatusCode, got, n-1)
		}
	}
	if resp := getHome(t, addr); resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("past the limit: %d (Retry-After %q), want 429 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

// TestPluginLogsHearEveryConfiguredPoP: on a stack whose config lists
// several PoPs, a logs request at one PoP expects the others from the
// start, so its first answer names them all (without waiting out the
// time a PoP that knows no others gives them).
func TestPluginLogsHearEveryConfiguredPoP(t *testing.T) {
	st := startDev(t)
	code, body := adminDo(t, st, "eu-west-2", "GET", "/admin/plugins/www/logs", "dev-www-token")
	if code != http.StatusOK {
		t.Fatalf("logs: %d %s", code, body)
	}
	var ans rollout.LogsAnswer
	if err := json.Unmarshal([]byte(body), &ans); err != nil {
		t.Fatal(err)
	}
	if want := st.PoPIDs(); !slices.Equal(ans.Answered, slices.Sorted(slices.Values(want))) || len(ans.NotAnswered) != 0 || len(ans.Notes) != 0 {
		t.Errorf("answered %v, not answered %v, notes %q: want every configured PoP %v and no notes", ans.Answered, ans.NotAnswered, ans.Notes, want)
	}
}
