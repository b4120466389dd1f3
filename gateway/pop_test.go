package gateway_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway"
	"github.com/meridian-edge/meridian/gateway/origin"
	"github.com/meridian-edge/meridian/internal/beacon"
	"github.com/meridian-edge/meridian/internal/testutil"
	"github.com/meridian-edge/meridian/middleware"
)

func hash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

func pool(t *testing.T, site, rawURL string, header time.Duration) *origin.Pool {
	u, _ := url.Parse(rawURL)
	p, err := origin.New(origin.Options{Site: site, Servers: []origin.Server{{URL: u}}, HeaderTimeout: header})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// namedOrigin answers with its name and what it saw, so a test can tell which
// origin served a request.
func namedOrigin(t *testing.T, name string) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Origin", name)
		w.Header().Add("Set-Cookie", "a=1")
		w.Header().Add("Set-Cookie", "b=2")
		io.WriteString(w, name+" "+r.Host+" "+r.URL.RequestURI()+" xff="+r.Header.Get("X-Forwarded-For")+" via="+r.Header.Get("Via"))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func startPoP(t *testing.T, opts gateway.Options) *gateway.PoP {
	t.Helper()
	if opts.ID == "" {
		opts.ID = "test-pop"
	}
	opts.HTTPAddr, opts.AdminAddr = "127.0.0.1:0", "127.0.0.1:0"
	p, err := gateway.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Shutdown(ctx)
	})
	return p
}

func do(t *testing.T, method, addr, host, path string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+addr+path, nil)
	req.Host = host
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body)
}

func TestRoutingByHost(t *testing.T) {
	a, b, fb := namedOrigin(t, "A"), namedOrigin(t, "B"), namedOrigin(t, "FALLBACK")
	p := startPoP(t, gateway.Options{Sites: []gateway.Site{
		{Name: "a", Hosts: []string{"a.example.test"}, Origin: pool(t, "a", a.URL, 0)},
		{Name: "b", Hosts: []string{"b.example.test", "*.b.example.test"}, Origin: pool(t, "b", b.URL, 0)},
	}})
	cases := []struct {
		host, wantPrefix string
		status           int
	}{
		{"a.example.test", "A a.example.test /x?q=1", 200},
		{"A.Example.TEST:8080", "A A.Example.TEST:8080 /x?q=1", 200}, // case and port ignored; Host passed as sent
		{"a.example.test.", "A ", 200},                               // trailing dot
		{"b.example.test", "B ", 200},
		{"img.b.example.test", "B ", 200}, // wildcard
		{"deep.img.b.example.test", "421 Misdirected Request from PoP meridian-test-pop: no site is configured", 421}, // wildcard is one label
		{"evil.test", `421 Misdirected Request from PoP meridian-test-pop: no site is configured for host "evil.test" at this PoP`, 421},
	}
	for _, c := range cases {
		resp, body := do(t, "GET", p.HTTPAddr(), c.host, "/x?q=1")
		if resp.StatusCode != c.status || !strings.HasPrefix(body, c.wantPrefix) {
			t.Errorf("Host %s: %d %q; want %d %q...", c.host, resp.StatusCode, body, c.status, c.wantPrefix)
		}
	}

	// With a default site, unknown hosts go there instead.
	p2 := startPoP(t, gateway.Options{Sites: []gateway.Site{
		{Name: "a", Hosts: []string{"a.example.test"}, Origin: pool(t, "a", a.URL, 0)},
		{Name: "fb", Default: true, Origin: pool(t, "fb", fb.URL, 0)},
	}})
	if resp, body := do(t, "GET", p2.HTTPAddr(), "other.test", "/"); resp.StatusCode != 200 || !strings.HasPrefix(body, "FALLBACK") {
		t.Errorf("default site: %d %q", resp.StatusCode, body)
	}
}

func TestProxyHeaders(t *testing.T) {
	a := namedOrigin(t, "A")
	p := startPoP(t, gateway.Options{ID: "tokyo", Sites: []gateway.Site{{Name: "a", Hosts: []string{"a.example.test"}, Origin: pool(t, "a", a.URL, 0)}}})
	req, _ := http.NewRequest("GET", "http://"+p.HTTPAddr()+"/", nil)
	req.Host = "a.example.test"
	req.Header.Set("X-Forwarded-For", "192.0.2.7")
	req.Header.Set("Connection", "X-Secret")
	req.Header.Set("X-Secret", "hop-by-hop")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "xff=192.0.2.7, 127.0.0.1") {
		t.Errorf("X-Forwarded-For not appended: %s", body)
	}
	if !strings.Contains(string(body), "via=1.1 meridian-tokyo") || resp.Header.Get("Via") != "1.1 meridian-tokyo" {
		t.Errorf("Via missing: body %s, response Via %q", body, resp.Header.Get("Via"))
	}
	if got := resp.Header.Values("Set-Cookie"); len(got) != 2 {
		t.Errorf("repeated origin headers not passed through: %v", got)
	}
	if resp.Header.Get("X-Request-Id") == "" {
		t.Error("no X-Request-Id on the response")
	}
}

