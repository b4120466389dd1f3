package plugin_test

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/meridian-edge/meridian/gateway"
	"github.com/meridian-edge/meridian/gateway/cache"
	gworigin "github.com/meridian-edge/meridian/gateway/origin"
	"github.com/meridian-edge/meridian/internal/testutil"
	"github.com/meridian-edge/meridian/middleware/plugin"
	"github.com/meridian-edge/meridian/plugins"
)

// BenchmarkL1HitWrk serves the same L1 hit over a loopback socket with no
// plugin, with the raw-wasm no-op (wat/continue: the host's own cost), the
// Go no-op, and the header-injection plugin in Go and in AssemblyScript on
// the native engine, and the Go header plugin on the go-sdk for the ratio,
// and drives each for a few seconds with wrk (apt-get install wrk).
// req/s is what wrk measured (wrk runs on the same machine, so it competes
// for the cores); server-cpu-ns/req is the PoP process's CPU time per
// request served, and x-none that over the first no-plugin run's.
//
//	go test -run '^$' -bench L1HitWrk -benchtime 1x ./middleware/plugin/
func BenchmarkL1HitWrk(b *testing.B) {
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		b.Fatal("wrk is needed for this benchmark (apt-get install wrk)")
	}
	site := benchSite(b)
	hosts := benchHosts(b)
	var noneCPU float64
	for _, run := range []struct{ engine, plugin string }{
		{"", ""}, {"native", "wat/continue"}, {"native", "noop"}, {"native", "headers"}, {"native", "as-headers"},
		{"sdk", "headers"}, {"", ""},
	} {
		var chain *plugins.Chain
		h := hosts["native"]
		name := "none"
		if run.plugin != "" {
			h, name = hosts[run.engine], run.engine+"/"+run.plugin
			chain = &plugins.Chain{Site: "shop", Entries: []plugins.Entry{{Plugin: run.plugin, Config: map[string]string{
				"request": "X-Site: shop", "response": "X-Frame-Options: DENY"}}}}
		}
		r := chi.NewRouter()
		r.Use(plugin.New(plugin.Options{Host: h, PoP: "fra1", Chain: func(*http.Request) *plugins.Chain { return chain }}))
		r.Handle("/*", site)
		srv := httptest.NewServer(r)
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				reportWrk(b, wrk, srv.URL+"/object", run.plugin == "", &noneCPU)
			}
		})
		srv.Close()
	}
}

// BenchmarkPoPHitWrk is BenchmarkL1HitWrk through a whole PoP
// (gateway.PoP: its fast hit path, access observers and metrics), the
// plugins running as the fast path's hooks (gateway.Options.PluginHooks):
// what a site owner's plugin costs on a PoP's hit, against the same hit of
// the site without plugins.
//
//	go test -run '^$' -bench PoPHitWrk -benchtime 1x ./middleware/plugin/
func BenchmarkPoPHitWrk(b *testing.B) {
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		b.Fatal("wrk is needed for this benchmark (apt-get install wrk)")
	}
	hosts := benchHosts(b)
	var noneCPU float64
	for _, run := range []struct {
		engine, plugin string
		noHooks        bool // the plugin site through net/http, as before the fast path ran hooks
	}{
		{"", "", false}, {"native", "wat/continue", false}, {"native", "wat/headers", false}, {"native", "noop", false}, {"native", "headers", false},
		{"native", "as-headers", false}, {"native", "as-headers", true}, {"sdk", "headers", false}, {"", "", false},
	} {
		var chain *plugins.Chain
		h := hosts["native"]
		name := "none"
		if run.plugin != "" {
			h, name = hosts[run.engine], run.engine+"/"+run.plugin
			if run.noHooks {
				name += "/net-http"
			}
			chain = &plugins.Chain{Site: "shop", Entries: []plugins.Entry{{Plugin: run.plugin, Config: map[string]string{
				"request": "X-Site: shop", "response": "X-Frame-Options: DENY"}}}}
		}
		addr := benchPoP(b, h, chain, !run.noHooks)
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				reportWrk(b, wrk, "http://"+addr+"/object", run.plugin == "", &noneCPU)
			}
		})
	}
}

