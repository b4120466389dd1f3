package trace_test

import (
	"strings"
	"testing"

	"github.com/meridian-edge/meridian/gateway/cache/l1"
	"github.com/meridian-edge/meridian/gateway/cache/trace"
)

func TestSpecErrors(t *testing.T) {
	tests := []struct {
		spec trace.Spec
		want string
	}{
		{trace.Spec{Requests: 1, Alpha: 1, Size: 1}, "Objects must be > 0"},
		{trace.Spec{Objects: 1, Alpha: 1, Size: 1}, "Requests must be > 0"},
		{trace.Spec{Objects: 1, Requests: 1, Size: 1}, "Alpha must be > 0"},
		{trace.Spec{Objects: 1, Requests: 1, Alpha: 1}, "Size must be > 0"},
		{trace.Spec{Objects: 1, Requests: 1, Alpha: 1, Size: 1, ScanObjects: -1}, "ScanObjects must not be negative"},
	}
	for _, tc := range tests {
		if _, err := trace.Generate(tc.spec); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Generate(%+v) = %v, want %q", tc.spec, err, tc.want)
		}
	}
}

func TestZipfIsSkewedAndScanIsUnique(t *testing.T) {
	reqs, err := trace.Generate(trace.Spec{Objects: 1000, Requests: 100000, Alpha: 1.1, Size: 10, ScanObjects: 500, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	if len(reqs) != 100500 {
		t.Fatalf("len %d", len(reqs))
	}
	counts := map[uint64]int{}
	for _, r := range reqs {
		counts[r.Key]++
	}
	top := 0
	for _, c := range counts {
		top = max(top, c)
	}
	// Rank 1 of Zipf(1.1) over 1000 keys draws about 1/H(1000,1.1) = 17% of requests.
	if top < 12000 || top > 22000 {
		t.Fatalf("most popular key drew %d of 100000 requests, want about 17000", top)
	}
	for k := uint64(1000); k < 1500; k++ {
		if counts[k] != 1 {
			t.Fatalf("scan key %d seen %d times, want once", k, counts[k])
		}
	}
}

func TestLRUEvictsLeastRecent(t *testing.T) {
	c := trace.NewLRU(3 * int64(10+trace.EntryOverhead))
	seq := []struct {
		key uint64
		hit bool
	}{{1, false}, {2, false}, {3, false}, {1, true}, {4, false}, {2, false}, {1, true}, {3, false}}
	for i, s := range seq {
		if got := c.Access(trace.Request{Key: s.key, Size: 10}); got != s.hit {
			t.Fatalf("step %d key %d: hit %v, want %v", i, s.key, got, s.hit)
		}
	}
}

// The L1 tier (BigCache FIFO plus TinyLFU admission) must match or beat an
// exact LRU of the same byte budget on Zipf traffic; plain FIFO does not.
func TestL1HitRatioAtLeastLRU(t *testing.T) {
	for _, alpha := range []float64{0.9, 1.1} {
		spec := trace.Spec{Objects: 200_000, Requests: 1_200_000, Alpha: alpha, Size: 1024, Seed: 3}
		reqs, err := trace.Generate(spec)
		if err != nil {
			t.Fatal(err)
		}
		budget := int64(2 << 20) // ~1% of the catalogue
		lru := trace.Replay(trace.NewLRU(budget), reqs, len(reqs)/3)
		p, err := trace.NewL1(budget, l1.AdmitTinyLFU)
		if err != nil {
			t.Fatal(err)
		}
		got := trace.Replay(p, reqs, len(reqs)/3)
		p.Close()
		t.Logf("alpha %.1f: lru %.2f%% l1-tinylfu %.2f%%", alpha, 100*lru.HitRatio(), 100*got.HitRatio())
		if got.HitRatio() < lru.HitRatio() {
			t.Errorf("alpha %.1f: L1 hit ratio %.2f%% below LRU's %.2f%%", alpha, 100*got.HitRatio(), 100*lru.HitRatio())
		}
	}
}
