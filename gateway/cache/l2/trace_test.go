package l2

import (
	"fmt"
	"strings"
	"testing"

	"github.com/meridian-edge/meridian/gateway/cache/trace"
)

// traceSim adapts this package's eviction policies to the cache's trace tool
// (package trace), with the same byte accounting as its LRU baseline.
type traceSim struct {
	name         string
	pol          evictionPolicy
	idx          map[uint64]*node
	budget, used int64
}

func newTraceSim(name string, pol evictionPolicy, budget int64) *traceSim {
	return &traceSim{name: name, pol: pol, idx: map[uint64]*node{}, budget: budget}
}

func (s *traceSim) Name() string { return s.name }

func (s *traceSim) Access(r trace.Request) bool {
	if n := s.idx[r.Key]; n != nil {
		s.pol.touch(n)
		return true
	}
	size := int64(r.Size + trace.EntryOverhead)
	for s.used+size > s.budget {
		v := s.pol.victim()
		if v == nil {
			return false
		}
		delete(s.idx, v.hash)
		s.used -= v.size
	}
	n := &node{hash: r.Key, size: size}
	s.idx[r.Key] = n
	s.used += size
	s.pol.add(n, qNone)
	return false
}

// TestHitRatiosWithTraceTool replays the trace tool's Zipf and scan traces
// (byte-budgeted, 16 KiB objects) against S3-FIFO and the tool's LRU.
func TestHitRatiosWithTraceTool(t *testing.T) {
	const objects, size = 20_000, 16 << 10
	var rows []string
	for _, c := range []struct {
		alpha float64
		scan  bool
	}{{0.9, false}, {1.1, false}, {0.9, true}} {
		for _, frac := range []float64{0.01, 0.1} {
			budget := int64(frac*objects) * (size + trace.EntryOverhead)
			spec := trace.Spec{Objects: objects, Requests: 200_000, Alpha: c.alpha, Size: size, Seed: 7}
			if c.scan {
				spec.ScanObjects = int(10 * frac * objects)
			}
			reqs, err := trace.Generate(spec)
			if err != nil {
				t.Fatal(err)
			}
			warm := len(reqs) / 10
			s3 := trace.Replay(newTraceSim("s3fifo", newS3FIFO(budget), budget), reqs, warm)
			lru := trace.Replay(trace.NewLRU(budget), reqs, warm)
			rows = append(rows, fmt.Sprintf("alpha %.1f scan %-5v cache %4.0f%%: s3fifo %5.1f%%  lru %5.1f%%",
				c.alpha, c.scan, 100*frac, 100*s3.HitRatio(), 100*lru.HitRatio()))
			if s3.HitRatio() < lru.HitRatio() {
				t.Errorf("alpha %.1f scan %v cache %.0f%%: s3fifo %.3f below lru %.3f", c.alpha, c.scan, 100*frac, s3.HitRatio(), lru.HitRatio())
			}
		}
	}
	t.Log("trace tool replays (16 KiB objects, steady state after 10% warm-up):\n" + strings.Join(rows, "\n"))
}