// benchPoP starts a PoP (stopped when b ends) whose site "shop" answers any
// Host from the origin of benchSite, with chain run by h, on the fast path
// when hooks is set; it returns the PoP's HTTP address.
func benchPoP(b testing.TB, h *plugins.Host, chain *plugins.Chain, hooks bool) string {
	b.Helper()
	u, _ := url.Parse(benchOrigin(b).URL)
	pool, err := gworigin.New(gworigin.Options{Site: "shop", Servers: []gworigin.Server{{URL: u}}})
	if err != nil {
		b.Fatal(err)
	}
	rn := plugin.NewRunner(plugin.Options{Host: h, PoP: "fra1", Chain: func(*http.Request) *plugins.Chain { return chain }})
	var fast func(string) cache.FastHooks
	if hooks {
		fast = func(string) cache.FastHooks { return rn.FastHooks(func() *plugins.Chain { return chain }) }
	}
	p, err := gateway.New(gateway.Options{
		ID: "fra1", HTTPAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		Sites:       []gateway.Site{{Name: "shop", Hosts: []string{"127.0.0.1"}, Origin: pool}},
		Plugins:     rn.Middleware,
		PluginHooks: fast,
		PluginSites: func(string) bool { return chain != nil },
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = p.Shutdown(context.Background()) })
	return p.HTTPAddr()
}

// hitClient sends GET /object on one keep-alive connection and reads each
// response into a reused buffer.
type hitClient struct {
	conn net.Conn
	req  []byte
	buf  []byte
}

func dialHit(b testing.TB, addr string) *hitClient {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	return &hitClient{conn: c, req: []byte("GET /object HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"), buf: make([]byte, 8<<10)}
}

func (c *hitClient) close() { c.conn.Close() }

// get sends the request and reads one response with a Content-Length.
func (c *hitClient) get(b testing.TB) {
	if _, err := c.conn.Write(c.req); err != nil {
		b.Fatal(err)
	}
	n := 0
	for {
		m, err := c.conn.Read(c.buf[n:])
		if err != nil {
			b.Fatal(err)
		}
		n += m
		head := bytes.Index(c.buf[:n], []byte("\r\n\r\n"))
		if head < 0 {
			continue
		}
		if !bytes.HasPrefix(c.buf, []byte("HTTP/1.1 200 ")) {
			b.Fatalf("response %q", c.buf[:n])
		}
		i := bytes.Index(c.buf[:head], []byte("Content-Length: "))
		if i < 0 {
			b.Fatalf("no Content-Length: %q", c.buf[:head])
		}
		j := i + len("Content-Length: ")
		k := bytes.IndexByte(c.buf[j:head+2], '\r')
		size, err := strconv.Atoi(string(c.buf[j : j+k]))
		if err != nil {
			b.Fatal(err)
		}
		if n >= head+4+size {
			return
		}
	}
}

var (
	wrkRequests = regexp.MustCompile(`(\d+) requests in`)
	wrkRPS      = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
)

// reportWrk measures target (measureWrk) and reports req/s, the server's
// CPU per request, and that over *noneCPU, the first no-plugin run's
// (which a run with none set records).
func reportWrk(b *testing.B, wrk, target string, none bool, noneCPU *float64) {
	rps, perReq := measureWrk(b, wrk, target)
	b.ReportMetric(rps, "req/s")
	b.ReportMetric(perReq, "server-cpu-ns/req")
	if none && *noneCPU == 0 {
		*noneCPU = perReq
	}
	if *noneCPU > 0 {
		b.ReportMetric(perReq / *noneCPU, "x-none")
	}
}

// wrkConns is wrk's connection flag: 8 connections, or MERIDIAN_WRK_CONNS
// (the plugin figures are also quoted at 64, where batching makes a plain
// hit cheaper and a plugin call dearer).
func wrkConns(b *testing.B) string {
	c := os.Getenv("MERIDIAN_WRK_CONNS")
	if c == "" {
		return "-c8"
	}
	if n, err := strconv.Atoi(c); err != nil || n < 1 {
		b.Fatalf("MERIDIAN_WRK_CONNS=%q: want a positive number of connections", c)
	}
	return "-c" + c
}

