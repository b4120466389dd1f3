package cache_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway/cache"
	"github.com/meridian-edge/meridian/gateway/headers"
	"github.com/meridian-edge/meridian/internal/testutil"
)

// BenchmarkFastHitWithRules measures a 1 KiB fast-path hit of a site
// without cache rules against one with five (four that do not match the
// path and the last that does), and against one with five response
// header changes (headers), over one keep-alive loopback connection:
// what the rules' check and the header changes cost each hit. Process CPU
// per request, client included.
//
//	go test -run '^$' -bench FastHitWithRules -cpu 1 -benchtime 100000x ./gateway/cache/
func BenchmarkFastHitWithRules(b *testing.B) {
	body := strings.Repeat("x", 1024)
	rules := []cache.PathRule{
		{Path: "/api/*", Bypass: true}, {Path: "*.html", DefaultTTL: time.Minute}, {Path: "/img/*", TTL: time.Hour},
		{Path: "/fonts/*.woff2", TTL: time.Hour}, {Path: "/static/*", TTL: time.Hour},
	}
	hd, err := headers.ForResponses(map[string]string{"X-Frame-Options": "DENY", "Strict-Transport-Security": "max-age=63072000",
		"X-Content-Type-Options": "nosniff", "Referrer-Policy": "strict-origin"}, []string{"Server"})
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		rules   []cache.PathRule
		headers *headers.Policy
	}{{"none", nil, nil}, {"five", rules, nil}, {"headers", nil, hd}} {
		b.Run(c.name, func(b *testing.B) {
			origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Cache-Control", "public, max-age=3600")
				io.WriteString(w, body)
			}))
			defer origin.Close()
			conn, br := fastFront(b, cache.SitePolicy{SiteID: "bench", IgnoreClientDirectives: true, Rules: c.rules, ResponseHeaders: c.headers}, origin.URL)
			get := func() {
				resp := roundTrip(b, conn, br, "GET /static/app/main.js HTTP/1.1\r\nHost: bench.test\r\n\r\n")
				if cs := resp.Header.Get("Cache-Status"); !strings.Contains(cs, "hit") && !strings.Contains(cs, "stored") {
					b.Fatalf("Cache-Status %q", cs)
				}
			}
			get()
			b.ReportAllocs()
			b.ResetTimer()
			cpu := testutil.ProcessCPU()
			for range b.N {
				get()
			}
			b.ReportMetric(float64((testutil.ProcessCPU()-cpu).Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
	}
}
