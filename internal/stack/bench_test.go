package stack_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/meridian-edge/meridian/internal/stack"
	"github.com/meridian-edge/meridian/internal/testutil"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// BenchmarkL1HitProtocols measures a 1 KiB L1 hit through a PoP over
// HTTP/1.1, h2c, HTTP/2 over TLS and HTTP/3. The process CPU includes the Go
// client, so only the ratios between protocols mean something; the figure is
// requests per CPU-second (req/cpu-s):
//
//	go test -run '^$' -bench L1HitProtocols -benchtime 20000x ./internal/stack/
func BenchmarkL1HitProtocols(b *testing.B) {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		io.WriteString(w, strings.Repeat("x", 1024))
	}))
	defer origin.Close()
	cfg := devConfig(b, origin.URL)
	st, err := stack.Start(context.Background(), cfg, stack.Roles{PoPs: []string{"us-east-1"}}, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Shutdown(context.Background())
	pop := st.PoP("us-east-1")
	ca, _ := st.DevCA()
	pemBytes, _ := os.ReadFile(ca.CACert)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pemBytes)
	tlsConf := &tls.Config{RootCAs: roots, ServerName: "www.example.test"}
	dialTo := func(addr string) func(ctx context.Context, network, _ string) (net.Conn, error) {
		return func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}
	}
	h1 := &http.Transport{DialContext: dialTo(pop.HTTPAddr()), MaxIdleConnsPerHost: 4}
	h2c := &http.Transport{DialContext: dialTo(pop.HTTPAddr()), Protocols: new(http.Protocols)}
	h2c.Protocols.SetUnencryptedHTTP2(true)
	h2 := &http.Transport{DialTLSContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&tls.Dialer{Config: tlsConf.Clone()}).DialContext(ctx, network, pop.HTTPSAddr())
	}, ForceAttemptHTTP2: true, TLSClientConfig: tlsConf}
	h3 := &http3.Transport{TLSClientConfig: tlsConf, Dial: func(ctx context.Context, _ string, tc *tls.Config, qc *quic.Config) (*quic.Conn, error) {
		return quic.DialAddr(ctx, pop.HTTPSAddr(), tc, qc)
	}}
	defer h3.Close()
	cases := []struct {
		name, scheme, proto string
		rt                  http.RoundTripper
	}{
		{"h1", "http", "HTTP/1.1", h1},
		{"h2c", "http", "HTTP/2.0", h2c},
		{"h2", "https", "HTTP/2.0", h2},
		{"h3", "https", "HTTP/3.0", h3},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			client := &http.Client{Transport: c.rt}
			get := func() {
				resp, err := client.Get(c.scheme + "://www.example.test/obj")
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.Proto != c.proto {
					b.Fatalf("proto %s, want %s", resp.Proto, c.proto)
				}
			}
			get()
			get() // stored and hit
			b.ResetTimer()
			start := testutil.ProcessCPU()
			for range b.N {
				get()
			}
			cpu := testutil.ProcessCPU() - start
			b.ReportMetric(float64(b.N)/cpu.Seconds(), "req/cpu-s")
		})
	}
}
