package plugin_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/meridian-edge/meridian/middleware"
	"github.com/meridian-edge/meridian/middleware/plugin"
	"github.com/meridian-edge/meridian/plugins"
	"github.com/meridian-edge/meridian/plugins/plugintest"
)

var (
	wasm   = map[string][]byte{}
	engine *plugins.SDKEngine
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "meridian-plugin-mw-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	built, err := plugintest.BuildGo(ctx, dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for k, v := range built {
		wasm[k] = v
	}
	for _, n := range []string{"trap", "loop", "resptrap"} {
		b, err := plugintest.WAT(ctx, dir, n)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		wasm["wat/"+n] = b
	}
	as, err := plugintest.AssemblyScript(ctx, dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	wasm["as-headers"] = as
	engine, err = plugins.NewSDKEngine(plugins.SDKOptions{CacheDir: plugintest.CacheDir()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer engine.Close(ctx)
	return m.Run()
}

// geoTable is a fixed client geo source, keyed by client address.
type geoTable map[netip.Addr][4]string

func (g geoTable) GeoLookup(a netip.Addr) (string, string, float64, float64, bool) {
	e, ok := g[a]
	if !ok {
		return "", "", 0, 0, false
	}
	var lat, lon float64
	fmt.Sscan(e[2], &lat)
	fmt.Sscan(e[3], &lon)
	return e[0], e[1], lat, lon, true
}

// origin is a real HTTP origin that echoes what it received.
type origin struct {
	name string
	srv  *httptest.Server
	mu   sync.Mutex
	last *http.Request
	hits int
}

func newOrigin(t *testing.T, name string) *origin {
	o := &origin{name: name}
	o.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.mu.Lock()
		o.last, o.hits = r.Clone(context.Background()), o.hits+1
		o.mu.Unlock()
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "origin %s: %s?%s", name, r.URL.Path, r.URL.RawQuery)
	}))
	t.Cleanup(o.srv.Close)
	return o
}

func (o *origin) lastRequest() *http.Request {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.last
}

// pop is a small PoP: chi, the plugin middleware, and a reverse proxy that
// sends each request to the origin a plugin chose (default "a").
type pop struct {
	srv     *httptest.Server
	host    *plugins.Host
	origins map[string]*origin
	chain   *plugins.Chain
	lastDir *plugin.Directives
	mu      sync.Mutex
}

func newPoP(t *testing.T, kv plugins.KV, origins map[string]*origin, chain *plugins.Chain) *pop {
	return newPoPTimeout(t, kv, origins, chain, 2*time.Second)
}

