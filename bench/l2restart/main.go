// Command l2restart measures how soon a restarted PoP serves L2 hits when
// its disk tier holds many real objects (issue 6: 1 M objects, target under
// 5 s). It is a benchmark tool, not part of `make test`: the fill writes
// N real object files through the l2 API (1–2 KiB bodies; about 4 KiB of
// disk each, so 4 GB for 1 M; check `df` first).
//
//	go build -o /tmp/l2restart ./bench/l2restart
//	/tmp/l2restart -dir /tmp/l2restart-data -n 1000000
//	rm -rf /tmp/l2restart-data
//
// It fills the directory (skipped when -n objects are already indexed
// there), closes the tier cleanly, and then restarts it four times, each in a
// new process started by this one, timing from just before the exec:
//
//	clean/warm   after a clean Close, object files in the page cache
//	clean/cold   the same with the tier's files dropped from the page cache
//	             (posix_fadvise DONTNEED on each file; the kernel's inode and
//	             directory caches stay warm, which only a reboot would clear)
//	killed/warm  after a child that was storing objects was SIGKILLed: the
//	             index must replay its journal and walk every object file
//	killed/cold  the same, files dropped from the page cache
//
// For each it prints: exec→Open returned, exec→first verified hit of a
// random object, exec→100 random hits served, exec→index complete (every
// file indexed: Open for a clean stop, the background walk after a kill),
// and the index's heap.
package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-edge/meridian/gateway/cache/l2"
	"github.com/meridian-edge/meridian/gateway/cache/tier"
)

func main() {
	dir := flag.String("dir", "", "L2 directory to fill and restart (required; delete it afterwards)")
	n := flag.Int("n", 1_000_000, "objects to store")
	workers := flag.Int("workers", 4, "goroutines storing objects")
	phase := flag.String("phase", "all", "all | fill | measure | dirty | dropcache (the last three are run by 'all' as child processes)")
	startNs := flag.Int64("start", 0, "measure: unix nanoseconds the parent took just before exec")
	flag.Parse()
	if *dir == "" {
		log.Fatal("l2restart: -dir is required (for example /tmp/l2restart-data); delete it after the run")
	}
	opts := l2.Options{Dir: *dir, Bytes: 64 << 30}
	switch *phase {
	case "all":
		all(opts, *n, *workers)
	case "fill":
		fill(opts, *n, *workers)
	case "measure":
		measure(opts, *n, *startNs)
	case "dirty":
		dirty(opts, *n)
	case "dropcache":
		files, err := dropCache(opts.Dir)
		if err != nil {
			log.Fatalf("dropcache: %v", err)
		}
		log.Printf("dropcache: %d files dropped from the page cache", files)
	default:
		log.Fatalf("l2restart: unknown -phase %q", *phase)
	}
}

func key(i int) string { return "https://bench.example/obj/" + strconv.Itoa(i) }

// body is object i's body: 1–2 KiB of bytes derived from i, so a hit can be
// checked for the right content.
func body(i int, dst []byte) []byte {
	size := 1024 + (i*7919)%1024
	dst = dst[:0]
	var w [8]byte
	binary.LittleEndian.PutUint64(w[:], uint64(i)*0x9e3779b97f4a7c15)
	for len(dst) < size {
		dst = append(dst, w[:]...)
	}
	return dst[:size]
}

func meta(i int) *tier.Meta {
	now := time.Now()
	return &tier.Meta{Kind: tier.KindResponse, Site: "bench", URL: key(i), Status: 200,
		RequestTime: now, ResponseTime: now, Size: -1, Header: http.Header{
			"Content-Type":  {"application/octet-stream"},
			"Cache-Control": {"public, max-age=86400"},
			"Etag":          {`"` + strconv.Itoa(i) + `"`},
			"Date":          {now.UTC().Format(http.TimeFormat)},
		}}
}

func put(t *l2.Tier, i int, buf []byte) error {
	w, err := t.Put(context.Background(), key(i), meta(i))
	if err != nil {
		return err
	}
	if _, err := w.Write(body(i, buf)); err != nil {
		w.Abort()
		return err
	}
	return w.Commit()
}

