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
	p, _ := origin.New(origin.Options{
		Site: "www", HeaderTimeout: 200 * time.Millisecond, DownFor: time.Hour,
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
	if v, _ := downGauge(t, reg, "www", hostOf(hang.srv.URL)); v != 0 {
		t.Fatalf("server_down after the client canceled = %v, want 0", v)
	}
}

// TestDownSeriesFollowTheSites: a reload makes a new pool for a site that
// stays (its series are the new pool's, and closing the old one keeps
// them); closing the pool of a site the reload removed drops its series.
func TestDownSeriesFollowTheSites(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := origin.NewMetrics(reg)
	a, b := mustURL(t, "http://127.0.0.1:1"), mustURL(t, "http://127.0.0.1:2")
	old, err := origin.New(origin.Options{Site: "www", Metrics: m, Servers: []origin.Server{{URL: a}}})
	if err != nil {
		t.Fatal(err)
	}
	gone, err := origin.New(origin.Options{Site: "old", Metrics: m, Servers: []origin.Server{{URL: a}}})
	if err != nil {
		t.Fatal(err)
	}
	next, err := origin.New(origin.Options{Site: "www", Metrics: m, Servers: []origin.Server{{URL: b}}})
	if err != nil {
		t.Fatal(err)
	}
	old.Close()
	gone.Close()
	if _, ok := downGauge(t, reg, "www", b.Host); !ok {
		t.Error("the kept site's series went with its old pool")
	}
	if _, ok := downGauge(t, reg, "www", a.Host); ok {
		t.Error("the kept site still reports the server the reload dropped")
	}
	if _, ok := downGauge(t, reg, "old", a.Host); ok {
		t.Error("the removed site's series outlived its pool")
	}
	next.Close()
}