func newPoPTimeout(t *testing.T, kv plugins.KV, origins map[string]*origin, chain *plugins.Chain, timeout time.Duration) *pop {
	t.Helper()
	h, err := plugins.NewHost(plugins.Options{Engine: engine, KV: kv, Limits: plugins.Limits{Timeout: timeout}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close(context.Background()) })
	p := &pop{host: h, origins: origins, chain: chain}
	proxy := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		name := "a"
		if d := plugin.DirectivesFrom(pr.In.Context()); d != nil {
			p.mu.Lock()
			p.lastDir = d
			p.mu.Unlock()
			if d.Origin != "" {
				name = d.Origin
			}
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
	r.Use(middleware.RequestID) // before the plugins, as on a PoP
	r.Use(plugin.New(plugin.Options{
		Host:  h,
		Chain: func(*http.Request) *plugins.Chain { return p.chain },
		PoP:   "fra1", PoPRegion: "eu-central",
		Geo: geoTable{
			netip.MustParseAddr("203.0.113.9"):  {"KP", "01", "39.03", "125.75"},
			netip.MustParseAddr("198.51.100.7"): {"US", "CA", "37.77", "-122.42"},
			netip.MustParseAddr("192.0.2.10"):   {"DE", "BE", "52.52", "13.40"},
		},
		// Tests stand in for clients at other addresses.
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

func (p *pop) deploy(t *testing.T, name, key string) {
	t.Helper()
	ctx := context.Background()
	v, err := p.host.Add(ctx, p.chain.Site, name, wasm[key])
	if err != nil {
		t.Fatalf("add %s: %v", key, err)
	}
	if err := p.host.Activate(ctx, p.chain.Site, name, v.Version); err != nil {
		t.Fatal(err)
	}
}

func (p *pop) directives() *plugin.Directives {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastDir
}

type result struct {
	status int
	header http.Header
	body   string
}

func get(t *testing.T, p *pop, path string, hdr ...string) result {
	t.Helper()
	return fetch(t, p.srv.URL+path, hdr...)
}

// fetch sends a GET for shop.example to url with the header pairs hdr.
func fetch(t *testing.T, url string, hdr ...string) result {
	t.Helper()
	r, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Host = "shop.example"
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return result{resp.StatusCode, resp.Header, string(b)}
}

func origins(t *testing.T) map[string]*origin {
	return map[string]*origin{"a": newOrigin(t, "a"), "b": newOrigin(t, "b")}
}

func TestHeaderInjection(t *testing.T) {
	for _, example := range []string{"headers", "as-headers"} { // Go kit and AssemblyScript
		t.Run(example, func(t *testing.T) {
			o := origins(t)
			p := newPoP(t, nil, o, &plugins.Chain{Site: "shop", Entries: []plugins.Entry{{Plugin: "h", Config: map[string]string{
				"request":  "X-Site: shop\nX-Tier: gold",
				"response": "X-Frame-Options: DENY",
			}}}})
			p.deploy(t, "h", example)
			res := get(t, p, "/products?id=4")
			if res.status != 200 || res.body != "origin a: /products?id=4" {
				t.Fatalf("got %d %q", res.status, res.body)
			}
			in := o["a"].lastRequest()
			if in.Header.Get("X-Meridian-Pop") != "fra1" || in.Header.Get("X-Site") != "shop" || in.Header.Get("X-Tier") != "gold" {
				t.Fatalf("origin saw headers %v", in.Header)
			}
			if res.header.Get("X-Frame-Options") != "DENY" {
				t.Fatalf("client headers %v", res.header)
			}
		})
	}
}

func TestBearerAuth(t *testing.T) {
	o := origins(t)
	p := newPoP(t, nil, o, &plugins.Chain{Site: "shop", Entries: []plugins.Entry{{Plugin: "auth",
		Config: map[string]string{"tokens": "s3cret, other"}, RequestHeaders: []string{"authorization"}}}})
	p.deploy(t, "auth", "bearerauth")
	cases := []struct {
		name   string
		auth   string
		status int
	}{
		{"no header", "", 401},
		{"wrong token", "Bearer nope", 401},
		{"basic auth", "Basic czNjcmV0", 401},
		{"good token", "Bearer s3cret", 200},
		{"second token", "Bearer other", 200},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var res result
			if c.auth == "" {
				res = get(t, p, "/private")
			} else {
				res = get(t, p, "/private", "Authorization", c.auth)
			}
			if res.status != c.status {
				t.Fatalf("status %d, want %d (%s)", res.status, c.status, res.body)
			}
			if c.status == 401 && (res.header.Get("Www-Authenticate") != `Bearer realm="shop.example"` || !strings.Contains(res.body, "bearer token is required")) {
				t.Fatalf("401 answer: %v %q", res.header, res.body)
			}
		})
	}
	in := o["a"].lastRequest()
	if in.Header.Get("Authorization") != "" || in.Header.Get("X-Authenticated") != "bearer" {
		t.Fatalf("the token must not reach the origin: %v", in.Header)
	}
	if o["a"].hits != 2 {
		t.Fatalf("refused requests must not reach the origin: %d hits", o["a"].hits)
	}
	logs := p.host.Logs("shop")
	if len(logs) != 3 || !strings.Contains(logs[0].Msg, "bearerauth: refused GET /private") {
		t.Fatalf("plugin log lines: %+v", logs)
	}
}

func TestGeoBlock(t *testing.T) {
	o := origins(t)
	p := newPoP(t, nil, o, &plugins.Chain{Site: "shop", Entries: []plugins.Entry{{Plugin: "geo",
		Config: map[string]string{"countries": "KP,IR", "regions": "US-CA", "annotate": "true"}}}})
	p.deploy(t, "geo", "geoblock")
	for _, c := range []struct {
		client string
		status int
	}{{"203.0.113.9", 451}, {"198.51.100.7", 451}, {"192.0.2.10", 200}, {"192.0.2.99", 200}} {
		res := get(t, p, "/", "X-Test-Client", c.client)
		if res.status != c.status {
			t.Fatalf("client %s: status %d, want %d", c.client, res.status, c.status)
		}
	}
	// The German client's location came through the meridian_geo host function.
	if got := o["a"].lastRequest().Header.Get("X-Client-Geo"); got != "" {
		t.Fatalf("unknown client must not be annotated, got %q", got)
	}
	get(t, p, "/", "X-Test-Client", "192.0.2.10")
	if got := o["a"].lastRequest().Header.Get("X-Client-Geo"); got != "DE;BE;52.52;13.40" {
		t.Fatalf("x-client-geo = %q", got)
	}
}

func TestABSplitIsStickyAndSplits(t *testing.T) {
	o := origins(t)
	p := newPoP(t, nil, o, &plugins.Chain{Site: "shop", Entries: []plugins.Entry{{Plugin: "ab",
		Config:         map[string]string{"percent_b": "50", "origin_a": "a", "origin_b": "b"},
		RequestHeaders: []string{"cookie"}}}})
	p.deploy(t, "ab", "absplit")
	counts := map[string]int{}
	for i := range 200 {
		client := fmt.Sprintf("10.0.%d.%d", i/250, i%250+1)
		res := get(t, p, "/page", "X-Test-Client", client)
		cookie := res.header.Get("Set-Cookie")
		v, ok := strings.CutPrefix(cookie, "mrd_ab=")
		if res.status != 200 || !ok {
			t.Fatalf("new client %s: %d set-cookie %q", client, res.status, cookie)
		}
		v = v[:1]
		if want := "origin " + v + ":"; !strings.HasPrefix(res.body, want) {
			t.Fatalf("variant %s answered by %q", v, res.body)
		}
		if d := p.directives(); d == nil || d.CacheKey != "shop.example/page#ab="+v {
			t.Fatalf("cache key %+v", d)
		}
		counts[v]++
		if i < 5 { // a returning client keeps its variant and gets no new cookie
			again := get(t, p, "/page", "X-Test-Client", client, "Cookie", "theme=dark; mrd_ab="+v)
			if !strings.HasPrefix(again.body, "origin "+v) || again.header.Get("Set-Cookie") != "" {
				t.Fatalf("sticky: %q %v", again.body, again.header)
			}
		}
	}
	if counts["a"] < 60 || counts["b"] < 60 {
		t.Fatalf("a 50%% split over 200 clients gave %v", counts)
	}
}

func TestRateLimitSharedAcrossPoPs(t *testing.T) {
	kv := plugins.NewMemoryKV() // stands for the replicated KV both PoPs see
	chain := &plugins.Chain{Site: "shop", Entries: []plugins.Entry{{Plugin: "rl", Config: map[string]string{"limit": "3", "window_seconds": "3600"}}}}
	p1 := newPoP(t, kv, origins(t), chain)
	p2 := newPoP(t, kv, origins(t), chain)
	p1.deploy(t, "rl", "ratelimit")
	p2.deploy(t, "rl", "ratelimit")
	for i, p := range []*pop{p1, p2, p1} {
		if res := get(t, p, "/", "X-Test-Client", "192.0.2.50"); res.status != 200 || res.header.Get("X-Ratelimit-Remaining") != fmt.Sprint(2-i) {
			t.Fatalf("request %d: %d remaining=%q", i, res.status, res.header.Get("X-Ratelimit-Remaining"))
		}
	}
	res := get(t, p2, "/", "X-Test-Client", "192.0.2.50")
	if res.status != 429 || res.header.Get("Retry-After") == "" {
		t.Fatalf("4th request: %d %v", res.status, res.header)
	}
	if res := get(t, p2, "/", "X-Test-Client", "192.0.2.51"); res.status != 200 {
		t.Fatalf("another client: %d", res.status)
	}
}

func TestChainOrderShortCircuitAndResponseOrder(t *testing.T) {
	o := origins(t)
	p := newPoP(t, nil, o, &plugins.Chain{Site: "shop", Entries: []plugins.Entry{
		{Plugin: "h", Config: map[string]string{"response": "X-Frame-Options: DENY"}},
		{Plugin: "auth", Config: map[string]string{"tokens": "t"}, RequestHeaders: []string{"authorization"}},
		{Plugin: "ab", Config: map[string]string{"percent_b": "100"}, RequestHeaders: []string{"cookie"}},
	}})
	p.deploy(t, "h", "headers")
	p.deploy(t, "auth", "bearerauth")
	p.deploy(t, "ab", "absplit")
	res := get(t, p, "/x")
	if res.status != 401 || res.header.Get("X-Frame-Options") != "DENY" || res.header.Get("Set-Cookie") != "" {
		t.Fatalf("short-circuit: %d %v", res.status, res.header)
	}
	if o["a"].hits+o["b"].hits != 0 {
		t.Fatal("a short-circuited request must not reach an origin")
	}
	res = get(t, p, "/x", "Authorization", "Bearer t")
	if res.status != 200 || !strings.HasPrefix(res.body, "origin b") || !strings.HasPrefix(res.header.Get("Set-Cookie"), "mrd_ab=b") ||
		res.header.Get("X-Frame-Options") != "DENY" || res.header.Get("Vary") != "Cookie" {
		t.Fatalf("full chain: %d %q %v", res.status, res.body, res.header)
	}
}

func TestFailurePolicy(t *testing.T) {
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
			p := newPoPTimeout(t, nil, o, &plugins.Chain{Site: "shop", FailClosed: c.failClosed, Entries: []plugins.Entry{
				{Plugin: "bad"},
				{Plugin: "h", Config: map[string]string{"response": "X-Frame-Options: DENY"}},
			}}, 500*time.Millisecond)
			p.deploy(t, "bad", c.plugin)
			p.deploy(t, "h", "headers")
			res := get(t, p, "/")
			if res.status != c.status {
				t.Fatalf("status %d, want %d: %q", res.status, c.status, res.body)
			}
			if c.failClosed {
				// The hint must be a command that runs as printed.
				if !strings.Contains(res.body, `a plugin of site "shop" failed`) || !strings.Contains(res.body, "meridian plugin logs --site shop") || o["a"].hits != 0 {
					t.Fatalf("fail closed: %q, %d origin hits", res.body, o["a"].hits)
				}
				if id := res.header.Get("X-Request-Id"); id == "" || !strings.Contains(res.body, "Request id: "+id+" ") ||
					res.header.Get("Cache-Control") != "no-store" || res.header.Get("X-Content-Type-Options") != "nosniff" {
					t.Fatalf("fail closed: the 503 is not the PoP's page with its request id: %v %q", res.header, res.body)
				}
				return
			}
			if res.header.Get("X-Frame-Options") != "DENY" || !strings.HasPrefix(res.body, "origin a") {
				t.Fatalf("fail open must skip only the failed plugin: %v %q", res.header, res.body)
			}
		})
	}
}

