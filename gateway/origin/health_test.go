package origin_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mtestutil "github.com/meridian-edge/meridian/internal/testutil"

	"github.com/meridian-edge/meridian/gateway/origin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// hangingServer accepts connections and never answers (nor reads), like an
// origin whose application is wedged. It returns its http:// URL.
func hangingServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return "http://" + l.Addr().String()
}

// switchable is an origin that hangs (until the client gives up) while
// hang is set, and otherwise answers with its name.
type switchable struct {
	name string
	hang atomic.Bool
	hits atomic.Int32
	srv  *httptest.Server
}

func newSwitchable(t *testing.T, name string, hang bool, order *[]string, mu *sync.Mutex) *switchable {
	s := &switchable{name: name}
	stop := make(chan struct{})
	s.hang.Store(hang)
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		if order != nil {
			mu.Lock()
			*order = append(*order, name)
			mu.Unlock()
		}
		body, _ := io.ReadAll(r.Body) // read first, so the server notices a client that hangs up
		if s.hang.Load() {
			select {
			case <-r.Context().Done():
			case <-stop:
			}
			return
		}
		io.WriteString(w, name+" "+string(body))
	}))
	t.Cleanup(s.srv.Close)
	t.Cleanup(func() { close(stop) }) // runs before Close: frees handlers still hanging
	return s
}

// downGauge reads meridian_origin_server_down{site,server} from reg as
// /metrics shows it; ok is false when the series does not exist.
func downGauge(t *testing.T, reg *prometheus.Registry, site, server string) (v float64, ok bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "meridian_origin_server_down" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["site"] == site && labels["server"] == server {
				return m.GetGauge().GetValue(), true
			}
		}
	}
	return 0, false
}

func hostOf(u string) string { return strings.TrimPrefix(u, "http://") }

