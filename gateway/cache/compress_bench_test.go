package cache_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/meridian-edge/meridian/gateway/cache"
	"github.com/meridian-edge/meridian/gateway/cache/cachetest"
	"github.com/meridian-edge/meridian/internal/testutil"
)

// BenchmarkCompressOrigin measures a miss of a 64 KiB stylesheet-like text
// object through a site with Compress on, for a client that accepts
// nothing, gzip, zstd or br: "fill" a cacheable one (the fetch, the
// compression and the store; stored plain for the first client), "pass"
// one the cache may not store (compressed as it streams through). It
// reports the bytes the client received per object.
//
//	go test -run '^$' -bench CompressOrigin -benchmem -cpu 1 ./gateway/cache/
func BenchmarkCompressOrigin(b *testing.B) {
	var sb strings.Builder
	for i := 0; sb.Len() < 64<<10; i++ {
		fmt.Fprintf(&sb, ".card-%d { margin: %dpx; padding: 4px 8px; border: 1px solid #%06x; color: #223; }\n", i, i%16, i*7919%0xffffff)
	}
	page := sb.String()
	for _, kind := range []struct{ name, cc string }{{"fill", "public, max-age=3600"}, {"pass", "private, max-age=3600"}} {
		for _, ae := range []string{"", "gzip", "zstd", "br"} {
			name := ae
			if name == "" {
				name = "none"
			}
			b.Run(kind.name+"/"+name, func(b *testing.B) {
				origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Cache-Control", kind.cc)
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
}

// BenchmarkFastHitCompressed measures a fast-path hit of a 16 KiB
// stylesheet over one keep-alive loopback connection: stored plain
// (no Vary), and stored compressed by the edge (a Vary: Accept-Encoding
// variant, looked up through its index and the normalised field). It
// reports process CPU per hit, client included.
//
//	go test -run '^$' -bench FastHitCompressed -cpu 1 -benchtime 100000x ./gateway/cache/
func BenchmarkFastHitCompressed(b *testing.B) {
	css := strings.Repeat(".card { margin: 4px; padding: 4px 8px; border: 1px solid #ccd; }\n", 16<<10/66)
	for _, c := range []struct {
		name     string
		compress bool
		ae       string
	}{
		{"plain", false, "gzip, deflate, br, zstd"},
		{"br", true, "gzip, deflate, br, zstd"},
		{"zstd", true, "gzip, deflate, zstd"},
		{"gzip", true, "gzip, deflate"},
	} {
		b.Run(c.name, func(b *testing.B) {
			origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Cache-Control", "public, max-age=3600")
				w.Header().Set("Content-Type", "text/css")
				io.WriteString(w, css)
			}))
			defer origin.Close()
			conn, br := fastFront(b, cache.SitePolicy{SiteID: "bench", Compress: c.compress}, origin.URL)
			req := []byte("GET /app.css HTTP/1.1\r\nHost: bench.test\r\nAccept-Encoding: " + c.ae + "\r\n\r\n")
			get := func() (encoding string) {
				if _, err := conn.Write(req); err != nil {
					b.Fatal(err)
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.Copy(io.Discard, resp.Body); err != nil {
					b.Fatal(err)
				}
				resp.Body.Close()
				return resp.Header.Get("Content-Encoding") + " " + resp.Header.Get("Cache-Status")
			}
			for range 3 {
				get()
			}
			if got := get(); !strings.Contains(got, "hit") || c.compress != strings.HasPrefix(got, c.name) {
				b.Fatalf("warm request: %q", got)
			}
			b.ResetTimer()
			cpu := testutil.ProcessCPU()
			for range b.N {
				get()
			}
			b.ReportMetric(float64((testutil.ProcessCPU()-cpu).Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
	}
}

// fastFront serves site from a new cache (64 MiB of L1) behind the fast
// path on loopback, filling from originURL, and returns one keep-alive
// connection to it with its reader; everything stops with b.
func fastFront(b *testing.B, site cache.SitePolicy, originURL string) (net.Conn, *bufio.Reader) {
	b.Helper()
	ca, err := cache.New(cache.Options{L1Bytes: 64 << 20})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ca.Close() })
	h := ca.Handler(site, cachetest.Transport(b, originURL, 0))
	front := httptest.NewUnstartedServer(h)
	front.Listener = ca.Fast(front.Config, front.Listener, cache.FastOptions{Route: func(string) http.Handler { return h }})
	front.Start()
	b.Cleanup(front.Close)
	conn, err := net.Dial("tcp", front.Listener.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return conn, bufio.NewReaderSize(conn, 64<<10)
}

// roundTrip writes req on conn and reads its whole response from br (the
// pair fastFront returns), failing b on an error.
func roundTrip(b *testing.B, conn net.Conn, br *bufio.Reader, req string) *http.Response {
	b.Helper()
	if _, err := io.WriteString(conn, req); err != nil {
		b.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}