func TestNoChainPassesThrough(t *testing.T) {
	o := origins(t)
	p := newPoP(t, nil, o, nil)
	if res := get(t, p, "/plain"); res.status != 200 || res.body != "origin a: /plain?" {
		t.Fatalf("%d %q", res.status, res.body)
	}
}

func TestRewritePathAndQuery(t *testing.T) {
	// The AssemblyScript example rewrites /legacy/* to /v2/* and adds to the query.
	o := origins(t)
	p := newPoP(t, nil, o, &plugins.Chain{Site: "shop", Entries: []plugins.Entry{{Plugin: "h",
		Config: map[string]string{"rewrite_prefix": "/legacy", "rewrite_to": "/v2"}}}})
	p.deploy(t, "h", "as-headers")
	res := get(t, p, "/legacy/items?x=1")
	if res.status != 200 || res.body != "origin a: /v2/items?x=1&rewritten=1" {
		t.Fatalf("%d %q", res.status, res.body)
	}
}

// TestUnavailablePlugin: a chain entry whose plugin this PoP has not
// loaded (plugins.Entry.Unavailable, as rollout sets it while a restarted
// PoP loads what its sites ran) is never skipped by a fail-closed chain:
// the request gets the PoP's 503 saying the plugin is not loaded yet, not
// the origin. A fail-open chain runs the rest of the chain without it.
func TestUnavailablePlugin(t *testing.T) {
	for _, failClosed := range []bool{true, false} {
		t.Run(fmt.Sprintf("fail closed %v", failClosed), func(t *testing.T) {
			o := origins(t)
			p := newPoP(t, nil, o, &plugins.Chain{Site: "shop", FailClosed: failClosed, Entries: []plugins.Entry{
				{Plugin: "auth@3", Unavailable: "plugin auth (version 3) is not loaded on this PoP yet: it is starting"},
				{Plugin: "h", Config: map[string]string{"response": "X-Frame-Options: DENY"}},
			}})
			p.deploy(t, "h", "headers")
			res := get(t, p, "/")
			if !failClosed {
				if res.status != 200 || !strings.HasPrefix(res.body, "origin a") || res.header.Get("X-Frame-Options") != "DENY" {
					t.Fatalf("fail open: %d %v %q, want the origin with the rest of the chain", res.status, res.header, res.body)
				}
				return
			}
			if res.status != http.StatusServiceUnavailable || o["a"].hits != 0 ||
				!strings.Contains(res.body, `site "shop" runs a plugin that this PoP has not loaded yet`) ||
				!strings.Contains(res.body, "meridian plugin logs --site shop") {
				t.Fatalf("fail closed: %d %q, %d origin hits; want the 503 saying the plugin is not loaded", res.status, res.body, o["a"].hits)
			}
		})
	}
}
