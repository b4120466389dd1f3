package origin_test

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway/origin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func mustURL(t *testing.T, s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// deadAddr returns an address on loopback where nothing listens.
func deadAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

func get(t *testing.T, p *origin.Pool, method, path string, body io.Reader) (*http.Response, error) {
	req := httptest.NewRequest(method, "http://www.example.test"+path, body)
	return p.RoundTrip(req)
}

func TestRoundRobinKeepsPathQueryAndHost(t *testing.T) {
	var hits [2]atomic.Int32
	var servers [2]*httptest.Server
	for i := range servers {
		servers[i] = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits[i].Add(1)
			io.WriteString(w, r.Host+" "+r.URL.RequestURI())
		}))
		defer servers[i].Close()
	}
	p, err := origin.New(origin.Options{Site: "www", Servers: []origin.Server{{URL: mustURL(t, servers[0].URL)}, {URL: mustURL(t, servers[1].URL)}}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for range 10 {
		resp, err := get(t, p, "GET", "/a/b?x=1&y=2", nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "www.example.test /a/b?x=1&y=2" {
			t.Fatalf("origin saw %q", body)
		}
	}
	if hits[0].Load() != 5 || hits[1].Load() != 5 {
		t.Fatalf("requests split %d/%d, want 5/5", hits[0].Load(), hits[1].Load())
	}
}

func TestHostHeaderOverride(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.Host) }))
	defer srv.Close()
	p, _ := origin.New(origin.Options{Site: "www", Servers: []origin.Server{{URL: mustURL(t, srv.URL), HostHeader: "origin.internal"}}})
	resp, err := get(t, p, "GET", "/", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "origin.internal" {
		t.Fatalf("Host at origin = %q", body)
	}
}

func TestDeadServerIsSkippedForIdempotentRequests(t *testing.T) {
	var hits atomic.Int32
	live := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer live.Close()
	reg := prometheus.NewRegistry()
	m := origin.NewMetrics(reg)
	p, _ := origin.New(origin.Options{Site: "www", Metrics: m, Servers: []origin.Server{{URL: mustURL(t, deadAddr(t))}, {URL: mustURL(t, live.URL)}}})
	for range 4 {
		resp, err := get(t, p, "GET", "/", nil)
		if err != nil {
			t.Fatalf("GET with one dead origin: %v", err)
		}
		resp.Body.Close()
	}
	if hits.Load() != 4 {
		t.Fatalf("live origin got %d requests, want 4", hits.Load())
	}
	if n := testutil.ToFloat64(m.Requests("www", p.ServerHosts()[0], "connect")); n != 1 {
		t.Fatalf("connect failures counted %v, want 1 (the dead server is then skipped)", n)
	}
}

func TestPostIsNotRetried(t *testing.T) {
	p, _ := origin.New(origin.Options{Site: "www", Servers: []origin.Server{{URL: mustURL(t, deadAddr(t))}, {URL: mustURL(t, deadAddr(t))}}})
	_, err := get(t, p, "POST", "/", strings.NewReader("payload"))
	if err == nil {
		t.Fatal("POST to dead origins succeeded")
	}
	if !strings.Contains(err.Error(), "origin: site www:") {
		t.Fatalf("error does not name the site: %v", err)
	}
}

func TestHeaderTimeout(t *testing.T) {
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	defer hang.Close()
	defer close(release)
	p, _ := origin.New(origin.Options{Site: "www", HeaderTimeout: 100 * time.Millisecond, Servers: []origin.Server{{URL: mustURL(t, hang.URL)}}})
	_, err := get(t, p, "GET", "/", nil)
	if err == nil || !origin.IsTimeout(err) {
		t.Fatalf("hanging origin: err = %v, want a timeout", err)
	}
}

func TestTotalTimeoutCoversBody(t *testing.T) {
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first part")
		w.(http.Flusher).Flush()
		<-release
	}))
	defer slow.Close()
	defer close(release)
	m := origin.NewMetrics(nil)
	p, _ := origin.New(origin.Options{Site: "www", Metrics: m, TotalTimeout: 200 * time.Millisecond, Servers: []origin.Server{{URL: mustURL(t, slow.URL)}}})
	resp, err := get(t, p, "GET", "/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, err = io.ReadAll(resp.Body)
	if err == nil || !origin.IsTimeout(err) {
		t.Fatalf("body of a stalled origin: err = %v, want a timeout", err)
	}
	resp.Body.Close()
	host := p.ServerHosts()[0]
	if n := testutil.ToFloat64(m.Requests("www", host, "body_error")); n != 1 {
		t.Fatalf("outcome body_error = %v, want 1", n)
	}
	if n := testutil.ToFloat64(m.Requests("www", host, "2xx")); n != 0 {
		t.Fatalf("outcome 2xx = %v, want 0", n)
	}
}

func TestNewRejectsBadServers(t *testing.T) {
	if _, err := origin.New(origin.Options{Site: "www"}); err == nil || !strings.Contains(err.Error(), "no origin servers") {
		t.Fatalf("empty pool: %v", err)
	}
	if _, err := origin.New(origin.Options{Site: "www", Servers: []origin.Server{{URL: mustURL(t, "ftp://x")}}}); err == nil {
		t.Fatal("ftp origin accepted")
	}
}

func TestPluginChosenServer(t *testing.T) {
	var a, b atomic.Int32
	sa := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { a.Add(1) }))
	defer sa.Close()
	sb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { b.Add(1) }))
	defer sb.Close()
	p, _ := origin.New(origin.Options{Site: "www", Servers: []origin.Server{{Name: "a", URL: mustURL(t, sa.URL)}, {Name: "b", URL: mustURL(t, sb.URL)}}})
	for range 4 {
		req := httptest.NewRequest("GET", "http://www.example.test/", nil)
		req = req.WithContext(origin.WithServer(req.Context(), "b"))
		resp, err := p.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if a.Load() != 0 || b.Load() != 4 {
		t.Fatalf("requests a=%d b=%d; the chosen server b should get all 4", a.Load(), b.Load())
	}
}
