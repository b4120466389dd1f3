package middleware_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meridian-edge/meridian/internal/config"
	"github.com/meridian-edge/meridian/middleware"
)

// serveObserved serves h behind RequestID and Observe(m) on loopback, and
// returns a GET function that waits until the request was observed.
func serveObserved(t *testing.T, m *middleware.RequestMetrics, h http.HandlerFunc) func(path string) int {
	t.Helper()
	observed := make(chan struct{}, 1)
	srv := httptest.NewServer(middleware.RequestID(middleware.Observe(m.Observer(),
		func(*http.Request, int, int64, time.Duration) { observed <- struct{}{} })(h)))
	t.Cleanup(srv.Close)
	return func(path string) int {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		select {
		case <-observed:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s was never observed", path)
		}
		return resp.StatusCode
	}
}

// TestRequestMetricsCarryPoPAndTellGeneratedResponses: the request metrics
// carry pop="<id>" like the cache's, keep the status class, and count the
// responses the PoP made itself (MarkGenerated) apart from the origin's.
func TestRequestMetricsCarryPoPAndTellGeneratedResponses(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := middleware.NewPoPRequestMetrics(reg, "ap-northeast-1", func(*http.Request) string { return "www" })
	get := serveObserved(t, m, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/origin-503": // passed on from the origin
			w.WriteHeader(503)
		case "/plugin-failed": // made here
			middleware.MarkGenerated(r.Context(), "plugin-failure")
			w.WriteHeader(503)
		default:
			io.WriteString(w, "ok")
		}
	})
	for _, p := range []string{"/", "/origin-503", "/plugin-failed"} {
		get(p)
	}
	want := `
# HELP meridian_http_requests_total HTTP requests served, by site, method and status class.
# TYPE meridian_http_requests_total counter
meridian_http_requests_total{code="2xx",method="GET",pop="ap-northeast-1",site="www"} 1
meridian_http_requests_total{code="5xx",method="GET",pop="ap-northeast-1",site="www"} 2
`
	if err := promtest.GatherAndCompare(reg, strings.NewReader(want), "meridian_http_requests_total"); err != nil {
		t.Error(err)
	}
	want = `
# HELP meridian_http_responses_generated_total Responses the PoP made itself instead of passing on the origin's (origin unreachable or too slow, plugin failure), by site, status code and reason. Also counted in meridian_http_requests_total.
# TYPE meridian_http_responses_generated_total counter
meridian_http_responses_generated_total{code="503",pop="ap-northeast-1",reason="plugin-failure",site="www"} 1
`
	if err := promtest.GatherAndCompare(reg, strings.NewReader(want), "meridian_http_responses_generated_total"); err != nil {
		t.Error(err)
	}
}

// TestMarkGeneratedOutsideRequestID: without RequestID's context there is
// nothing to mark, and it says so instead of panicking.
func TestMarkGeneratedOutsideRequestID(t *testing.T) {
	r := httptest.NewRequest("GET", "/", nil)
	if middleware.MarkGenerated(r.Context(), "x") || middleware.Generated(r.Context()) != "" {
		t.Fatal("MarkGenerated outside RequestID reported a mark")
	}
}

// TestUnknownSiteLabelCannotBeASiteName: requests of no site are counted
// under UnknownSite, which is not a valid site name, so a real site named
// "unknown" keeps its own series.
func TestUnknownSiteLabelCannotBeASiteName(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := middleware.NewPoPRequestMetrics(reg, "eu-1", func(r *http.Request) string {
		if r.URL.Path == "/real" {
			return "unknown" // a real site's name
		}
		return "" // no site
	})
	get := serveObserved(t, m, func(w http.ResponseWriter, r *http.Request) {})
	get("/real")
	get("/nosite")
	get("/nosite")
	if got := promtest.ToFloat64(m.Counter("unknown", "GET", 200)); got != 1 {
		t.Errorf("site \"unknown\" counted %v requests, want its own 1", got)
	}
	if got := promtest.ToFloat64(m.Counter(middleware.UnknownSite, "GET", 200)); got != 2 {
		t.Errorf("%s counted %v requests, want 2", middleware.UnknownSite, got)
	}
	// The configuration must refuse a site of that name, or its requests
	// and the unknown ones would share one series.
	yaml := `nats:
  embedded:
    listen: 127.0.0.1:4222
pops:
  - id: eu-1
    region: eu-west-2
    http: 127.0.0.1:8080
    admin: 127.0.0.1:9090
sites:
  - name: ` + middleware.UnknownSite + `
    hosts: [www.example.test]
    origins:
      - url: http://127.0.0.1:8081
`
	if _, err := config.Parse("sites.yaml", []byte(yaml)); err == nil || !strings.Contains(err.Error(), "sites[0].name") {
		t.Errorf("a site named %q (UnknownSite) was accepted (err %v): its series would mix with requests of no site", middleware.UnknownSite, err)
	}
}

// BenchmarkObserveSite is the metrics' share of a fast hit (the PoP's
// fastObserve): it must not allocate.
//
//	go test -run '^$' -bench ObserveSite -benchmem ./middleware/
func BenchmarkObserveSite(b *testing.B) {
	m := middleware.NewPoPRequestMetrics(prometheus.NewRegistry(), "eu-1", nil)
	b.ReportAllocs()
	for b.Loop() {
		m.ObserveSite("www", "GET", 200, 1024, time.Millisecond)
	}
}

// TestCutResponsesAreCounted: a response whose body was cut after the
// header (MarkBodyError) is counted by reason in
// meridian_http_responses_cut_total, beside its sent status in the request
// counts; a whole one is not.
func TestCutResponsesAreCounted(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := middleware.NewPoPRequestMetrics(reg, "eu-1", func(*http.Request) string { return "www" })
	get := serveObserved(t, m, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(200)
		if r.URL.Path == "/whole" {
			io.WriteString(w, strings.Repeat("x", 100))
			return
		}
		io.WriteString(w, strings.Repeat("x", 50))
		middleware.MarkBodyError(r.Context(), "origin-error")
		panic(http.ErrAbortHandler)
	})
	get("/whole")
	get("/cut")
	want := `
# HELP meridian_http_responses_cut_total Responses whose body was cut after the status went out (the origin's body ended early or stalled, a stored copy failed its checksum), by site and reason. Also counted, by the status sent, in meridian_http_requests_total.
# TYPE meridian_http_responses_cut_total counter
meridian_http_responses_cut_total{pop="eu-1",reason="origin-error",site="www"} 1
`
	if err := promtest.GatherAndCompare(reg, strings.NewReader(want), "meridian_http_responses_cut_total"); err != nil {
		t.Error(err)
	}
	if n := promtest.ToFloat64(m.Counter("www", "GET", 200)); n != 2 {
		t.Errorf("requests counted under 2xx: %v, want both (the cut one was sent as a 200)", n)
	}
}