// wrkCommand runs wrk, on CPU MERIDIAN_WRK_CPU when that is set (through
// taskset). With the test binary itself under taskset on another CPU, the
// server and the load generator no longer share cores (the peers' pinned
// setup; Go then runs the server with GOMAXPROCS 1):
//
//	go test -c -o /tmp/plugin.test ./middleware/plugin/
//	cd middleware/plugin && MERIDIAN_WRK_CPU=0 taskset -c 1 /tmp/plugin.test -test.run '^$' -test.bench PoPHitWrk -test.benchtime 1x
func wrkCommand(b *testing.B, wrk string, args ...string) *exec.Cmd {
	c := os.Getenv("MERIDIAN_WRK_CPU")
	if c == "" {
		return exec.Command(wrk, args...)
	}
	if n, err := strconv.Atoi(c); err != nil || n < 0 {
		b.Fatalf("MERIDIAN_WRK_CPU=%q: want a CPU number", c)
	}
	taskset, err := exec.LookPath("taskset")
	if err != nil {
		b.Fatal("MERIDIAN_WRK_CPU needs taskset (apt-get install util-linux)")
	}
	return exec.Command(taskset, append([]string{"-c", c, wrk}, args...)...)
}

// measureWrk warms target up, then drives it with wrk for a few seconds:
// wrk's req/s, and the process's CPU time per request served.
func measureWrk(b *testing.B, wrk, target string) (rps, cpuPerReq float64) {
	b.Helper()
	if resp, err := http.Get(target); err != nil || resp.StatusCode != 200 {
		b.Fatalf("warm-up: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	// Warm the instances wrk's connections will use (each new Go instance
	// grows its memory until its heap's first collections, some 130000
	// requests in; see BenchmarkL1HitEngines): the measured run is the
	// steady state.
	conns := wrkConns(b)
	if out, err := wrkCommand(b, wrk, "-t1", conns, "-d4s", target).CombinedOutput(); err != nil {
		b.Fatalf("wrk warm-up: %v\n%s", err, out)
	}
	cpu0 := testutil.ProcessCPU()
	out, err := wrkCommand(b, wrk, "-t1", conns, "-d3s", target).CombinedOutput()
	cpu := testutil.ProcessCPU() - cpu0
	if err != nil {
		b.Fatalf("wrk: %v\n%s", err, out)
	}
	n, _ := strconv.ParseFloat(string(wrkRequests.FindSubmatch(out)[1]), 64)
	rps, _ = strconv.ParseFloat(string(wrkRPS.FindSubmatch(out)[1]), 64)
	return rps, float64(cpu.Nanoseconds()) / n
}

// BenchmarkPoPHit is BenchmarkPoPHitWrk in process: one keep-alive client
// sends the requests back to back, so -benchmem counts the allocations of
// a PoP hit (the client's own are a few reads into a reused buffer); ns/op
// is the round trip, cpu-ns/op the process's CPU (client included).
//
//	go test -run '^$' -bench 'PoPHit$' -benchmem ./middleware/plugin/
func BenchmarkPoPHit(b *testing.B) {
	hosts := benchHosts(b)
	for _, name := range []string{"none", "wat/continue", "wat/headers", "noop", "headers", "as-headers"} {
		b.Run(name, func(b *testing.B) {
			var chain *plugins.Chain
			if name != "none" {
				chain = &plugins.Chain{Site: "shop", Entries: []plugins.Entry{{Plugin: name, Config: map[string]string{
					"request": "X-Site: shop", "response": "X-Frame-Options: DENY"}}}}
			}
			addr := benchPoP(b, hosts["native"], chain, true)
			c := dialHit(b, addr)
			defer c.close()
			// Warm the stored object and the instance: a Go instance grows
			// its memory until its heap's first collections, some 130000
			// requests in (see BenchmarkL1HitWrk).
			for range 150000 {
				c.get(b)
			}
			b.ReportAllocs()
			cpu0 := testutil.ProcessCPU()
			for b.Loop() {
				c.get(b)
			}
			b.ReportMetric(float64((testutil.ProcessCPU()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
	}
}