func fill(opts l2.Options, n, workers int) {
	t, err := l2.Open(opts)
	if err != nil {
		log.Fatal(err)
	}
	if have, _ := t.Usage(); have >= int64(n) {
		log.Printf("fill: %d objects already indexed in %s; reusing them", have, opts.Dir)
		_ = t.Close()
		return
	}
	start := time.Now()
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 0, 2048)
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := put(t, i, buf); err != nil {
					if failed.Add(1) == 1 {
						log.Printf("fill: object %d: %v", i, err)
					}
				}
				if i > 0 && i%100_000 == 0 {
					log.Printf("fill: %d objects in %v", i, time.Since(start).Round(time.Second))
				}
			}
		}()
	}
	wg.Wait()
	objs, bytes := t.Usage()
	if err := t.Close(); err != nil {
		log.Fatal(err)
	}
	log.Printf("fill: %d objects (%d failed) in %v; index %d objects, %.2f GB charged", n, failed.Load(),
		time.Since(start).Round(time.Second), objs, float64(bytes)/1e9)
	if failed.Load() > 0 {
		os.Exit(1)
	}
}

// dirty opens the tier, stores objects beyond n until it is killed, and says
// "ready" once it has stored some: the parent then SIGKILLs it.
func dirty(opts l2.Options, n int) {
	t, err := l2.Open(opts)
	if err != nil {
		log.Fatal(err)
	}
	buf := make([]byte, 0, 2048)
	for i := n; ; i++ {
		if err := put(t, i, buf); err != nil {
			log.Fatal(err)
		}
		if i == n+1000 {
			fmt.Println("ready")
		}
	}
}

func measure(opts l2.Options, n int, startNs int64) {
	if startNs == 0 {
		startNs = time.Now().UnixNano()
	}
	since := func() time.Duration { return time.Duration(time.Now().UnixNano() - startNs) }
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	t, err := l2.Open(opts)
	if err != nil {
		log.Fatal(err)
	}
	opened := since()
	rng := rand.New(rand.NewPCG(uint64(startNs), 1))
	buf := make([]byte, 0, 2048)
	var first time.Duration
	for k := range 100 {
		i := rng.IntN(n)
		o, err := t.Get(context.Background(), key(i))
		if err != nil {
			log.Fatalf("measure: object %d: %v", i, err)
		}
		got, err := io.ReadAll(o.Body)
		o.Body.Close()
		if err != nil || string(got) != string(body(i, buf)) {
			log.Fatalf("measure: object %d: wrong body (%d bytes, err %v)", i, len(got), err)
		}
		if k == 0 {
			first = since()
		}
	}
	hundred := since()
	select {
	case <-t.Indexed():
	case <-time.After(5 * time.Minute):
		log.Fatal("measure: index not complete after 5 minutes")
	}
	indexed := since()
	objs, _ := t.Usage()
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if err := t.Close(); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("open=%v first_hit=%v hits100=%v indexed=%v objects=%d heap_MB=%.0f rebuilt=%d\n",
		opened.Round(time.Millisecond), first.Round(time.Millisecond), hundred.Round(time.Millisecond),
		indexed.Round(time.Millisecond), objs, float64(after.HeapAlloc-before.HeapAlloc)/1e6, t.Counters().IndexRebuilt)
}

func all(opts l2.Options, n, workers int) {
	self, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}
	fill(opts, n, workers)
	if free, ok := freeBytes(opts.Dir); ok {
		log.Printf("disk: %.1f GB free after the fill", float64(free)/1e9)
	}
	common := []string{"-dir", opts.Dir, "-n", strconv.Itoa(n)}
	run := func(label string, cold bool) {
		args := append([]string{"-phase", "measure"}, common...)
		if cold {
			// In a child of its own, so that the drop is not timed.
			c := exec.Command(self, append([]string{"-phase", "dropcache"}, common...)...)
			c.Stderr = os.Stderr
			if err := c.Run(); err != nil {
				log.Fatalf("%s: drop page cache: %v", label, err)
			}
		}
		start := time.Now().UnixNano()
		cmd := exec.Command(self, append(args, "-start", strconv.FormatInt(start, 10))...)
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			log.Fatalf("%s: %v", label, err)
		}
		fmt.Printf("%-12s %s", label, out)
	}
	kill := func() {
		cmd := exec.Command(self, append([]string{"-phase", "dirty"}, common...)...)
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			log.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			log.Fatal(err)
		}
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil || strings.TrimSpace(line) != "ready" {
			log.Fatalf("dirty child: %q %v", line, err)
		}
		_ = cmd.Process.Kill() // SIGKILL on unix
		if err := cmd.Wait(); err == nil || !errors.As(err, new(*exec.ExitError)) {
			log.Fatalf("dirty child was not killed: %v", err)
		}
	}
	if !canDropCache {
		log.Printf("cold runs skipped: %s", noDropCache)
	}
	run("clean/warm", false)
	if canDropCache {
		run("clean/cold", true)
	}
	kill()
	run("killed/warm", false)
	if canDropCache {
		kill()
		run("killed/cold", true)
	}
}
