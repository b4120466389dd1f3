// Command cacheproxy is the PoP's cache and origin pool in front of one
// origin, for the peer benchmark in ../shared/bench/proxy (nginx, Varnish):
//
//	go build -o /tmp/cacheproxy ./bench/cacheproxy && /tmp/cacheproxy -listen 127.0.0.1:8090 &
//	cd ../shared/bench/proxy && ./bench.sh --target ours=http://127.0.0.1:8090@$! --anchor both --start-origin
//
// GET /__mem reports the Go heap, for the memory-per-object figure.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"time"

	"github.com/meridian-edge/meridian/gateway/cache"
	"github.com/meridian-edge/meridian/gateway/origin"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8090", "")
	originURL := flag.String("origin", "http://127.0.0.1:9000", "")
	prof := flag.String("cpuprofile", "", "")
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
	c, err := cache.New(cache.Options{L1Bytes: 1 << 30})
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
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		fmt.Fprintf(w, "heapAlloc=%dMiB heapInuse=%dMiB heapIdle=%dMiB released=%dMiB sys=%dMiB numGC=%d\n", ms.HeapAlloc>>20, ms.HeapInuse>>20, ms.HeapIdle>>20, ms.HeapReleased>>20, ms.Sys>>20, ms.NumGC)
	})
	mux.Handle("/", h)
	srv := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(srv.ListenAndServe())
}
