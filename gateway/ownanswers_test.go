package gateway_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway"
	"github.com/meridian-edge/meridian/gateway/cache"
	"github.com/meridian-edge/meridian/gateway/tlsedge"
	"github.com/meridian-edge/meridian/gateway/tlsedge/devca"
	mtestutil "github.com/meridian-edge/meridian/internal/testutil"
	"github.com/meridian-edge/meridian/middleware/plugin"
	"github.com/meridian-edge/meridian/plugins"
	"github.com/meridian-edge/meridian/plugins/native"
	"github.com/meridian-edge/meridian/plugins/plugintest"
)

// limitWAT is a plugin that answers every request itself: 429 with
// Retry-After and a body, as a rate limiter does (plugins/abi's output: the
// version byte, then actions as tag, u16 length, value).
const limitWAT = `(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u64" (func $store (param i64 i64)))
  (import "extism:host/env" "output_set" (func $output (param i64 i64)))
  (memory 1)
  (data (i32.const 0)
    "\01"
    "\09\02\00" "\ad\01"
    "\0a\0e\00" "\0b" "Retry-After" "60"
    "\0b\09\00" "slow down"
    "\00\00\00\00\00")
  (func (export "on_request") (result i32)
    (local $p i64)
    (local $i i32)
    (local.set $p (call $alloc (i64.const 40)))
    (loop $copy
      (call $store
        (i64.add (local.get $p) (i64.extend_i32_u (local.get $i)))
        (i64.load (local.get $i)))
      (local.set $i (i32.add (local.get $i) (i32.const 8)))
      (br_if $copy (i32.lt_u (local.get $i) (i32.const 40))))
    (call $output (local.get $p) (i64.const 35))
    (i32.const 0)))
`

// pluginRunner runs real plugins (native engine) for three sites:
// "limited", whose plugin answers 429 itself, and "broken" and
// "respbroken", whose plugins trap (in on_request, in on_response) on sites
// that fail closed. It returns the sites' chains too, for the fast path's
// hooks.
func pluginRunner(t *testing.T) (*plugin.Runner, map[string]*plugins.Chain) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	limit, err := plugintest.WATSource(ctx, dir, "limit", limitWAT)
	if err != nil {
		t.Fatal(err)
	}
	trap, err := plugintest.WAT(ctx, dir, "trap")
	if err != nil {
		t.Fatal(err)
	}
	respTrap, err := plugintest.WAT(ctx, dir, "resptrap")
	if err != nil {
		t.Fatal(err)
	}
	eng, err := native.New(native.Options{CacheDir: plugintest.CacheDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close(ctx) })
	h, err := plugins.NewHost(plugins.Options{Engine: eng, Limits: plugins.Limits{Timeout: 2 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close(ctx) })
	for site, blob := range map[string][]byte{"limited": limit, "broken": trap, "respbroken": respTrap} {
		v, err := h.Add(ctx, site, "p", blob)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Activate(ctx, site, "p", v.Version); err != nil {
			t.Fatal(err)
		}
	}
	chains := map[string]*plugins.Chain{
		"limited": {Site: "limited", Entries: []plugins.Entry{{Plugin: "p"}}},
		"broken":  {Site: "broken", FailClosed: true, Entries: []plugins.Entry{{Plugin: "p"}}},
		// Fails only at delivery: on a fast-path hit, after the lookup.
		"respbroken": {Site: "respbroken", FailClosed: true, Entries: []plugins.Entry{{Plugin: "p"}}},
	}
	return plugin.NewRunner(plugin.Options{Host: h, PoP: "test-pop", Chain: func(r *http.Request) *plugins.Chain {
		return chains[gateway.SiteFromContext(r.Context())]
	}}), chains
}

