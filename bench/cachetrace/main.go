// Command cachetrace replays synthetic Zipf and scan traces against the
// cache policies of package gateway/cache/trace (an exact LRU, the real L1
// tier with TinyLFU admission, and plain BigCache FIFO) and prints hit
// ratios side by side, plus the byte hit ratio when objects differ in size.
//
//	go run ./bench/cachetrace -alpha 0.9 -objects 1000000 -requests 3000000 -cache-pct 1
//
// -variants compares L1 configurations in one run: adaptive (the default:
// the size from which bodies go to the large-body pool moves with the
// traffic), static (that size fixed at LargeBody: L1's default before the
// adaptive split), nosplit (every body in BigCache), and adaptive4,
// adaptive8, static4, static8 (a pool of a quarter or an eighth of the
// budget instead of half). -sizes gives each key one of several sizes,
// drawn by weight; the byte hit ratio then differs from the hit ratio. The
// L1 split figures:
//
//	go run ./bench/cachetrace -alpha 0.9 -cache-pct 10 -variants adaptive,static,nosplit -admission tinylfu
//	go run ./bench/cachetrace -alpha 0.9 -cache-pct 10 -objects 200000 -requests 1200000 -sizes 1024:70,4096:15,16384:10,131072:5 -variants adaptive,static,nosplit -admission tinylfu
//	go run ./bench/cachetrace -alpha 0.9 -cache-pct 10 -objects 500000 -requests 1500000 -sizes 1024:95,4096:4,65536:1 -variants adaptive,static,nosplit -admission tinylfu
package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-edge/meridian/gateway/cache/l1"
	"github.com/meridian-edge/meridian/gateway/cache/trace"
)

func main() {
	var (
		alpha     = flag.Float64("alpha", 0.9, "Zipf exponent")
		objects   = flag.Int("objects", 1_000_000, "distinct objects in the catalogue")
		requests  = flag.Int("requests", 3_000_000, "requests in the trace (the first third warms up and is not counted)")
		size      = flag.Int("size", 1024, "object body size in bytes (ignored with -sizes)")
		sizes     = flag.String("sizes", "", "mix of body sizes as size:weight,... by object count, e.g. 1024:70,16384:25,262144:5; each key keeps one size")
		pct       = flag.Float64("cache-pct", 1, "cache size as a percentage of the catalogue's bytes (BigCache budgets whole MiB)")
		scan      = flag.Float64("scan", 0, "insert a one-time scan of this many times the cache's object capacity in the middle")
		seed      = flag.Uint64("seed", 1, "random seed")
		noSplit   = flag.Bool("no-split", false, "same as -variants nosplit: keep every body in BigCache (pops[].cache.l1_large_bodies: 0B)")
		variants  = flag.String("variants", "adaptive", "L1 configurations to replay, comma-separated, of: "+variantList)
		admission = flag.String("admission", l1.AdmitTinyLFU+","+l1.AdmitAlways, "L1 admission policies to replay, comma-separated")
	)
	flag.Parse()
	mix, err := parseSizes(*sizes, *size)
	if err != nil {
		fail(2, err)
	}
	if *noSplit {
		*variants = "nosplit"
	}
	for _, v := range strings.Split(*variants, ",") {
		if !knownVariant(v) {
			fail(2, fmt.Errorf("unknown variant %q; use adaptive, adaptive4, adaptive8, static, static4, static8 or nosplit", v))
		}
	}
	budget := int64(float64(*objects) * (mix.mean() + trace.EntryOverhead) * *pct / 100)
	budget = budget >> 20 << 20
	if budget < 1<<20 {
		fail(2, fmt.Errorf("cache of %.2f%% of %d objects is below 1 MiB; raise -objects or -cache-pct", *pct, *objects))
	}
	spec := trace.Spec{Objects: *objects, Requests: *requests, Alpha: *alpha, Size: mix.sizes[0], Seed: *seed,
		ScanObjects: int(*scan * float64(budget) / (mix.mean() + trace.EntryOverhead))}
	reqs, err := trace.Generate(spec)
	if err != nil {
		fail(2, err)
	}
	if len(mix.sizes) > 1 {
		for i := range reqs {
			reqs[i].Size = mix.of(reqs[i].Key, *seed)
		}
	}
	fmt.Printf("trace: zipf alpha=%.2f objects=%d requests=%d size=%s scan=%d cache=%d MiB (%.2f%%)\n",
		*alpha, *objects, len(reqs), mix, spec.ScanObjects, budget>>20, *pct)
	warm := *requests / 3
	policies := []trace.Policy{trace.NewLRU(budget)}
	for _, v := range strings.Split(*variants, ",") {
		for _, adm := range strings.Split(*admission, ",") {
			opts, _ := variantOptions(v, budget)
			opts.Admission = adm
			name := "l1-" + adm
			if v != "adaptive" {
				name += "-" + v
			}
			p, err := trace.NewL1WithOptions(opts)
			if err != nil {
				fail(1, err)
			}
			defer p.Close()
			policies = append(policies, named{p, name})
		}
	}
	for _, p := range policies {
		start := time.Now()
		r, byteRatio := replay(p, reqs, warm)
		fmt.Printf("%-20s hit ratio %6.2f%%  byte hit ratio %6.2f%%  (%d/%d, %.1fs)\n",
			r.Policy, 100*r.HitRatio(), 100*byteRatio, r.Hits, r.Requests, time.Since(start).Seconds())
	}
}

