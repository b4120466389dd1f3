// Command cacheproxy is the PoP's cache and origin pool in front of one
// origin, for the peer benchmark in ../shared/bench/proxy (nginx, Varnish):
//
//	go build -o /tmp/cacheproxy ./bench/cacheproxy && taskset -c 1 /tmp/cacheproxy -prealloc -listen 127.0.0.1:8090 &
//	cd ../shared/bench/proxy && ./bench.sh --target ours=http://127.0.0.1:8090@$! --anchor both --start-origin --pin 0:1
//
// It serves like a PoP configured as package cache's doc recommends: fresh
// hits answered by Cache.Fast (-no-fast serves everything through net/http),
// the listener wrapped by cache.Coalesce (-no-coalesce turns it off, with
// -no-fast) and, with
// -prealloc, L1's queues reserved up front and the collector set by
// cache.GCPercent.
//
// GET /__mem reports the Go heap, for the memory-per-object figure (?gc runs a
// collection first, so HeapAlloc is the live heap).
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"time"

	"github.com/meridian-edge/meridian/gateway/cache"
	"github.com/meridian-edge/meridian/gateway/origin"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8090", "")
	originURL := flag.String("origin", "http://127.0.0.1:9000", "")
	prof := flag.String("cpuprofile", "", "write a CPU profile here until SIGINT")
	l1Bytes := flag.Int64("l1", 1<<30, "L1 budget in bytes")
	prealloc := flag.Bool("prealloc", false, "reserve L1's queues up front (cache.Options.L1Preallocate)")
	noCoalesce := flag.Bool("no-coalesce", false, "serve without cache.Coalesce (header and body in separate writes)")
	noFast := flag.Bool("no-fast", false, "serve every request through net/http (no Cache.Fast hit path)")
	flag.Parse()
	u, err := url.Parse(*originURL)
	if err != nil {
		log.Fatal(err)
	}
	pool, err := origin.New(origin.Options{Site: "bench", Servers: []origin.Server{{URL: u}},
		ConnectTimeout: 2 * time.Second, HeaderTimeout: 10 * time.Second, TotalTimeout: 60 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	if *prealloc && os.Getenv("GOGC") == "" {
		pct := cache.GCPercent(*l1Bytes) // what a PoP process does at start
		debug.SetGCPercent(pct)
		log.Printf("GOGC=%d", pct)
	}
	c, err := cache.New(cache.Options{L1Bytes: *l1Bytes, L1Preallocate: *prealloc})
	if err != nil {
		log.Fatal(err)
	}
	if *prof != "" {
		f, err := os.Create(*prof)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		go func() {
			ch := make(chan os.Signal, 1)
			signal.Notify(ch, os.Interrupt)
			<-ch
			pprof.StopCPUProfile()
			f.Close()
			os.Exit(0)
		}()
	}
	h := c.Handler(cache.SitePolicy{SiteID: "bench"}, pool)
	mux := http.NewServeMux()
	mux.HandleFunc("/__mem", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("gc") {
			runtime.GC() // live heap only
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		fmt.Fprintf(w, "heapAlloc=%dMiB heapInuse=%dMiB heapIdle=%dMiB released=%dMiB sys=%dMiB numGC=%d\n", ms.HeapAlloc>>20, ms.HeapInuse>>20, ms.HeapIdle>>20, ms.HeapReleased>>20, ms.Sys>>20, ms.NumGC)
	})
	mux.Handle("/", h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	switch {
	case !*noFast:
		// The fast path answers fresh hits; /__mem and everything else go
		// to the mux.
		ln = c.Fast(srv, ln, cache.FastOptions{Route: func(string) http.Handler { return h }})
	case !*noCoalesce:
		ln = cache.Coalesce(srv, ln)
	}
	log.Fatal(srv.Serve(ln))
}
