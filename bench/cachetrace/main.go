// Command cachetrace replays synthetic Zipf and scan traces against the
// cache policies of package gateway/cache/trace (an exact LRU, the real L1
// tier with TinyLFU admission, and plain BigCache FIFO) and prints hit
// ratios side by side.
//
//	go run ./bench/cachetrace -alpha 0.9 -objects 1000000 -requests 3000000 -cache-pct 1
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/meridian-edge/meridian/gateway/cache/l1"
	"github.com/meridian-edge/meridian/gateway/cache/trace"
)

func main() {
	var (
		alpha    = flag.Float64("alpha", 0.9, "Zipf exponent")
		objects  = flag.Int("objects", 1_000_000, "distinct objects in the catalogue")
		requests = flag.Int("requests", 3_000_000, "requests in the trace (the first third warms up and is not counted)")
		size     = flag.Int("size", 1024, "object body size in bytes")
		pct      = flag.Float64("cache-pct", 1, "cache size as a percentage of the catalogue's bytes (BigCache budgets whole MiB)")
		scan     = flag.Float64("scan", 0, "insert a one-time scan of this many times the cache's object capacity in the middle")
		seed     = flag.Uint64("seed", 1, "random seed")
		noSplit  = flag.Bool("no-split", false, "keep every body in BigCache (pops[].cache.l1_large_bodies: 0B) instead of L1's default split, which gives half of a budget of 64MiB or more to bodies of 8KiB and more")
	)
	flag.Parse()
	budget := int64(float64(*objects) * float64(*size+trace.EntryOverhead) * *pct / 100)
	budget = budget >> 20 << 20
	if budget < 1<<20 {
		fmt.Fprintf(os.Stderr, "cachetrace: cache of %.2f%% of %d objects is below 1 MiB; raise -objects or -cache-pct\n", *pct, *objects)
		os.Exit(2)
	}
	spec := trace.Spec{Objects: *objects, Requests: *requests, Alpha: *alpha, Size: *size, Seed: *seed,
		ScanObjects: int(*scan * float64(budget) / float64(*size+trace.EntryOverhead))}
	reqs, err := trace.Generate(spec)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cachetrace:", err)
		os.Exit(2)
	}
	fmt.Printf("trace: zipf alpha=%.2f objects=%d requests=%d size=%dB scan=%d cache=%d MiB (%.2f%%)\n",
		*alpha, *objects, len(reqs), *size, spec.ScanObjects, budget>>20, *pct)
	warm := *requests / 3
	policies := []trace.Policy{trace.NewLRU(budget)}
	for _, adm := range []string{l1.AdmitTinyLFU, l1.AdmitAlways} {
		opts := l1.Options{Bytes: budget, Admission: adm}
		if *noSplit {
			opts.LargeBody = -1
		}
		p, err := trace.NewL1WithOptions(opts)
		if err != nil {
			fmt.Fprintln(os.Stderr, "cachetrace:", err)
			os.Exit(1)
		}
		defer p.Close()
		policies = append(policies, p)
	}
	for _, p := range policies {
		start := time.Now()
		r := trace.Replay(p, reqs, warm)
		fmt.Printf("%-20s hit ratio %6.2f%%  (%d/%d, %.1fs)\n", r.Policy, 100*r.HitRatio(), r.Hits, r.Requests, time.Since(start).Seconds())
	}
}
