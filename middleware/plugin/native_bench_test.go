package plugin_test

import (
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/meridian-edge/meridian/internal/testutil"
	"github.com/meridian-edge/meridian/middleware/plugin"
	"github.com/meridian-edge/meridian/plugins"
)

// BenchmarkL1HitEngines is BenchmarkL1Hit on both plugin engines in one
// run: the same L1 hit through chi, the plugin middleware and the cache,
// with no plugin, a no-op in raw wasm (wat/continue: the host's own cost),
// the Go no-op plugin and the header-injection plugin in Go (headers) and
// in AssemblyScript (as-headers, same config), on the go-sdk and on the
// native engine. With -cpu 1, ns/op is the time per request on one core;
// cpu-ns/op is the process CPU time per request (user + system, all
// goroutines), which a busy shared machine does not inflate. x-none is
// cpu-ns/op over that of the no-plugin hit measured first in the same run
// (the target for headers: at most 1.11, i.e. within 10% of its
// requests/s). Each case is warmed first, 10000 requests on the go-sdk and
// 200000 on the native engine and without plugins (the first case of the
// process measured 15% slower after 10000: x-none looked better than it
// is): a Go plugin's linear memory grows from 3 to
// 7.7 MB once, in 512 KiB steps, until its heap's first collections (after
// some 130000 requests with the kit's 100 bytes of garbage per request),
// and each growth copies the whole memory; that one-off cost is not what a
// request costs.
//
//	go test -run '^$' -bench L1HitEngines -benchmem -cpu 1 -benchtime 5000x ./middleware/plugin/
func BenchmarkL1HitEngines(b *testing.B) {
	site := benchSite(b)
	hosts := benchHosts(b)
	chains := map[string]*plugins.Chain{
		"none":     nil,
		"wat-noop": {Site: "shop", Entries: []plugins.Entry{{Plugin: "wat/continue"}}},
		"noop":     {Site: "shop", Entries: []plugins.Entry{{Plugin: "noop"}}},
		"headers": {Site: "shop", Entries: []plugins.Entry{{Plugin: "headers", Config: map[string]string{
			"request": "X-Site: shop", "response": "X-Frame-Options: DENY"}}}},
		"as-headers": {Site: "shop", Entries: []plugins.Entry{{Plugin: "as-headers", Config: map[string]string{
			"request": "X-Site: shop", "response": "X-Frame-Options: DENY"}}}},
	}
	var noneCPU float64 // cpu-ns/op of the first no-plugin run
	run := func(engName, chainName string) {
		chain := chains[chainName]
		r := chi.NewRouter()
		r.Use(plugin.New(plugin.Options{Host: hosts[engName], PoP: "fra1", Chain: func(*http.Request) *plugins.Chain { return chain }}))
		r.Handle("/*", site)
		req := httptest.NewRequest("GET", "http://shop.example/object", nil)
		req.RemoteAddr = "192.0.2.1:1234"
		name := engName + "/" + chainName
		if chain == nil {
			name = chainName
		}
		// The warm-up runs inside the sub-benchmark so that -bench can pick
		// one case (for a CPU profile of it alone); b.Loop starts the timer
		// and the allocation count after it.
		b.Run(name, func(b *testing.B) {
			warm := 10000
			if engName == "native" || chain == nil {
				warm = 200000
			}
			for range warm { // fill L1, warm the instance (see above)
				w := httptest.NewRecorder()
				r.ServeHTTP(w, req)
				if w.Code != 200 {
					b.Fatalf("%s: warm-up got %d", chainName, w.Code)
				}
			}
			// Collect the garbage of earlier cases (a go-sdk case makes
			// about 1 GB) so that its collection is not billed to this one.
			runtime.GC()
			b.ReportAllocs()
			cpu0 := testutil.ProcessCPU()
			for b.Loop() {
				w := httptest.NewRecorder()
				r.ServeHTTP(w, req)
				if w.Code != 200 || !strings.Contains(w.Header().Get("Cache-Status"), "; hit;") {
					b.Fatalf("not a hit: %d %v", w.Code, w.Header())
				}
				if (chainName == "headers" || chainName == "as-headers") && w.Header().Get("X-Frame-Options") != "DENY" {
					b.Fatalf("header plugin did not run: %v", w.Header())
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
			cpu := float64(testutil.ProcessCPU()-cpu0) / float64(b.N)
			b.ReportMetric(cpu, "cpu-ns/op")
			if chain == nil && noneCPU == 0 && b.N >= 100 {
				noneCPU = cpu
			}
			if noneCPU > 0 {
				b.ReportMetric(cpu/noneCPU, "x-none")
			}
		})
	}
	run("sdk", "none")
	for _, e := range []string{"sdk", "native"} {
		for _, ch := range []string{"wat-noop", "noop", "headers", "as-headers"} {
			run(e, ch)
		}
	}
	run("sdk", "none") // again: the machine is shared, so bracket the plugin runs
}
