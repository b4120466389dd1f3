package origin_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway/headers"
	"github.com/meridian-edge/meridian/gateway/origin"
	mtestutil "github.com/meridian-edge/meridian/internal/testutil"
)

// TestRoutes: a request whose path matches a route goes to that route's
// servers only, failing over among them and never to the others; a
// request no route matches goes to the servers no route names; a
// plugin's choice still wins.
func TestRoutes(t *testing.T) {
	named := func(name string) *httptest.Server {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) }))
		t.Cleanup(s.Close)
		return s
	}
	web1, web2, api1 := named("web-1"), named("web-2"), named("api-1")
	p, err := origin.New(origin.Options{Site: "www",
		Servers: []origin.Server{
			{Name: "web-1", URL: mustURL(t, web1.URL)}, {Name: "web-2", URL: mustURL(t, web2.URL)},
			{Name: "api-1", URL: mustURL(t, api1.URL)}, {Name: "api-2", URL: mustURL(t, deadAddr(t))},
			{Name: "img", URL: mustURL(t, deadAddr(t))},
		},
		Routes: []origin.Route{{Path: "/api/*", Servers: []string{"api-2", "api-1"}}, {Path: "*.png", Servers: []string{"img"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	answered := func(path string) string {
		t.Helper()
		resp, err := get(t, p, "GET", path, nil)
		if err != nil {
			return "error: " + err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	seen := map[string]int{}
	for range 8 {
		seen[answered("/index.html")]++
		// api-2 is down: every API request fails over to api-1, none
		// reaches a web server.
		if got := answered("/api/v1/users?x=1"); got != "api-1" {
			t.Fatalf("/api/v1/users answered by %q, want api-1", got)
		}
	}
	if len(seen) != 2 || seen["web-1"] == 0 || seen["web-2"] == 0 {
		t.Errorf("unrouted paths answered by %v, want web-1 and web-2 only", seen)
	}
	// The only image server is down: the request fails rather than
	// reaching a server that does not hold images.
	if got := answered("/logo.png"); !strings.HasPrefix(got, "error: ") {
		t.Errorf("/logo.png with its only server down: %q, want an error", got)
	}
	req := httptest.NewRequest("GET", "http://www.example.test/api/x", nil)
	resp, err := p.RoundTrip(req.WithContext(origin.WithServer(req.Context(), "web-2")))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "web-2" {
		t.Errorf("a plugin's choice of web-2 for /api/x went to %q", b)
	}
}

// TestRoutesRefused: routes that cannot work are refused when the pool is
// made, saying what to change.
func TestRoutesRefused(t *testing.T) {
	a := origin.Server{Name: "a", URL: mustURL(t, "http://127.0.0.1:1")}
	b := origin.Server{Name: "b", URL: mustURL(t, "http://127.0.0.1:2")}
	backup := func(s origin.Server) origin.Server { s.Backup = true; return s }
	for _, c := range []struct {
		servers []origin.Server
		routes  []origin.Route
		want    string
	}{
		{[]origin.Server{a, b}, []origin.Route{{Path: "/api/*", Servers: []string{"c"}}}, `Routes[0] (/api/*): no server is named "c"`},
		{[]origin.Server{a, b}, []origin.Route{{Path: "api", Servers: []string{"a"}}}, `Routes[0].Path: "api" must start with / or *`},
		{[]origin.Server{a, b}, []origin.Route{{Path: "/api/*"}}, "Routes[0] (/api/*) names no servers"},
		{[]origin.Server{a, b}, []origin.Route{{Path: "/api/*", Servers: []string{"a"}}, {Path: "/img/*", Servers: []string{"b"}}}, "every server is named by a route"},
		{[]origin.Server{a, backup(b)}, []origin.Route{{Path: "/api/*", Servers: []string{"b"}}}, "Routes[0] (/api/*) names only backup servers"},
		{[]origin.Server{a, backup(b)}, []origin.Route{{Path: "/api/*", Servers: []string{"a"}}}, "the servers no route names are all backups"},
	} {
		if _, err := origin.New(origin.Options{Site: "www", Servers: c.servers, Routes: c.routes}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.routes, err, c.want)
		}
	}
	p, err := origin.New(origin.Options{Site: "www", Servers: []origin.Server{a, b}, Routes: []origin.Route{{Path: "/api/*", Servers: []string{"a"}}, {Path: "/*", Servers: []string{"b"}}}})
	if err != nil {
		t.Fatalf("every server routed, with a catch-all: %v", err)
	}
	p.Close()
}

// TestBackupServers: a backup server gets no request while another server
// of its group is up; it takes them when those are down (found by a
// failed request, or by health checks), and gives them back when the
// checks pass again.
func TestBackupServers(t *testing.T) {
	primary, backup := newChecked(t), newChecked(t)
	p, err := origin.New(origin.Options{Site: "www",
		HealthCheck: origin.HealthCheck{Path: "/healthz", Interval: 20 * time.Millisecond, Fails: 1, Passes: 1},
		Servers:     []origin.Server{{URL: mustURL(t, backup.srv.URL), Backup: true}, {URL: mustURL(t, primary.srv.URL)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	p.Activate()
	defer p.Close()
	served := func(n int) (prim, back int32) {
		t.Helper()
		p0, b0 := primary.served.Load(), backup.served.Load()
		getPages(t, p, n)
		return primary.served.Load() - p0, backup.served.Load() - b0
	}
	if prim, back := served(10); prim != 10 || back != 0 {
		t.Fatalf("primary up: %d to the primary, %d to the backup; want all to the primary", prim, back)
	}
	primary.mode.Store("503")
	mtestutil.WaitFor(t, "every request on the backup", func() bool { prim, back := served(4); return prim == 0 && back == 4 })
	primary.mode.Store("ok")
	mtestutil.WaitFor(t, "every request back on the primary", func() bool { prim, back := served(4); return prim == 4 && back == 0 })

	// Passive: a primary that refuses connections is found by the first
	// request, which the backup answers, as every later one.
	q, err := origin.New(origin.Options{Site: "www", DownFor: time.Hour,
		Servers: []origin.Server{{URL: mustURL(t, deadAddr(t))}, {URL: mustURL(t, backup.srv.URL), Backup: true}}})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	b0 := backup.served.Load()
	for range 5 {
		resp, err := get(t, q, "GET", "/page", nil)
		if err != nil {
			t.Fatalf("primary refusing, backup up: %v", err)
		}
		resp.Body.Close()
	}
	if n := backup.served.Load() - b0; n != 5 {
		t.Errorf("primary refusing: the backup answered %d of 5", n)
	}
}

// TestWeights: servers share their group's requests by weight, spread
// out rather than in runs, also when requests alternate between two
// groups (routes) of one pool.
func TestWeights(t *testing.T) {
	var mu sync.Mutex
	var order []string
	named := func(name string) *httptest.Server {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			order = append(order, name)
			mu.Unlock()
		}))
		t.Cleanup(s.Close)
		return s
	}
	heavy, light, api := named("heavy"), named("light"), named("api")
	p, err := origin.New(origin.Options{Site: "www",
		Servers: []origin.Server{{Name: "heavy", URL: mustURL(t, heavy.URL), Weight: 3}, {Name: "light", URL: mustURL(t, light.URL)},
			{Name: "api", URL: mustURL(t, api.URL)}},
		Routes: []origin.Route{{Path: "/api/*", Servers: []string{"api"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for range 400 {
		getPage(t, p, "/page")
		getPage(t, p, "/api/x")
	}
	counts, run, longest := map[string]int{}, 0, 0
	prev := ""
	for _, name := range order {
		counts[name]++
		if name == "api" {
			continue
		}
		if name == prev {
			run++
		} else {
			run = 1
		}
		prev, longest = name, max(longest, run)
	}
	if counts["heavy"] != 300 || counts["light"] != 100 || counts["api"] != 400 {
		t.Errorf("requests per server %v, want heavy 300 and light 100 (weights 3:1), api 400", counts)
	}
	if longest > 3 {
		t.Errorf("heavy served %d requests in a row; a 3:1 schedule spreads them (at most 3)", longest)
	}
	if _, err := origin.New(origin.Options{Site: "www", Servers: []origin.Server{{URL: mustURL(t, heavy.URL), Weight: origin.MaxWeight + 1}}}); err == nil ||
		!strings.Contains(err.Error(), "Weight 101 is out of range [0,100]") {
		t.Errorf("weight 101: %v", err)
	}
}

// getPage makes one GET path request on p and reads the answer.
func getPage(t *testing.T, p *origin.Pool, path string) {
	t.Helper()
	resp, err := get(t, p, "GET", path, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

// TestRequestHeaders: a site's request header changes reach every server
// on every attempt, a retried one included; the caller's request is left
// as it was.
func TestRequestHeaders(t *testing.T) {
	pol, err := headers.ForRequests(map[string]string{"X-Origin-Secret": "s3cret"}, []string{"Cookie"})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("X-Origin-Secret")+"|"+r.Header.Get("Cookie"))
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	p, err := origin.New(origin.Options{Site: "www", RequestHeaders: pol, DownFor: time.Hour,
		Servers: []origin.Server{{URL: mustURL(t, deadAddr(t))}, {URL: mustURL(t, srv.URL)}}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for range 2 {
		req := httptest.NewRequest("GET", "http://www.example.test/", nil)
		req.Header.Set("Cookie", "session=1")
		resp, err := p.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if req.Header.Get("Cookie") != "session=1" || req.Header.Get("X-Origin-Secret") != "" {
			t.Errorf("the caller's request changed: %v", req.Header)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 || seen[0] != "s3cret|" || seen[1] != "s3cret|" {
		t.Errorf("the origin saw %q, want the secret and no cookie twice", seen)
	}
}

// TestOriginPathPrefix: a server URL's path is prefixed to every request's
// path as sent (escapes kept), the query unchanged; the cache key, the
// caller's URL, is left alone.
func TestOriginPathPrefix(t *testing.T) {
	var mu sync.Mutex
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.RequestURI)
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	p, err := origin.New(origin.Options{Site: "www", Servers: []origin.Server{{URL: mustURL(t, srv.URL+"/site-v2/")}}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for _, path := range []string{"/a.css?v=3", "/dir/a%2Fb%20c.txt", "/"} {
		req := httptest.NewRequest("GET", "http://www.example.test"+path, nil)
		resp, err := p.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if req.URL.RequestURI() != path {
			t.Errorf("the caller's URL became %s", req.URL.RequestURI())
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"/site-v2/a.css?v=3", "/site-v2/dir/a%2Fb%20c.txt", "/site-v2/"}; !slices.Equal(got, want) {
		t.Errorf("the origin saw %q, want %q", got, want)
	}
}
