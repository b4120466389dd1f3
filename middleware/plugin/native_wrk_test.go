package plugin_test

import (
	"net/http"
	"net/http/httptest"
	"os/exec"
	"regexp"
	"strconv"
	"testing"

	"github.com/go-chi/chi/v5"

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
	reqs := regexp.MustCompile(`(\d+) requests in`)
	rps := regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
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
				if resp, err := http.Get(srv.URL + "/object"); err != nil || resp.StatusCode != 200 {
					b.Fatalf("warm-up: %v %v", resp, err)
				} else {
					resp.Body.Close()
				}
				// Warm the instances wrk's connections will use (each new
				// Go instance grows its memory until its heap's first
				// collections, some 130000 requests in; see
				// BenchmarkL1HitEngines): the measured run is the steady
				// state.
				if out, err := exec.Command(wrk, "-t1", "-c8", "-d4s", srv.URL+"/object").CombinedOutput(); err != nil {
					b.Fatalf("wrk warm-up: %v\n%s", err, out)
				}
				cpu0 := processCPU(b)
				out, err := exec.Command(wrk, "-t1", "-c8", "-d3s", srv.URL+"/object").CombinedOutput()
				cpu := processCPU(b) - cpu0
				if err != nil {
					b.Fatalf("wrk: %v\n%s", err, out)
				}
				n, _ := strconv.ParseFloat(string(reqs.FindSubmatch(out)[1]), 64)
				r, _ := strconv.ParseFloat(string(rps.FindSubmatch(out)[1]), 64)
				b.ReportMetric(r, "req/s")
				perReq := float64(cpu.Nanoseconds()) / n
				b.ReportMetric(perReq, "server-cpu-ns/req")
				if run.plugin == "" && noneCPU == 0 {
					noneCPU = perReq
				}
				if noneCPU > 0 {
					b.ReportMetric(perReq/noneCPU, "x-none")
				}
			}
		})
		srv.Close()
	}
}
