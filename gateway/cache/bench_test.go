package cache_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/meridian-edge/meridian/gateway/cache"
	"github.com/meridian-edge/meridian/gateway/cache/cachetest"
)

// BenchmarkL1Hit measures an L1 hit through real HTTP/1.1 keep-alive
// connections on loopback: client, front server, cache handler.
//
//	go test -run '^$' -bench L1Hit -benchmem -cpuprofile cpu.out ./gateway/cache/
func BenchmarkL1Hit(b *testing.B) {
	for _, size := range []int{1 << 10, 16 << 10, 256 << 10} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			body := make([]byte, size)
			origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Cache-Control", "public, max-age=3600")
				w.Header().Set("Content-Type", "application/octet-stream")
				w.Header().Set("Content-Length", strconv.Itoa(size))
				w.Write(body)
			}))
			defer origin.Close()
			c, err := cache.New(cache.Options{L1Bytes: 64 << 20})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			front := httptest.NewServer(c.Handler(cache.SitePolicy{SiteID: "bench"}, cachetest.Transport(b, origin.URL, 0)))
			defer front.Close()
			tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr}
			url := front.URL + "/obj"
			get := func() {
				resp, err := client.Get(url)
				if err != nil {
					b.Fatal(err)
				}
				n, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if n != int64(size) {
					b.Fatalf("short body %d", n)
				}
			}
			get()
			get()
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					get()
				}
			})
		})
	}
}
