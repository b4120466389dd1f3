package plugin_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/meridian-edge/meridian/middleware/plugin"
	"github.com/meridian-edge/meridian/plugins"
	"github.com/meridian-edge/meridian/plugins/native"
	"github.com/meridian-edge/meridian/plugins/plugintest"
)

var (
	nativeOnce sync.Once
	nativeEng  *native.Engine
	nativeErr  error
)

// newNativePoP is newPoPTimeout with the plugins on the native engine: a
// real loopback PoP (chi, the plugin middleware, a reverse proxy to the
// origin the plugin chose).
func newNativePoP(t *testing.T, kv plugins.KV, origins map[string]*origin, chain *plugins.Chain, timeout time.Duration) *pop {
	t.Helper()
	nativeOnce.Do(func() { nativeEng, nativeErr = native.New(native.Options{CacheDir: plugintest.CacheDir()}) })
	if nativeErr != nil {
		t.Fatal(nativeErr)
	}
	h, err := plugins.NewHost(plugins.Options{Engine: nativeEng, KV: kv, Limits: plugins.Limits{Timeout: timeout}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close(context.Background()) })
	p := &pop{host: h, origins: origins, chain: chain}
	proxy := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		name := "a"
		if d := plugin.DirectivesFrom(pr.In.Context()); d != nil && d.Origin != "" {
			name = d.Origin
		}
		o := origins[name]
		if o == nil {
			o = origins["a"]
		}
		u, _ := url.Parse(o.srv.URL)
		pr.SetURL(u)
		pr.Out.Host = pr.In.Host
	}}
	r := chi.NewRouter()
	r.Use(plugin.New(plugin.Options{
		Host: h, Chain: func(*http.Request) *plugins.Chain { return p.chain },
		PoP: "fra1", PoPRegion: "eu-central",
		Geo: geoTable{netip.MustParseAddr("203.0.113.9"): {"KP", "01", "39.03", "125.75"}},
		ClientIP: func(r *http.Request) netip.Addr {
			a, _ := netip.ParseAddr(r.Header.Get("X-Test-Client"))
			return a
		},
	}))
	r.Handle("/*", proxy)
	p.srv = httptest.NewServer(r)
	t.Cleanup(p.srv.Close)
	return p
}