// TestEveryAnswerOfThePoPCarriesItsFields: whatever made an answer the PoP
// sends (the origin through the cache, the PoP itself for an unknown host,
// a failed origin, a loop or an HTTP→HTTPS redirect, a plugin that failed
// closed or answered itself), it carries X-Request-Id and the PoP's Via;
// the PoP's own answers also carry a Cache-Status entry naming why, and
// its error pages no-store, nosniff and the common body naming the PoP and
// the request id. The same on the fast path and through net/http only.
func TestEveryAnswerOfThePoPCarriesItsFields(t *testing.T) {
	rn, chains := pluginRunner(t)
	for _, noFast := range []bool{false, true} {
		t.Run(fmt.Sprintf("noFastPath=%v", noFast), func(t *testing.T) { testOwnAnswers(t, rn, chains, noFast) })
	}
}

func testOwnAnswers(t *testing.T, rn *plugin.Runner, chains map[string]*plugins.Chain, noFast bool) {
	o := cacheableOrigin(t)
	refused, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "http://" + refused.Addr().String()
	refused.Close()
	files, err := devca.Ensure(t.TempDir(), "test", []string{"secure.test"})
	if err != nil {
		t.Fatal(err)
	}
	certs, err := tlsedge.New(tlsedge.Options{PoP: "test-pop", Sites: []tlsedge.SiteCert{
		{Site: "secure", Names: []string{"secure.test"}, CertFile: files.Cert, KeyFile: files.Key},
	}})
	if err != nil {
		t.Fatal(err)
	}
	pluginSites := map[string]bool{"limited": true, "broken": true, "respbroken": true}
	p := startPoP(t, gateway.Options{
		NoFastPath: noFast,
		Sites: []gateway.Site{
			{Name: "www", Hosts: []string{"www.test"}, Origin: pool(t, "www", o.URL, 0)},
			{Name: "dead", Hosts: []string{"dead.test"}, Origin: pool(t, "dead", deadURL, 0)},
			{Name: "secure", Hosts: []string{"secure.test"}, Origin: pool(t, "secure", o.URL, 0)},
			{Name: "limited", Hosts: []string{"limited.test"}, Origin: pool(t, "limited", o.URL, 0)},
			{Name: "broken", Hosts: []string{"broken.test"}, Origin: pool(t, "broken", o.URL, 0)},
			{Name: "respbroken", Hosts: []string{"respbroken.test"}, Origin: pool(t, "respbroken", o.URL, 0)},
		},
		Plugins:     rn.Middleware,
		PluginSites: func(site string) bool { return pluginSites[site] },
		PluginHooks: func(site string) cache.FastHooks {
			return rn.FastHooks(func() *plugins.Chain { return chains[site] })
		},
		TLS: gateway.TLS{Addr: "127.0.0.1:0", Certs: certs, Policies: []tlsedge.SitePolicy{
			{Names: []string{"secure.test"}, RedirectHTTP: true},
		}},
	})
	// A site whose origin is the PoP itself: a loop.
	if err := p.SetSites([]gateway.Site{
		{Name: "www", Hosts: []string{"www.test"}, Origin: pool(t, "www", o.URL, 0)},
		{Name: "dead", Hosts: []string{"dead.test"}, Origin: pool(t, "dead", deadURL, 0)},
		{Name: "secure", Hosts: []string{"secure.test"}, Origin: pool(t, "secure", o.URL, 0)},
		{Name: "limited", Hosts: []string{"limited.test"}, Origin: pool(t, "limited", o.URL, 0)},
		{Name: "broken", Hosts: []string{"broken.test"}, Origin: pool(t, "broken", o.URL, 0)},
		{Name: "respbroken", Hosts: []string{"respbroken.test"}, Origin: pool(t, "respbroken", o.URL, 0)},
		{Name: "self", Hosts: []string{"self.test"}, Origin: pool(t, "self", "http://"+p.HTTPAddr(), 0)},
	}); err != nil {
		t.Fatal(err)
	}
	const via = "meridian-test-pop"
	tests := []struct {
		name, method, host string
		header             string // an extra request field line
		status             int
		reason             string // the PoP's own answer: the Cache-Status detail; "" for others
		// passedOn: the PoP's own answer came back as the origin's (the
		// site whose origin is the PoP): its entry comes first, the
		// entry of the PoP's cache that forwarded it last.
		passedOn bool
	}{
		{"origin's answer", "GET", "www.test", "", 200, "", false},
		{"origin's answer, a hit", "GET", "www.test", "", 200, "", false},
		{"unknown host", "GET", "nosuch.test", "", 421, "unknown-host", false},
		{"origin refused", "GET", "dead.test", "", 502, "origin-unreachable", false},
		// (a hit would be served: it forwards nothing, so it cannot loop)
		{"request that looped", "GET", "www.test/looped", "CDN-Loop: other-cdn, " + via, 508, "loop", false},
		{"site whose origin is the PoP (GET)", "GET", "self.test/page", "", 508, "loop", true},
		{"site whose origin is the PoP (POST)", "POST", "self.test/page", "", 508, "loop", true},
		{"plugin failed closed", "GET", "broken.test", "", 503, "plugin-failure", false},
		{"plugin failed closed at delivery, a miss", "GET", "respbroken.test/r", "", 503, "plugin-failure", false},
		{"plugin failed closed at delivery, a hit", "GET", "respbroken.test/r", "", 503, "plugin-failure", false},
		{"plugin answered itself", "GET", "limited.test", "", 429, "", false},
		{"redirect to HTTPS", "GET", "secure.test", "", 301, "https-redirect", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			host, path, _ := strings.Cut(tc.host, "/")
			raw := tc.method + " /" + path + " HTTP/1.1\r\nHost: " + host + "\r\n"
			if tc.method != "GET" {
				raw += "Content-Length: 0\r\n"
			}
			if tc.header != "" {
				raw += tc.header + "\r\n"
			}
			resp := exchange(t, p.HTTPAddr(), raw+"\r\n")[0]
			b, _ := io.ReadAll(resp.Body)
			body := string(b)
			if resp.StatusCode != tc.status {
				t.Fatalf("%d %q %v, want %d", resp.StatusCode, body, resp.Header, tc.status)
			}
			id := resp.Header.Get("X-Request-Id")
			if id == "" {
				t.Errorf("no X-Request-Id: %v", resp.Header)
			}
			if vs := resp.Header.Values("Via"); len(vs) == 0 || !strings.HasSuffix(vs[len(vs)-1], " "+via) {
				t.Errorf("Via %q, want the PoP's (%s) last", vs, via)
			}
			if tc.reason == "" {
				return
			}
			cs := resp.Header.Values("Cache-Status")
			own := len(cs) - 1
			if tc.passedOn {
				own = 0
			}
			if len(cs) == 0 || !strings.HasPrefix(cs[own], "meridian") || !strings.HasSuffix(cs[own], "detail="+tc.reason) {
				t.Errorf("Cache-Status %q, want the PoP's entry with detail=%s", cs, tc.reason)
			}
			if tc.status == 301 {
				return // a permanent redirect stays cacheable, and its body is net/http's link
			}
			for f, want := range map[string]string{"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Content-Type": "text/plain; charset=utf-8"} {
				if got := resp.Header.Get(f); got != want {
					t.Errorf("%s %q, want %q", f, got, want)
				}
			}
			if want := fmt.Sprintf("%d %s from PoP %s: ", tc.status, http.StatusText(tc.status), via); !strings.HasPrefix(body, want) ||
				!strings.Contains(body, "Request id: "+id+" ") {
				t.Errorf("body %q, want the PoP's page %q... naming the request id %s", body, want, id)
			}
		})
	}
	// Each loop is counted as the PoP's own answer, reason loop (the
	// looping site's requests twice: the one that came back, and the outer
	// one that passed its 508 on is the origin's answer to it).
	mtestutil.WaitFor(t, "the loops counted", func() bool {
		return mtestutil.MetricSum(t, p.Registry(), "meridian_http_responses_generated_total", map[string]string{"code": "508", "reason": "loop"}) >= 3
	})
	if n := mtestutil.MetricSum(t, p.Registry(), "meridian_http_responses_generated_total", map[string]string{"code": "301", "reason": "https-redirect"}); n != 1 {
		t.Errorf("redirects counted as the PoP's own: %v, want 1", n)
	}
}
