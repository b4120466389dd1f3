package cache_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/meridian-edge/meridian/gateway/cache"
	"github.com/meridian-edge/meridian/gateway/cache/cachetest"
)

// BenchmarkCompressFill measures a miss of a 64 KiB stylesheet-like text
// object through a site with Compress on: the fill, the compression and
// the store, for a client that accepts nothing (stored plain), gzip, or
// zstd. It reports the bytes the client received per object.
//
//	go test -run '^$' -bench CompressFill -benchmem -cpu 1 ./gateway/cache/
func BenchmarkCompressFill(b *testing.B) {
	var sb strings.Builder
	for i := 0; sb.Len() < 64<<10; i++ {
		fmt.Fprintf(&sb, ".card-%d { margin: %dpx; padding: 4px 8px; border: 1px solid #%06x; color: #223; }\n", i, i%16, i*7919%0xffffff)
	}
	page := sb.String()
	for _, ae := range []string{"", "gzip", "zstd"} {
		name := ae
		if name == "" {
			name = "none"
		}
		b.Run(name, func(b *testing.B) {
			origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Cache-Control", "public, max-age=3600")
				w.Header().Set("Content-Type", "text/css")
				io.WriteString(w, page)
			}))
			defer origin.Close()
			c, err := cache.New(cache.Options{L1Bytes: 256 << 20})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			front := httptest.NewServer(c.Handler(cache.SitePolicy{SiteID: "bench", Compress: true}, cachetest.Transport(b, origin.URL, 0)))
			defer front.Close()
			tr := &http.Transport{DisableCompression: true}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr}
			var n atomic.Int64
			var got int64
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/app-%d.css", front.URL, n.Add(1)), nil)
				if ae != "" {
					req.Header.Set("Accept-Encoding", ae)
				}
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				m, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.Header.Get("Content-Encoding") != ae {
					b.Fatalf("Content-Encoding %q, want %q", resp.Header.Get("Content-Encoding"), ae)
				}
				got += m
			}
			b.ReportMetric(float64(got)/float64(b.N), "sent-B/op")
		})
	}
}
