package cache_test

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meridian-edge/meridian/gateway/cache"
	"github.com/meridian-edge/meridian/gateway/cache/cachetest"
	"github.com/meridian-edge/meridian/internal/testutil"
	"github.com/meridian-edge/meridian/middleware"
)

// TestPoPMadeErrorsCarryRequestIDViaAndCacheStatus: the 502 and 504 the PoP
// makes when the origin refuses or does not answer carry what every other
// response carries (the request's X-Request-Id, our Via, a Cache-Status
// entry), their body names the PoP and the request id, the WARN log line
// has the request id and the origin server, and the request metrics count
// them as made by the PoP.
func TestPoPMadeErrorsCarryRequestIDViaAndCacheStatus(t *testing.T) {
	hang := make(chan struct{})
	defer close(hang)
	refused := func() string { // a loopback port nothing listens on
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		return "http://" + addr
	}()
	tests := []struct {
		name       string
		origin     string
		wantCode   int
		wantDetail string
		wantServer bool // the log names the origin server
	}{
		{"refused", refused, 502, "detail=origin-unreachable", true},
		{"hang", rawOrigin(t, func(net.Conn) { <-hang }), 504, "detail=origin-timeout", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			logs := &testutil.SyncBuffer{}
			c, err := cache.New(cache.Options{L1Bytes: 8 << 20, PoPID: "eu-test-1", Logger: slog.New(slog.NewTextHandler(logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			reg := prometheus.NewRegistry()
			m := middleware.NewPoPRequestMetrics(reg, "eu-test-1", func(*http.Request) string { return "shop" })
			observed := make(chan struct{}, 1)
			h := c.Handler(cache.SitePolicy{SiteID: "shop"}, cachetest.Transport(t, tc.origin, 300*time.Millisecond))
			front := newServer(t, middleware.RequestID(middleware.Observe(m.Observer(),
				func(*http.Request, int, int64, time.Duration) { observed <- struct{}{} })(h)))

			req, _ := http.NewRequest("GET", front.URL+"/x", nil)
			req.Header.Set("X-Request-Id", "sre-check-42")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.wantCode {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tc.wantCode, body)
			}
			if got := resp.Header.Get("X-Request-Id"); got != "sre-check-42" {
				t.Errorf("X-Request-Id %q, want the request's sre-check-42", got)
			}
			if got := resp.Header.Get("Via"); got != "1.1 meridian-eu-test-1" {
				t.Errorf("Via %q, want 1.1 meridian-eu-test-1", got)
			}
			if cs := resp.Header.Get("Cache-Status"); !strings.HasPrefix(cs, "meridian; fwd=uri-miss") || !strings.Contains(cs, tc.wantDetail) {
				t.Errorf("Cache-Status %q, want meridian; fwd=uri-miss ... %s", cs, tc.wantDetail)
			}
			if !strings.Contains(string(body), "meridian-eu-test-1") || !strings.Contains(string(body), "sre-check-42") || !strings.Contains(string(body), `"shop"`) {
				t.Errorf("body %q does not name the PoP, the request id and the site", body)
			}
			select {
			case <-observed:
			case <-time.After(5 * time.Second):
				t.Fatal("the request was never observed")
			}
			line := ""
			for _, l := range strings.Split(logs.String(), "\n") {
				if strings.Contains(l, "cache: origin failed") {
					line = l
				}
			}
			if !strings.Contains(line, "level=WARN") || !strings.Contains(line, "request_id=sre-check-42") {
				t.Errorf("WARN log line lacks the request id: %q", line)
			}
			if want := "server=" + strings.TrimPrefix(tc.origin, "http://"); tc.wantServer && !strings.Contains(line, want) {
				t.Errorf("log line %q does not name the origin server (%s)", line, want)
			}
			reason := strings.TrimPrefix(tc.wantDetail, "detail=")
			gen := promtest.ToFloat64(m.GeneratedCounter("shop", tc.wantCode, reason))
			if gen != 1 {
				t.Errorf("meridian_http_responses_generated_total{site=shop,code=%d,reason=%s} = %v, want 1", tc.wantCode, reason, gen)
			}
		})
	}
}

// TestOriginErrorPassedOnIsNotCountedAsGenerated: an origin's own 503 is the
// origin's answer, not the PoP's.
func TestOriginErrorPassedOnIsNotCountedAsGenerated(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := middleware.NewPoPRequestMetrics(reg, "eu-test-1", func(*http.Request) string { return "site1" })
	observed := make(chan struct{}, 1)
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(503)
		io.WriteString(w, "origin says no")
	}, envOpt{plainFront: true, wrapFront: func(h http.Handler) http.Handler {
		return middleware.RequestID(middleware.Observe(m.Observer(), func(*http.Request, int, int64, time.Duration) { observed <- struct{}{} })(h))
	}})
	r := e.get("/busy")
	if r.status != 503 || r.body != "origin says no" || r.header.Get("X-Request-Id") == "" {
		t.Fatalf("got %d %q id %q, want the origin's 503 with a request id", r.status, r.body, r.header.Get("X-Request-Id"))
	}
	<-observed
	if n := promtest.CollectAndCount(reg, "meridian_http_responses_generated_total"); n != 0 {
		t.Errorf("an origin's 503 made %d generated-response series, want none", n)
	}
}
