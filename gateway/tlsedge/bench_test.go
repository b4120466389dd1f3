package tlsedge

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/internal/testutil"
)

// benchPoP is a PoP with one PEM site serving a small body.
func benchPoP(b *testing.B) (*testPoP, *tls.Config) {
	dir := b.TempDir()
	now := time.Now()
	c, k, leaf := certFiles(b, dir, "bench", []string{"bench.example.test"}, now.Add(-time.Hour), now.Add(24*time.Hour))
	m, err := New(Options{Sites: []SiteCert{{Site: "bench", Names: []string{"bench.example.test"}, CertFile: c, KeyFile: k}}, WatchInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	srv, err := NewServer(ServerOptions{Addr: "127.0.0.1:0", HTTP3Addr: "same", TLSConfig: m.TLSConfig(), Handler: okHandler})
	if err != nil {
		b.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Shutdown(context.Background()) })
	return &testPoP{m: m, srv: srv}, &tls.Config{RootCAs: poolOf(leaf), ServerName: "bench.example.test"}
}

// BenchmarkRequests compares HTTP/1.1, HTTP/2 and HTTP/3 over TLS for the
// same handler in one run, on kept-alive connections, as requests per
// CPU-second of the whole process (Go client and server together: a
// relative figure between protocols, not a server capacity).
func BenchmarkRequests(b *testing.B) {
	p, cfg := benchPoP(b)
	clients := map[string]func(*testing.B) *http.Client{
		"h1": func(*testing.B) *http.Client {
			tr := p.h2Client(cfg.RootCAs).Transport.(*http.Transport)
			tr.ForceAttemptHTTP2 = false
			tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
			tr.MaxIdleConnsPerHost = 64
			return &http.Client{Transport: tr}
		},
		"h2": func(*testing.B) *http.Client { return p.h2Client(cfg.RootCAs) },
		"h3": func(b *testing.B) *http.Client { return p.h3Client(b, cfg.RootCAs) },
	}
	for _, proto := range []string{"h1", "h2", "h3"} {
		b.Run(proto, func(b *testing.B) {
			c := clients[proto](b)
			b.SetParallelism(4)
			start := testutil.ProcessCPU()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := c.Get("https://bench.example.test/")
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
			b.ReportMetric(float64(b.N)/(testutil.ProcessCPU()-start).Seconds(), "req/cpu-s")
		})
	}
}

// BenchmarkHandshake measures full and resumed TLS 1.3 handshakes with an
// ECDSA P-256 certificate (client and server in the process: compare with
// the nginx figures from internal/tlsbenchsrv/bench.sh, which count the
// server only).
func BenchmarkHandshake(b *testing.B) {
	p, cfg := benchPoP(b)
	for _, resumed := range []bool{false, true} {
		name := "full"
		if resumed {
			name = "resumed"
		}
		b.Run(name, func(b *testing.B) {
			c := cfg.Clone()
			c.MinVersion = tls.VersionTLS13
			if resumed {
				c.ClientSessionCache = tls.NewLRUClientSessionCache(1)
			}
			dial := func() bool {
				conn, err := tls.Dial("tcp", p.srv.Addr(), c)
				if err != nil {
					b.Fatal(err)
				}
				// Read so the TLS 1.3 ticket (sent after the handshake) arrives.
				conn.Write([]byte("GET / HTTP/1.1\r\nHost: bench.example.test\r\nConnection: close\r\n\r\n"))
				io.Copy(io.Discard, conn)
				did := conn.ConnectionState().DidResume
				conn.Close()
				return did
			}
			if resumed {
				dial()
			}
			start := testutil.ProcessCPU()
			b.ResetTimer()
			for range b.N {
				if dial() != resumed {
					b.Fatalf("resumed=%v, want %v", !resumed, resumed)
				}
			}
			b.ReportMetric(float64(b.N)/(testutil.ProcessCPU()-start).Seconds(), "handshakes/cpu-s")
		})
	}
}