// TestNativeEndToEnd runs example plugins through a real PoP on the native
// engine: header injection (Go and AssemblyScript), the AssemblyScript
// rewrite, bearer auth answering 401 directly, geo-block, and the A/B split
// choosing the origin with a sticky cookie from on_response.
func TestNativeEndToEnd(t *testing.T) {
	for _, example := range []string{"headers", "as-headers"} {
		t.Run("inject/"+example, func(t *testing.T) {
			o := origins(t)
			p := newNativePoP(t, nil, o, &plugins.Chain{Site: "shop", Entries: []plugins.Entry{{Plugin: "h", Config: map[string]string{
				"request": "X-Site: shop\nX-Tier: gold", "response": "X-Frame-Options: DENY",
				"rewrite_prefix": "/legacy", "rewrite_to": "/v2"}}}}, 2*time.Second)
			p.deploy(t, "h", example)
			res := get(t, p, "/products?id=4")
			if res.status != 200 || res.body != "origin a: /products?id=4" {
				t.Fatalf("got %d %q", res.status, res.body)
			}
			in := o["a"].lastRequest()
			if in.Header.Get("X-Site") != "shop" || in.Header.Get("X-Tier") != "gold" {
				t.Fatalf("origin saw headers %v", in.Header)
			}
			if res.header.Get("X-Frame-Options") != "DENY" {
				t.Fatalf("client headers %v", res.header)
			}
			if example == "as-headers" {
				if res := get(t, p, "/legacy/items?x=1"); res.body != "origin a: /v2/items?x=1&rewritten=1" {
					t.Fatalf("rewrite: %d %q", res.status, res.body)
				}
			}
		})
	}
	t.Run("bearerauth", func(t *testing.T) {
		o := origins(t)
		p := newNativePoP(t, nil, o, &plugins.Chain{Site: "shop", Entries: []plugins.Entry{{Plugin: "auth",
			Config: map[string]string{"tokens": "s3cret"}, RequestHeaders: []string{"authorization"}}}}, 2*time.Second)
		p.deploy(t, "auth", "bearerauth")
		if res := get(t, p, "/private", "Authorization", "Bearer nope"); res.status != 401 || res.header.Get("Www-Authenticate") != `Bearer realm="shop.example"` {
			t.Fatalf("wrong token: %d %v", res.status, res.header)
		}
		if res := get(t, p, "/private", "Authorization", "Bearer s3cret"); res.status != 200 {
			t.Fatalf("good token: %d %q", res.status, res.body)
		}
		if in := o["a"].lastRequest(); in.Header.Get("Authorization") != "" || o["a"].hits != 1 {
			t.Fatalf("the token must not reach the origin, refused requests neither: %v, %d hits", in.Header, o["a"].hits)
		}
		if logs := p.host.Logs("shop"); len(logs) != 1 || !strings.Contains(logs[0].Msg, "bearerauth: refused GET /private") {
			t.Fatalf("plugin log lines: %+v", logs)
		}
	})
	t.Run("geoblock", func(t *testing.T) {
		p := newNativePoP(t, nil, origins(t), &plugins.Chain{Site: "shop", Entries: []plugins.Entry{{Plugin: "g",
			Config: map[string]string{"countries": "KP"}}}}, 2*time.Second)
		p.deploy(t, "g", "geoblock")
		if res := get(t, p, "/", "X-Test-Client", "203.0.113.9"); res.status != 451 {
			t.Fatalf("blocked country: %d", res.status)
		}
		if res := get(t, p, "/", "X-Test-Client", "192.0.2.1"); res.status != 200 {
			t.Fatalf("other client: %d", res.status)
		}
	})
	t.Run("absplit", func(t *testing.T) {
		o := origins(t)
		p := newNativePoP(t, nil, o, &plugins.Chain{Site: "shop", Entries: []plugins.Entry{{Plugin: "ab", RequestHeaders: []string{"cookie"},
			Config: map[string]string{"percent_b": "100", "origin_a": "a", "origin_b": "b"}}}}, 2*time.Second)
		p.deploy(t, "ab", "absplit")
		res := get(t, p, "/x")
		if !strings.HasPrefix(res.body, "origin b") || !strings.HasPrefix(res.header.Get("Set-Cookie"), "mrd_ab=b;") {
			t.Fatalf("new client: %q %v", res.body, res.header)
		}
		if res := get(t, p, "/x", "Cookie", "mrd_ab=a"); !strings.HasPrefix(res.body, "origin a") || res.header.Get("Set-Cookie") != "" {
			t.Fatalf("sticky client: %q %v", res.body, res.header)
		}
	})
}

// TestNativeFailurePolicy: a trapping or looping plugin on the native
// engine is skipped (fail open) or answers 503 (fail closed).
func TestNativeFailurePolicy(t *testing.T) {
	for _, c := range []struct {
		name       string
		failClosed bool
		plugin     string
		status     int
	}{
		{"trap fail open", false, "wat/trap", 200},
		{"trap fail closed", true, "wat/trap", 503},
		{"loop fail open", false, "wat/loop", 200},
		{"loop fail closed", true, "wat/loop", 503},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := origins(t)
			p := newNativePoP(t, nil, o, &plugins.Chain{Site: "shop", FailClosed: c.failClosed, Entries: []plugins.Entry{
				{Plugin: "bad"}, {Plugin: "h", Config: map[string]string{"response": "X-Frame-Options: DENY"}},
			}}, 300*time.Millisecond)
			p.deploy(t, "bad", c.plugin)
			p.deploy(t, "h", "headers")
			res := get(t, p, "/")
			if res.status != c.status {
				t.Fatalf("status %d, want %d: %q", res.status, c.status, res.body)
			}
			if !c.failClosed && res.header.Get("X-Frame-Options") != "DENY" {
				t.Fatalf("fail open must skip only the failed plugin: %v", res.header)
			}
			if c.failClosed && o["a"].hits != 0 {
				t.Fatalf("fail closed must not reach the origin: %d hits", o["a"].hits)
			}
		})
	}
}
