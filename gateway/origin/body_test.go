package origin_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	mtestutil "github.com/meridian-edge/meridian/internal/testutil"

	"github.com/meridian-edge/meridian/gateway/origin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// stallingServer sends headers and "first part", then waits for next (to
// send " second part") or for the end of the test.
func stallingServer(t *testing.T, next <-chan struct{}) *httptest.Server {
	stop := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "22")
		io.WriteString(w, "first part")
		w.(http.Flusher).Flush()
		select {
		case <-next:
			io.WriteString(w, " second part")
		case <-r.Context().Done():
		case <-stop:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(stop) })
	return srv
}

// The SRE's second case: headers, part of the body, then silence. The body
// must end with a timeout after timeouts.idle (not the total timeout), be
// counted as body_error rather than 2xx, and log one WARN naming the site,
// the server and the bytes that arrived.
func TestStalledBodyEndsAfterIdleTimeout(t *testing.T) {
	srv := stallingServer(t, nil)
	reg := prometheus.NewRegistry()
	m := origin.NewMetrics(reg)
	var logs mtestutil.SyncBuffer
	p, _ := origin.New(origin.Options{
		Site: "www", Metrics: m, IdleTimeout: 200 * time.Millisecond, TotalTimeout: time.Hour,
		Logger:  slog.New(slog.NewTextHandler(&logs, nil)),
		Servers: []origin.Server{{URL: mustURL(t, srv.URL)}},
	})
	defer p.Close()
	resp, err := get(t, p, "GET", "/", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil || !origin.IsTimeout(err) || !strings.Contains(err.Error(), "timeouts.idle") {
		t.Fatalf("body of a stalled origin: err = %v, want the idle timeout", err)
	}
	if string(body) != "first part" {
		t.Fatalf("body so far = %q, want %q", body, "first part")
	}
	host := hostOf(srv.URL)
	if n := testutil.ToFloat64(m.Requests("www", host, "body_error")); n != 1 {
		t.Fatalf("outcome body_error = %v, want 1", n)
	}
	if n := testutil.ToFloat64(m.Requests("www", host, "2xx")); n != 0 {
		t.Fatalf("outcome 2xx = %v, want 0: a truncated body is not a success", n)
	}
	var warns []string
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if strings.Contains(l, "level=WARN") {
			warns = append(warns, l)
		}
	}
	if len(warns) != 1 || !strings.Contains(warns[0], "site=www") || !strings.Contains(warns[0], "server="+host) || !strings.Contains(warns[0], "bytes=10") {
		t.Fatalf("want one WARN with site, server and bytes=10; log:\n%s", logs.String())
	}
}

// The idle timer runs only while a read waits for the origin: a caller that
// pauses between reads (a slow client) does not cut a healthy body.
func TestPauseBetweenReadsIsNotIdle(t *testing.T) {
	next := make(chan struct{})
	srv := stallingServer(t, next)
	m := origin.NewMetrics(nil)
	p, _ := origin.New(origin.Options{Site: "www", Metrics: m, IdleTimeout: 100 * time.Millisecond, Servers: []origin.Server{{URL: mustURL(t, srv.URL)}}})
	defer p.Close()
	resp, err := get(t, p, "GET", "/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 10)
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the caller is busy; no read is pending
	close(next)
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(rest) != " second part" {
		t.Fatalf("rest of the body = %q, %v; want %q", rest, err, " second part")
	}
	resp.Body.Close()
	if n := testutil.ToFloat64(m.Requests("www", hostOf(srv.URL), "2xx")); n != 1 {
		t.Fatalf("outcome 2xx = %v, want 1", n)
	}
}
