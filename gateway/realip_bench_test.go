package gateway_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http/httptest"
	"net/url"

	"io"
	"net"
	"net/http"
	"net/netip"
	"testing"

	"github.com/meridian-edge/meridian/gateway/origin"
	"github.com/meridian-edge/meridian/internal/testutil"
	"github.com/pires/go-proxyproto"

	"github.com/meridian-edge/meridian/gateway"
	"github.com/meridian-edge/meridian/gateway/realip"
)

// BenchmarkFastHitProxyProtocol: keep-alive L1 hits of a 2 KiB object on
// the fast path, on a plain listener and on one wrapped for the PROXY
// protocol. cpu-ns/op is the whole process's (client included, the same
// in both).
func BenchmarkFastHitProxyProtocol(b *testing.B) {
	body := make([]byte, 2048)
	for _, mode := range []string{"plain", "proxy", "plain", "proxy"} {
		b.Run(mode, func(b *testing.B) {
			o := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Cache-Control", "max-age=600")
				w.Write(body)
			}))
			defer o.Close()
			u, _ := url.Parse(o.URL)
			op, err := origin.New(origin.Options{Site: "a", Servers: []origin.Server{{URL: u}}})
			if err != nil {
				b.Fatal(err)
			}
			opts := gateway.Options{
				ID: "bench", HTTPAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
				Sites: []gateway.Site{{Name: "a", Hosts: []string{"a.test"}, Origin: op}},
			}
			var from *net.TCPAddr
			if mode == "proxy" {
				opts.ProxyProtocol = realip.Options{Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}, Required: true}
				from = balancer
			}
			p, err := gateway.New(opts)
			if err != nil {
				b.Fatal(err)
			}
			if err := p.Start(context.Background()); err != nil {
				b.Fatal(err)
			}
			defer p.Shutdown(context.Background())
			d := net.Dialer{LocalAddr: from}
			c, err := d.Dial("tcp", p.HTTPAddr())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			if mode == "proxy" {
				src, _ := net.ResolveTCPAddr("tcp", "203.0.113.7:5000")
				proxyproto.HeaderProxyFromAddrs(2, src, c.LocalAddr()).WriteTo(c)
			}
			br := bufio.NewReader(c)
			req := []byte("GET /x HTTP/1.1\r\nHost: a.test\r\n\r\n")
			one := func() {
				c.Write(req)
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			for range 100 { // a miss, then warm hits
				one()
			}
			b.ResetTimer()
			cpu0 := testutil.ProcessCPU()
			for range b.N {
				one()
			}
			b.ReportMetric(float64(testutil.ProcessCPU()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// BenchmarkFastHitRealIP: keep-alive L1 hits of a 2 KiB object from an L7
// proxy's connection: with real_ip off; on but the peer untrusted; on and
// trusted, one client on the connection or a new one each request (a
// proxy multiplexes clients); and the trusted case through net/http (the
// fast path off), for scale. cpu-ns/op is the whole process's (client
// included, the same in every mode).
//
//	go test -run '^$' -bench FastHitRealIP -benchtime 200000x -cpu 1 ./gateway/
func BenchmarkFastHitRealIP(b *testing.B) {
	body := make([]byte, 2048)
	for _, mode := range []string{"off", "untrusted", "trusted", "trusted-varying", "off", "untrusted", "trusted", "trusted-varying", "trusted-net-http"} {
		b.Run(mode, func(b *testing.B) {
			o := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Cache-Control", "max-age=600")
				w.Write(body)
			}))
			defer o.Close()
			u, _ := url.Parse(o.URL)
			op, err := origin.New(origin.Options{Site: "a", Servers: []origin.Server{{URL: u}}})
			if err != nil {
				b.Fatal(err)
			}
			opts := gateway.Options{
				ID: "bench", HTTPAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
				Sites:      []gateway.Site{{Name: "a", Hosts: []string{"a.test"}, Origin: op}},
				NoFastPath: mode == "trusted-net-http",
			}
			switch mode {
			case "untrusted":
				opts.RealIP = realip.HeaderOptions{Trusted: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}
			case "trusted", "trusted-varying", "trusted-net-http":
				opts.RealIP = realip.HeaderOptions{Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32"), netip.MustParsePrefix("10.0.0.0/8")}}
			}
			p, err := gateway.New(opts)
			if err != nil {
				b.Fatal(err)
			}
			if err := p.Start(context.Background()); err != nil {
				b.Fatal(err)
			}
			defer p.Shutdown(context.Background())
			d := net.Dialer{LocalAddr: balancer}
			c, err := d.Dial("tcp", p.HTTPAddr())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			br := bufio.NewReader(c)
			reqs := make([][]byte, 256)
			for i := range reqs {
				xff := "203.0.113.7, 10.0.0.1"
				if mode == "trusted-varying" {
					xff = fmt.Sprintf("203.0.113.%d, 10.0.0.1", i)
				}
				if mode == "off" {
					xff = "203.0.113.7, 10.0.0.1" // sent, not read
				}
				reqs[i] = []byte("GET /x HTTP/1.1\r\nHost: a.test\r\nX-Forwarded-For: " + xff + "\r\n\r\n")
			}
			i := 0
			one := func() {
				c.Write(reqs[i%len(reqs)])
				i++
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			for range 1000 { // a miss, then warm hits
				one()
			}
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := testutil.ProcessCPU()
			for range b.N {
				one()
			}
			b.ReportMetric(float64(testutil.ProcessCPU()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}
