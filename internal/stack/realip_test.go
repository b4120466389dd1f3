package stack_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/internal/config"
	"github.com/meridian-edge/meridian/internal/stack"
	"github.com/pires/go-proxyproto"
)

// TestProxyProtocolFromConfig: a PoP configured with proxy_protocol, as ops
// write it, takes the client's address from a trusted balancer's header
// (the origin's X-Forwarded-For shows it), refuses a header from anyone
// else and counts it on its /metrics, and refuses a reload that changes the
// section (the listeners are wrapped at start).
func TestProxyProtocolFromConfig(t *testing.T) {
	xff := make(chan string, 4)
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		xff <- r.Header.Get("X-Forwarded-For")
		io.WriteString(w, "hello")
	}))
	defer origin.Close()
	text := fmt.Sprintf(`data_dir: %s
nats:
  embedded:
    listen: 127.0.0.1:0
pops:
  - id: edge-1
    region: us-east-1
    http: 127.0.0.1:0
    admin: 127.0.0.1:0
    addresses: [127.0.0.1]
    proxy_protocol:
      trusted: [127.0.0.2]
      required: true
sites:
  - name: www
    hosts: [www.example.test]
    origins:
      - url: %s
`, t.TempDir(), origin.URL)
	cfg, err := config.Parse("pop.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	st, err := stack.Start(context.Background(), cfg, stack.Roles{PoPs: []string{"edge-1"}}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st.Shutdown(ctx)
	}()
	pop := st.PoP("edge-1")

	request := func(from net.IP, client string) (*http.Response, error) {
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: from}}
		c, err := d.Dial("tcp", pop.HTTPAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		src, _ := net.ResolveTCPAddr("tcp", client)
		if _, err := proxyproto.HeaderProxyFromAddrs(2, src, c.LocalAddr()).WriteTo(c); err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: www.example.test\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		return resp, err
	}
	resp, err := request(net.IPv4(127, 0, 0, 2), "203.0.113.9:40000")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("through the balancer: %v %v", resp, err)
	}
	if got := <-xff; got != "203.0.113.9" {
		t.Errorf("origin saw X-Forwarded-For %q, want the header's 203.0.113.9", got)
	}
	if resp, err := request(net.IPv4(127, 0, 0, 1), "198.51.100.1:1"); err == nil {
		t.Fatalf("a header from an untrusted peer was served: %s", resp.Status)
	}
	mresp, err := http.Get("http://" + pop.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	if want := `meridian_proxy_protocol_rejected_total{pop="edge-1",reason="untrusted"} 1`; !strings.Contains(string(metrics), want) {
		t.Errorf("/metrics lacks %s", want)
	}

	next, err := config.Parse("pop.yaml", []byte(strings.Replace(text, "required: true", "required: false", 1)))
	if err != nil {
		t.Fatal(err)
	}
	next.PoPs[0].HTTP, next.PoPs[0].Admin = cfg.PoPs[0].HTTP, cfg.PoPs[0].Admin
	next.DataDir, next.NATS = cfg.DataDir, cfg.NATS
	if err := st.Reload(next); err == nil || !strings.Contains(err.Error(), "proxy_protocol cannot change live") {
		t.Errorf("reload changing proxy_protocol: %v, want a refusal naming it", err)
	}
}
