// Command l2proxy is the PoP's HTTP cache serving every hit from the L2 disk
// tier (no L1), in front of one origin, for the L2-hit figure of issue 6
// against nginx proxy_cache on disk (../shared/bench/proxy).
//
// Reproduce the ratio (requests per proxy CPU-second, ours ÷ nginx, in one
// interleaved run, both caches on the same disk, with the bare net/http
// floor beside them):
//
//	bench/l2proxy/compare.sh --reps 3 --dur 4
//
// compare.sh builds this command and the peer's goproxy, starts its own
// origin, nginx and proxies on ports 18190–18193 (bench.sh's own nginx
// anchor always takes :18081, which another run may hold), runs
// ../shared/bench/proxy/bench.sh --tests hit --sizes "16k 1m", prints the
// ratios and deletes the cache directories. By hand:
//
//	go build -o /tmp/l2proxy ./bench/l2proxy
//	/tmp/l2proxy -listen 127.0.0.1:8097 -dir /tmp/l2bench/l2 & P=$!
//	../shared/bench/proxy/bench.sh --work /tmp/l2bench --start-origin --anchor nginx \
//	    --nginx-cache-dir /tmp/l2bench/nginx-cache --tests hit --sizes "16k 256k" \
//	    --reps 3 --dur 5 --target ours=http://127.0.0.1:8097@$P
//	kill $P; rm -rf /tmp/l2bench
//
// (bench.sh --start-origin creates only 1k, 16k and 256k objects; compare.sh
// adds 1m and 4m.)
//
// -store selects what the cache sees: "tiered" (default; the production
// composition gateway/cache/tiered with L2 as its only tier, so the tiered
// walk is measured too) or "l2" (the L2 tier directly as cache.Options.Store).
// Fresh hits are answered by the cache's fast path (Cache.Fast) as a PoP's
// are (-no-fast serves every request through net/http, on a listener wrapped
// by cache.Coalesce unless -no-coalesce; -sendfile sends bodies by sendfile from
// the L2 file instead of writing them from its mapping). -cpuprofile writes a CPU profile until SIGINT. GET /__l2
// prints the L2 counters, to check that the run's hits came from disk.
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
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/meridian-edge/meridian/gateway/cache"
	"github.com/meridian-edge/meridian/gateway/cache/l2"
	"github.com/meridian-edge/meridian/gateway/cache/tier"
	"github.com/meridian-edge/meridian/gateway/cache/tiered"
	"github.com/meridian-edge/meridian/gateway/origin"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8097", "address to serve on")
	originURL := flag.String("origin", "http://127.0.0.1:9000", "origin base URL")
	dir := flag.String("dir", "", "L2 directory (required; removed by nobody: delete it after the run)")
	bytes := flag.Int64("bytes", 4<<30, "L2 byte budget")
	storeKind := flag.String("store", "tiered", `"tiered" (L2 inside the tier composition) or "l2" (the tier alone)`)
	noCoalesce := flag.Bool("no-coalesce", false, "with -no-fast: serve without cache.Coalesce (header and body in separate writes)")
	noFast := flag.Bool("no-fast", false, "serve every request through net/http (no Cache.Fast hit path)")
	sendfile := flag.Bool("sendfile", false, "send hits by sendfile from the L2 file (cache.FastOptions.Sendfile)")
	prof := flag.String("cpuprofile", "", "write a CPU profile here until SIGINT/SIGTERM")
	flag.Parse()
	if *dir == "" {
		log.Fatal("l2proxy: -dir is required: give a directory for the L2 files (for example /tmp/l2bench/l2)")
	}
	u, err := url.Parse(*originURL)
	if err != nil {
		log.Fatalf("l2proxy: -origin %q: %v", *originURL, err)
	}
	pool, err := origin.New(origin.Options{Site: "bench", Servers: []origin.Server{{URL: u}},
		ConnectTimeout: 2 * time.Second, HeaderTimeout: 10 * time.Second, TotalTimeout: 60 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	t2, err := l2.Open(l2.Options{Dir: *dir, Bytes: *bytes})
	if err != nil {
		log.Fatal(err)
	}
	var st tier.Tier = t2
	var tr *tiered.Tiered
	switch *storeKind {
	case "l2":
	case "tiered":
		if tr, err = tiered.New(tiered.Options{Tiers: []tier.Tier{t2}}); err != nil {
			log.Fatal(err)
		}
		st = tr
	default:
		log.Fatalf("l2proxy: -store %q: use tiered or l2", *storeKind)
	}
	c, err := cache.New(cache.Options{Store: st})
	if err != nil {
		log.Fatal(err)
	}
	var pf *os.File
	if *prof != "" {
		if pf, err = os.Create(*prof); err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(pf); err != nil {
			log.Fatal(err)
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/__l2", func(w http.ResponseWriter, r *http.Request) {
		n, b := t2.Usage()
		fmt.Fprintf(w, "%+v objects=%d bytes=%d\n", t2.Counters(), n, b)
	})
	h := c.Handler(cache.SitePolicy{SiteID: "bench"}, pool)
	mux.Handle("/", h)
	srv := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
		<-ch
		_ = srv.Close()
		close(done)
	}()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	switch {
	case !*noFast:
		ln = c.Fast(srv, ln, cache.FastOptions{Route: func(string) http.Handler { return h }, Sendfile: *sendfile})
	case !*noCoalesce:
		// As a PoP serves (package cache's doc): header and body in one writev.
		ln = cache.Coalesce(srv, ln)
	}
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		log.Fatal(err)
	}
	<-done
	if pf != nil {
		pprof.StopCPUProfile()
		_ = pf.Close()
	}
	_ = c.Close()
	if tr != nil {
		_ = tr.Close()
	}
	if err := t2.Close(); err != nil {
		log.Print(err)
	}
}
