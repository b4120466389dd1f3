package cache_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/meridian-edge/meridian/gateway/cache"
	"github.com/meridian-edge/meridian/internal/testutil"
)

// BenchmarkHitWithClientDirectives measures a 1 KiB hit for a request that
// carries a browser reload's Cache-Control: max-age=0, over one keep-alive
// loopback connection: a site that ignores client directives (the fast
// path drops the field and serves) against one that honours them (the
// request goes to the server, which revalidates: a 304 from the origin
// each time). Process CPU per request, client and origin included.
//
//	go test -run '^$' -bench HitWithClientDirectives -cpu 1 -benchtime 50000x ./gateway/cache/
func BenchmarkHitWithClientDirectives(b *testing.B) {
	body := strings.Repeat("x", 1024)
	for _, c := range []struct {
		name   string
		ignore bool
	}{{"ignored", true}, {"honoured", false}} {
		b.Run(c.name, func(b *testing.B) {
			origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Cache-Control", "public, max-age=3600")
				w.Header().Set("ETag", `"v"`)
				if r.Header.Get("If-None-Match") == `"v"` {
					w.WriteHeader(http.StatusNotModified)
					return
				}
				io.WriteString(w, body)
			}))
			defer origin.Close()
			conn, br := fastFront(b, cache.SitePolicy{SiteID: "bench", IgnoreClientDirectives: c.ignore}, origin.URL)
			get := func(req string) { roundTrip(b, conn, br, req) }
			get("GET /obj HTTP/1.1\r\nHost: bench.test\r\n\r\n")
			reload := "GET /obj HTTP/1.1\r\nHost: bench.test\r\nCache-Control: max-age=0\r\n\r\n"
			b.ResetTimer()
			cpu := testutil.ProcessCPU()
			for range b.N {
				get(reload)
			}
			b.ReportMetric(float64((testutil.ProcessCPU()-cpu).Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
	}
}
