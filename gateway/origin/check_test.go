package origin_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway/origin"
	mtestutil "github.com/meridian-edge/meridian/internal/testutil"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// checked is an origin whose health page answers 200, 503 or nothing
// (hangs) as told, while every other path keeps answering 200: active
// checks are then the only way the pool can learn it is sick.
type checked struct {
	mode   atomic.Value // "ok", "503", "hang"
	served atomic.Int32 // requests other than probes
	probes atomic.Int32
	mu     sync.Mutex
	host   string // the last probe's Host and User-Agent
	ua     string
	srv    *httptest.Server
}

func newChecked(t *testing.T) *checked {
	c := &checked{}
	c.mode.Store("ok")
	stop := make(chan struct{})
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			c.served.Add(1)
			io.WriteString(w, "page")
			return
		}
		c.probes.Add(1)
		c.mu.Lock()
		c.host, c.ua = r.Host, r.UserAgent()
		c.mu.Unlock()
		switch c.mode.Load() {
		case "503":
			w.WriteHeader(http.StatusServiceUnavailable)
		case "hang":
			select {
			case <-r.Context().Done():
			case <-stop:
			}
		}
	}))
	t.Cleanup(c.srv.Close)
	t.Cleanup(func() { close(stop) })
	return c
}

// getPages makes n GET /page requests on p, reading each answer.
func getPages(t *testing.T, p *origin.Pool, n int) {
	t.Helper()
	for range n {
		getPage(t, p, "/page")
	}
}

// TestHealthChecks: a server whose health page fails is taken out after
// Fails probes in a row (no client request reaches it, though its pages
// still answer), and put back after Passes; a health page that hangs past
// the timeout fails too. Probes carry the configured Host and their own
// User-Agent, are counted, and stop when the pool is closed.
func TestHealthChecks(t *testing.T) {
	good, sick := newChecked(t), newChecked(t)
	reg := prometheus.NewRegistry()
	m := origin.NewMetrics(reg)
	hc := origin.HealthCheck{Path: "/healthz", Host: "www.example.test", Interval: 20 * time.Millisecond, Timeout: 100 * time.Millisecond, Fails: 2, Passes: 2}
	p, err := origin.New(origin.Options{Site: "www", Metrics: m, HealthCheck: hc,
		Servers: []origin.Server{{URL: mustURL(t, good.srv.URL)}, {URL: mustURL(t, sick.srv.URL)}}})
	if err != nil {
		t.Fatal(err)
	}
	p.Activate()
	sickHost := hostOf(sick.srv.URL)
	down := func() float64 { v, _ := downGauge(t, reg, "www", sickHost); return v }
	requests := func(n int) { getPages(t, p, n) }

	for _, mode := range []string{"503", "hang"} {
		sick.mode.Store(mode)
		mtestutil.WaitFor(t, "the sick server ("+mode+") marked down", func() bool { return down() == 1 })
		before := sick.served.Load()
		requests(20)
		if n := sick.served.Load() - before; n != 0 {
			t.Fatalf("health page %s: %d of 20 requests reached the server marked down", mode, n)
		}
		sick.mode.Store("ok")
		mtestutil.WaitFor(t, "the healed server marked up", func() bool { return down() == 0 })
		before = sick.served.Load()
		requests(20)
		if n := sick.served.Load() - before; n == 0 {
			t.Fatalf("after healing from %s: no request reached the server", mode)
		}
	}
	sick.mu.Lock()
	host, ua := sick.host, sick.ua
	sick.mu.Unlock()
	if host != "www.example.test" || ua != origin.CheckUserAgent {
		t.Errorf("probe Host %q, User-Agent %q; want www.example.test and %s", host, ua, origin.CheckUserAgent)
	}
	if n := testutil.ToFloat64(m.Checks("www", sickHost, "fail")); n < 4 {
		t.Errorf("meridian_origin_health_checks_total{result=fail} = %v, want at least 4", n)
	}
	if n := testutil.ToFloat64(m.Checks("www", hostOf(good.srv.URL), "pass")); n < 1 {
		t.Errorf("meridian_origin_health_checks_total{result=pass} for the good server = %v", n)
	}

	p.Close()
	time.Sleep(100 * time.Millisecond) // a probe in flight at Close may still land
	before := good.probes.Load()
	time.Sleep(10 * hc.Interval)
	if n := good.probes.Load() - before; n != 0 {
		t.Errorf("%d probes after Close", n)
	}
}

// TestHealthCheckStateSurvivesReload: the pool a reload builds takes over
// what the old one knew: a server the checks hold down stays down in the
// new pool from its first request, before the new checks could find out.
func TestHealthCheckStateSurvivesReload(t *testing.T) {
	good, sick := newChecked(t), newChecked(t)
	sick.mode.Store("503")
	reg := prometheus.NewRegistry()
	m := origin.NewMetrics(reg)
	servers := []origin.Server{{URL: mustURL(t, good.srv.URL)}, {URL: mustURL(t, sick.srv.URL)}}
	old, err := origin.New(origin.Options{Site: "www", Metrics: m, Servers: servers,
		HealthCheck: origin.HealthCheck{Path: "/healthz", Interval: 20 * time.Millisecond, Fails: 1, Passes: 1}})
	if err != nil {
		t.Fatal(err)
	}
	old.Activate()
	defer old.Close()
	mtestutil.WaitFor(t, "the sick server marked down", func() bool { v, _ := downGauge(t, reg, "www", hostOf(sick.srv.URL)); return v == 1 })
	// The new pool probes once at Activate and then not for an hour; it
	// needs two failures to mark a server down on its own.
	next, err := origin.New(origin.Options{Site: "www", Metrics: m, Servers: servers,
		HealthCheck: origin.HealthCheck{Path: "/healthz", Interval: time.Hour, Fails: 2, Passes: 2}})
	if err != nil {
		t.Fatal(err)
	}
	next.Activate()
	defer next.Close()
	old.Close()
	before := sick.served.Load()
	for range 10 {
		resp, err := get(t, next, "GET", "/page", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if n := sick.served.Load() - before; n != 0 {
		t.Errorf("%d of 10 requests on the reloaded pool reached the server the old pool's checks held down", n)
	}
}