// The SRE's case: [a server that accepts and never answers, a healthy one].
// Every GET must succeed (the timeout is retried on the healthy server) and
// the hanging server must be tried once, then skipped while marked down.
func TestHangingServerIsRetriedAndMarkedDown(t *testing.T) {
	hang := hangingServer(t)
	live := newSwitchable(t, "live", false, nil, nil)
	reg := prometheus.NewRegistry()
	m := origin.NewMetrics(reg)
	p, err := origin.New(origin.Options{
		Site: "www", Metrics: m, HeaderTimeout: 200 * time.Millisecond, DownFor: time.Hour,
		Servers: []origin.Server{{URL: mustURL(t, hang)}, {URL: mustURL(t, live.srv.URL)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	p.Activate() // serving: /metrics reports its servers
	defer p.Close()
	for _, s := range []string{hang, live.srv.URL} {
		if v, ok := downGauge(t, reg, "www", hostOf(s)); !ok || v != 0 {
			t.Fatalf("before any request: server_down{%s} = %v (exists %v), want 0", s, v, ok)
		}
	}
	var statuses []int
	for range 6 {
		resp, err := get(t, p, "GET", "/", nil)
		if err != nil {
			t.Fatalf("GET with one hanging origin (after %v): %v", statuses, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		statuses = append(statuses, resp.StatusCode)
	}
	for _, s := range statuses {
		if s != 200 {
			t.Fatalf("statuses %v, want six 200s", statuses)
		}
	}
	if n := testutil.ToFloat64(m.Requests("www", hostOf(hang), "timeout")); n != 1 {
		t.Fatalf("hanging server timed out %v times, want 1 (then skipped while down)", n)
	}
	if n := testutil.ToFloat64(m.Requests("www", hostOf(live.srv.URL), "2xx")); n != 6 {
		t.Fatalf("healthy server answered %v requests, want 6", n)
	}
	if v, _ := downGauge(t, reg, "www", hostOf(hang)); v != 1 {
		t.Fatalf("server_down for the hanging server = %v, want 1", v)
	}
	if v, _ := downGauge(t, reg, "www", hostOf(live.srv.URL)); v != 0 {
		t.Fatalf("server_down for the healthy server = %v, want 0", v)
	}
}

// A POST that reached a server is not sent to another: it might have had its
// effect. The timeout still marks the server down.
func TestPostThatTimedOutIsNotRetried(t *testing.T) {
	hang := newSwitchable(t, "hang", true, nil, nil)
	live := newSwitchable(t, "live", false, nil, nil)
	reg := prometheus.NewRegistry()
	p, _ := origin.New(origin.Options{
		Site: "www", Metrics: origin.NewMetrics(reg), HeaderTimeout: 200 * time.Millisecond, DownFor: time.Hour,
		Servers: []origin.Server{{Name: "hang", URL: mustURL(t, hang.srv.URL)}, {Name: "live", URL: mustURL(t, live.srv.URL)}},
	})
	p.Activate() // serving: /metrics reports its servers
	defer p.Close()
	req, _ := http.NewRequest("POST", "http://www.example.test/order", strings.NewReader("one order"))
	req = req.WithContext(origin.WithServer(req.Context(), "hang"))
	_, err := p.RoundTrip(req)
	if err == nil || !origin.IsTimeout(err) {
		t.Fatalf("POST to a hanging origin: err = %v, want a timeout", err)
	}
	if hang.hits.Load() != 1 || live.hits.Load() != 0 {
		t.Fatalf("hits hang=%d live=%d; the POST must reach only the first server", hang.hits.Load(), live.hits.Load())
	}
	if v, _ := downGauge(t, reg, "www", hostOf(hang.srv.URL)); v != 1 {
		t.Fatalf("server_down after a header timeout = %v, want 1", v)
	}
}

// A request that never reached a server (connection refused) goes to the
// next one whatever its method, with its body sent again in full.
func TestPostWithReplayableBodyIsRetriedAfterConnectFailure(t *testing.T) {
	live := newSwitchable(t, "live", false, nil, nil)
	p, _ := origin.New(origin.Options{Site: "www", DownFor: time.Hour,
		Servers: []origin.Server{{Name: "dead", URL: mustURL(t, deadAddr(t))}, {Name: "live", URL: mustURL(t, live.srv.URL)}}})
	defer p.Close()
	req, _ := http.NewRequest("POST", "http://www.example.test/order", strings.NewReader("one order")) // sets GetBody
	req = req.WithContext(origin.WithServer(req.Context(), "dead"))
	resp, err := p.RoundTrip(req)
	if err != nil {
		t.Fatalf("POST after a refused connection: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "live one order" {
		t.Fatalf("next server answered %q, want %q (the body sent again)", body, "live one order")
	}
}

// A body that cannot be read twice is not retried even after a connect
// failure: the first attempt may have consumed it.
func TestUnreplayableBodyIsNotRetried(t *testing.T) {
	live := newSwitchable(t, "live", false, nil, nil)
	p, _ := origin.New(origin.Options{Site: "www", DownFor: time.Hour,
		Servers: []origin.Server{{Name: "dead", URL: mustURL(t, deadAddr(t))}, {Name: "live", URL: mustURL(t, live.srv.URL)}}})
	defer p.Close()
	req, _ := http.NewRequest("PUT", "http://www.example.test/x", io.NopCloser(strings.NewReader("data")))
	req = req.WithContext(origin.WithServer(req.Context(), "dead"))
	if _, err := p.RoundTrip(req); err == nil {
		t.Fatal("PUT with a one-shot body was sent to a second server")
	}
	if live.hits.Load() != 0 {
		t.Fatalf("live server got %d requests, want 0", live.hits.Load())
	}
}

// After the down period a server is tried again; once it answers it is
// marked up and gets its share of requests.
func TestDownServerIsTriedAgainAfterPeriod(t *testing.T) {
	flaky := newSwitchable(t, "flaky", true, nil, nil)
	live := newSwitchable(t, "live", false, nil, nil)
	reg := prometheus.NewRegistry()
	m := origin.NewMetrics(reg)
	var logs mtestutil.SyncBuffer
	p, _ := origin.New(origin.Options{
		Site: "www", Metrics: m, HeaderTimeout: 200 * time.Millisecond, DownFor: time.Nanosecond,
		Logger:  slog.New(slog.NewTextHandler(&logs, nil)),
		Servers: []origin.Server{{Name: "flaky", URL: mustURL(t, flaky.srv.URL)}, {Name: "live", URL: mustURL(t, live.srv.URL)}},
	})
	p.Activate() // serving: /metrics reports its servers
	defer p.Close()
	req := httptest.NewRequest("GET", "http://www.example.test/", nil)
	resp, err := p.RoundTrip(req.WithContext(origin.WithServer(req.Context(), "flaky")))
	if err != nil {
		t.Fatalf("GET with flaky origin hanging: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "live " {
		t.Fatalf("answer %q, want the live server's", body)
	}
	if v, _ := downGauge(t, reg, "www", hostOf(flaky.srv.URL)); v != 1 {
		t.Fatalf("server_down after the timeout = %v, want 1", v)
	}
	flaky.hang.Store(false)
	for range 4 {
		resp, err := get(t, p, "GET", "/", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if n := testutil.ToFloat64(m.Requests("www", hostOf(flaky.srv.URL), "2xx")); n < 1 {
		t.Fatal("the recovered server got no request after its down period")
	}
	if v, _ := downGauge(t, reg, "www", hostOf(flaky.srv.URL)); v != 0 {
		t.Fatalf("server_down after it answered = %v, want 0", v)
	}
	if l := logs.String(); !strings.Contains(l, "marked down") || !strings.Contains(l, "answers again") {
		t.Fatalf("log lacks the down and up transitions:\n%s", l)
	}
}

// When every server is down, the one that failed longest ago is tried rather
// than failing without asking.
func TestAllDownTriesLeastRecentlyFailed(t *testing.T) {
	var mu sync.Mutex
	var order []string
	a := newSwitchable(t, "a", true, &order, &mu)
	b := newSwitchable(t, "b", true, &order, &mu)
	// The order of the servers' handlers stands for the order the pool
	// tried them: a header timeout long next to a loaded machine's
	// scheduling delays keeps the two the same (at 200ms the second
	// server's handler once ran first).
	p, _ := origin.New(origin.Options{
		Site: "www", HeaderTimeout: time.Second, DownFor: time.Hour,
		Servers: []origin.Server{{URL: mustURL(t, a.srv.URL)}, {URL: mustURL(t, b.srv.URL)}},
	})
	defer p.Close()
	if _, err := get(t, p, "GET", "/", nil); err == nil || !origin.IsTimeout(err) {
		t.Fatalf("GET with both origins hanging: err = %v, want a timeout", err)
	}
	mu.Lock()
	if len(order) != 2 || order[0] == order[1] {
		mu.Unlock()
		t.Fatalf("attempts %v, want each server once", order)
	}
	first := order[0]
	order = nil
	mu.Unlock()
	a.hang.Store(false)
	b.hang.Store(false)
	resp, err := get(t, p, "GET", "/", nil)
	if err != nil {
		t.Fatalf("GET with every server marked down but answering: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if got := strings.TrimSpace(string(body)); got != first {
		t.Fatalf("answered by %q, want %q (the least recently failed)", got, first)
	}
}

// A client that gives up does not mark the server down.
func TestClientCancelDoesNotMarkDown(t *testing.T) {
	hang := newSwitchable(t, "hang", true, nil, nil)
	reg := prometheus.NewRegistry()
	p, _ := origin.New(origin.Options{Site: "www", Metrics: origin.NewMetrics(reg), Servers: []origin.Server{{URL: mustURL(t, hang.srv.URL)}}})
	p.Activate() // serving: /metrics reports its servers
	defer p.Close()
	ctx, cancel := context.WithCancel(context.Background())
	req := httptest.NewRequest("GET", "http://www.example.test/", nil).WithContext(ctx)
	go func() {
		for hang.hits.Load() == 0 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	if _, err := p.RoundTrip(req); err == nil {
		t.Fatal("canceled request succeeded")
	}
	if v, ok := downGauge(t, reg, "www", hostOf(hang.srv.URL)); !ok || v != 0 {
		t.Fatalf("server_down after the client canceled = %v (exists %v), want 0", v, ok)
	}
}

// TestDownSeriesFollowTheServingPools: /metrics reports the servers of the
// pools serving now, as a configuration reload changes them. A server marked
// down by a failed request shows 1; a reload that builds new pools and is
// then refused (they are never activated, and closed) changes nothing; a
// committed reload replaces a site's series with its new pool's and drops
// those of a site it removed.
func TestDownSeriesFollowTheServingPools(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := origin.NewMetrics(reg)
	dead, live := deadAddr(t), newSwitchable(t, "live", false, nil, nil).srv.URL
	build := func(site string, urls ...string) *origin.Pool {
		t.Helper()
		var servers []origin.Server
		for _, u := range urls {
			servers = append(servers, origin.Server{URL: mustURL(t, u)})
		}
		p, err := origin.New(origin.Options{Site: site, Metrics: m, DownFor: time.Hour, Servers: servers})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	type series struct {
		site, server string
		want         float64 // -1: no such series
	}
	check := func(when string, want ...series) {
		t.Helper()
		exist := 0
		for _, w := range want {
			if w.want >= 0 {
				exist++
			}
			v, ok := downGauge(t, reg, w.site, hostOf(w.server))
			switch {
			case w.want < 0 && ok:
				t.Errorf("%s: server_down{site=%s,server=%s} = %v, want no such series", when, w.site, hostOf(w.server), v)
			case w.want >= 0 && (!ok || v != w.want):
				t.Errorf("%s: server_down{site=%s,server=%s} = %v (exists %v), want %v", when, w.site, hostOf(w.server), v, ok, w.want)
			}
		}
		if n := testutil.CollectAndCount(reg, "meridian_origin_server_down"); n != exist {
			t.Errorf("%s: %d down series, want %d (every series listed)", when, n, exist)
		}
	}

	// Start: www on [dead, live], shop on [live].
	www, shop := build("www", dead, live), build("shop", live)
	check("built, not serving yet", series{"www", dead, -1}, series{"shop", live, -1})
	www.Activate()
	shop.Activate()
	check("serving", series{"www", dead, 0}, series{"www", live, 0}, series{"shop", live, 0})
	for range 2 { // round-robin: one of them reaches the dead server
		resp, err := get(t, www, "GET", "/", nil)
		if err != nil {
			t.Fatalf("GET with one live server: %v", err)
		}
		resp.Body.Close()
	}
	check("after a failed attempt", series{"www", dead, 1}, series{"www", live, 0}, series{"shop", live, 0})

	// A refused reload: www would move to [live] only and shop go away;
	// "blog" would be added. Its pools are built, never activated, closed.
	refused := []*origin.Pool{build("www", live), build("blog", live)}
	check("reload built", series{"www", dead, 1}, series{"www", live, 0}, series{"shop", live, 0}, series{"blog", live, -1})
	for _, p := range refused {
		p.Close()
	}
	refused[0].Activate() // too late: a closed pool never serves
	check("reload refused", series{"www", dead, 1}, series{"www", live, 0}, series{"shop", live, 0}, series{"blog", live, -1})

	// The same reload committed: the new pools serve, the old ones close.
	next := build("www", live)
	next.Activate()
	www.Close()
	shop.Close()
	check("reload committed", series{"www", dead, -1}, series{"www", live, 0}, series{"shop", live, -1})
	next.Close()
	check("PoP stopped", series{"www", live, -1})
}

// TestDownSeriesOnePerHost: a pool that lists one host twice (two Host
// headers on one server) makes one series, 1 when either entry is down;
// /metrics does not fail on a duplicate series.
func TestDownSeriesOnePerHost(t *testing.T) {
	reg := prometheus.NewRegistry()
	dead := deadAddr(t)
	p, err := origin.New(origin.Options{Site: "www", Metrics: origin.NewMetrics(reg), DownFor: time.Hour, Servers: []origin.Server{
		{Name: "a", URL: mustURL(t, dead), HostHeader: "a.internal"},
		{Name: "b", URL: mustURL(t, dead), HostHeader: "b.internal"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	p.Activate()
	defer p.Close()
	if v, ok := downGauge(t, reg, "www", hostOf(dead)); !ok || v != 0 {
		t.Fatalf("before any request: server_down = %v (exists %v), want 0", v, ok)
	}
	req := httptest.NewRequest("POST", "http://www.example.test/", strings.NewReader("x"))
	if _, err := p.RoundTrip(req.WithContext(origin.WithServer(req.Context(), "a"))); err == nil {
		t.Fatal("request to a dead server succeeded")
	}
	if v, _ := downGauge(t, reg, "www", hostOf(dead)); v != 1 {
		t.Fatalf("server_down after entry a failed = %v, want 1", v)
	}
	if n := testutil.CollectAndCount(reg, "meridian_origin_server_down"); n != 1 {
		t.Fatalf("%d series for one host, want 1", n)
	}
}