// variantList names the L1 configurations of -variants (variantOptions).
const variantList = "adaptive, adaptive4, adaptive8, static, static4, static8, nosplit"

func knownVariant(v string) bool {
	_, ok := variantOptions(v, 0)
	return ok
}

// variantOptions returns the L1 options of variant v for a budget, and
// whether v is one of variantList: adaptive is the default L1; 4 and 8 give a
// quarter or an eighth of the budget to large bodies instead of half; static
// keeps the large-body threshold fixed; nosplit keeps every body in BigCache.
func variantOptions(v string, budget int64) (l1.Options, bool) {
	opts := l1.Options{Bytes: budget}
	switch v {
	case "adaptive":
	case "adaptive4":
		opts.LargeBytes = budget / 4
	case "adaptive8":
		opts.LargeBytes = budget / 8
	case "static":
		opts.LargeBodyMin = -1
	case "static4":
		opts.LargeBodyMin, opts.LargeBytes = -1, budget/4
	case "static8":
		opts.LargeBodyMin, opts.LargeBytes = -1, budget/8
	case "nosplit":
		opts.LargeBody = -1
	default:
		return opts, false
	}
	return opts, true
}

// replay is trace.Replay plus the share of bytes served from the cache.
func replay(p trace.Policy, reqs []trace.Request, warm int) (trace.Result, float64) {
	res := trace.Result{Policy: p.Name()}
	var all, hit int64
	for i, r := range reqs {
		h := p.Access(r)
		if i < warm {
			continue
		}
		res.Requests++
		all += int64(r.Size)
		if h {
			res.Hits++
			hit += int64(r.Size)
		}
	}
	if all == 0 {
		return res, 0
	}
	return res, float64(hit) / float64(all)
}

type named struct {
	trace.Policy
	name string
}

func (n named) Name() string { return n.name }

// sizeMix assigns each key one body size, drawn by weight.
type sizeMix struct {
	sizes   []int
	weights []int
	total   int
}

func parseSizes(spec string, single int) (sizeMix, error) {
	if spec == "" {
		if single <= 0 {
			return sizeMix{}, fmt.Errorf("-size %d must be > 0", single)
		}
		return sizeMix{sizes: []int{single}, weights: []int{1}, total: 1}, nil
	}
	var m sizeMix
	for _, part := range strings.Split(spec, ",") {
		s, w, ok := strings.Cut(part, ":")
		size, err1 := strconv.Atoi(s)
		weight, err2 := strconv.Atoi(w)
		if !ok || err1 != nil || err2 != nil || size <= 0 || weight <= 0 {
			return sizeMix{}, fmt.Errorf("-sizes: %q is not size:weight with both > 0 (e.g. 1024:70,16384:30)", part)
		}
		m.sizes = append(m.sizes, size)
		m.weights = append(m.weights, weight)
		m.total += weight
	}
	return m, nil
}

func (m sizeMix) mean() float64 {
	var sum float64
	for i, s := range m.sizes {
		sum += float64(s) * float64(m.weights[i])
	}
	return sum / float64(m.total)
}

// of returns key's size: a hash of the key (not its popularity rank, which
// the trace shuffles over keys) picks a weighted slot.
func (m sizeMix) of(key, seed uint64) int {
	x := key ^ seed*0x9e3779b97f4a7c15
	x ^= x >> 31
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 29
	r := int(x % uint64(m.total))
	for i, w := range m.weights {
		if r < w {
			return m.sizes[i]
		}
		r -= w
	}
	return m.sizes[len(m.sizes)-1]
}

func (m sizeMix) String() string {
	if len(m.sizes) == 1 {
		return strconv.Itoa(m.sizes[0]) + "B"
	}
	parts := make([]string, len(m.sizes))
	for i := range m.sizes {
		parts[i] = fmt.Sprintf("%dB:%d", m.sizes[i], m.weights[i])
	}
	return strings.Join(parts, ",") + fmt.Sprintf(" (mean %.0fB)", m.mean())
}

func fail(code int, err error) {
	fmt.Fprintln(os.Stderr, "cachetrace:", err)
	os.Exit(code)
}