func TestOriginFailures(t *testing.T) {
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	defer hang.Close()
	defer close(release)
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "http://" + l.Addr().String()
	l.Close()

	p := startPoP(t, gateway.Options{Sites: []gateway.Site{
		{Name: "hang", Hosts: []string{"hang.test"}, Origin: pool(t, "hang", hang.URL, 200*time.Millisecond)},
		{Name: "dead", Hosts: []string{"dead.test"}, Origin: pool(t, "dead", dead, 0)},
	}})
	if resp, body := do(t, "GET", p.HTTPAddr(), "hang.test", "/"); resp.StatusCode != 504 || !strings.Contains(body, "did not answer in time") {
		t.Errorf("hanging origin: %d %q", resp.StatusCode, body)
	}
	if resp, body := do(t, "GET", p.HTTPAddr(), "dead.test", "/"); resp.StatusCode != 502 || !strings.Contains(body, "refused or reset the connection") {
		t.Errorf("dead origin: %d %q", resp.StatusCode, body)
	}
	if resp, _ := do(t, "GET", p.HTTPAddr(), "nosuch.test", "/"); resp.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("unknown host: %d", resp.StatusCode)
	}
	// The PoP's request metrics name it, and count what it answered itself
	// apart from what origins sent. A request is counted after its response
	// is sent, so the client can get here first: wait for the last one.
	testutil.WaitFor(t, "the three requests counted", func() bool {
		return testutil.MetricSum(t, p.Registry(), "meridian_http_requests_total", map[string]string{"pop": "test-pop"}) >= 3
	})
	for _, c := range []struct {
		labels map[string]string
		want   float64
	}{
		{map[string]string{"pop": "test-pop", "site": "hang", "code": "504", "reason": "origin-timeout"}, 1},
		{map[string]string{"pop": "test-pop", "site": "dead", "code": "502", "reason": "origin-unreachable"}, 1},
		{map[string]string{"pop": "test-pop", "site": middleware.UnknownSite, "code": "421", "reason": "unknown-host"}, 1},
	} {
		if n := testutil.MetricSum(t, p.Registry(), "meridian_http_responses_generated_total", c.labels); n != c.want {
			t.Errorf("meridian_http_responses_generated_total%v = %v, want %v", c.labels, n, c.want)
		}
	}
	if n := testutil.MetricSum(t, p.Registry(), "meridian_http_requests_total", map[string]string{"pop": "test-pop"}); n != 3 {
		t.Errorf("meridian_http_requests_total{pop=\"test-pop\"} = %v, want 3", n)
	}
}

func TestAdminAndBeacons(t *testing.T) {
	nsrv := testutil.StartNATS(t)
	nc := testutil.Connect(t, nsrv)
	sub := testutil.Connect(t, nsrv)
	got := make(chan beacon.Beacon, 16)
	s, err := beacon.Subscribe(sub, func(b beacon.Beacon) { got <- b }, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Unsubscribe()
	sub.Flush()

	a := namedOrigin(t, "A")
	creds, err := gateway.NewCredentials(hash("ops-token"), map[string]string{"a": hash("site-a-token")})
	if err != nil {
		t.Fatal(err)
	}
	p := startPoP(t, gateway.Options{ID: "tokyo", Region: "ap-northeast-1", Capacity: 100, NATS: nc, BeaconInterval: 50 * time.Millisecond, Credentials: creds,
		Sites: []gateway.Site{{Name: "a", Hosts: []string{"a.example.test"}, Origin: pool(t, "a", a.URL, 0)}}})

	next := func() beacon.Beacon {
		select {
		case b := <-got:
			return b
		case <-time.After(5 * time.Second):
			t.Fatal("no beacon")
		}
		return beacon.Beacon{}
	}
	if b := next(); b.PoP != "tokyo" || b.Region != "ap-northeast-1" || !b.Healthy || b.Capacity != 100 {
		t.Fatalf("beacon %+v", b)
	}

	if resp, body := do(t, "GET", p.AdminAddr(), "", "/healthz"); resp.StatusCode != 200 || body != "ok\n" {
		t.Fatalf("healthz: %d %q", resp.StatusCode, body)
	}
	do(t, "GET", p.HTTPAddr(), "a.example.test", "/")
	// The request is counted after its response is sent, so the client can
	// get here first: wait for the count, boundedly.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		_, body := do(t, "GET", p.AdminAddr(), "", "/metrics")
		if strings.Contains(body, `meridian_http_requests_total{code="2xx",method="GET",pop="tokyo",site="a"} 1`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics lack the request:\n%s", body)
		}
	}
	for _, c := range []struct {
		token string
		want  int
	}{{"", 401}, {"wrong", 401}, {"site-a-token", 403}, {"ops-token", 204}} {
		req, _ := http.NewRequest("POST", "http://"+p.AdminAddr()+"/admin/drain", nil)
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Fatalf("drain with token %q: %d, want %d", c.token, resp.StatusCode, c.want)
		}
		if c.want != 204 {
			if resp, _ := do(t, "GET", p.AdminAddr(), "", "/healthz"); resp.StatusCode != 200 {
				t.Fatalf("refused drain still drained the PoP: healthz %d", resp.StatusCode)
			}
		}
	}
	if resp, _ := do(t, "GET", p.AdminAddr(), "", "/healthz"); resp.StatusCode != 503 {
		t.Fatalf("healthz while draining: %d", resp.StatusCode)
	}
	// A beacon after the drain says unhealthy.
	deadline := time.After(5 * time.Second)
	for {
		select {
		case b := <-got:
			if !b.Healthy {
				return
			}
		case <-deadline:
			t.Fatal("no unhealthy beacon after drain")
		}
	}
}

func TestH2C(t *testing.T) {
	a := namedOrigin(t, "A")
	p := startPoP(t, gateway.Options{Sites: []gateway.Site{{Name: "a", Hosts: []string{"a.example.test"}, Origin: pool(t, "a", a.URL, 0)}}})
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest("GET", "http://"+p.HTTPAddr()+"/", nil)
	req.Host = "a.example.test"
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Proto != "HTTP/2.0" || !strings.HasPrefix(string(body), "A ") {
		t.Fatalf("h2c: %s %q", resp.Proto, body)
	}
}
