// Package trace replays synthetic cache traces (Zipf-distributed popularity,
// optionally polluted by a one-time scan) against any cache policy and
// reports hit ratios, so eviction and admission choices are made by
// measurement. It ships an exact byte-budgeted LRU as the baseline and an
// adapter for the real L1 tier.
//
// It owns trace generation and replay. It must not be used on the request
// path.
package trace

import (
	"container/list"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"

	"github.com/meridian-edge/meridian/gateway/cache/l1"
	"github.com/meridian-edge/meridian/gateway/cache/tier"
)

// Request is one access in a trace.
type Request struct {
	Key  uint64
	Size int // body bytes
}

// Spec describes a synthetic trace.
type Spec struct {
	// Objects is the catalogue size (distinct keys).
	Objects int
	// Requests is the trace length, not counting the scan.
	Requests int
	// Alpha is the Zipf exponent (0.9 and 1.1 are typical for web traffic);
	// any value > 0 works, including below 1.
	Alpha float64
	// Size is the body size of every object in bytes.
	Size int
	// ScanObjects, when > 0, inserts a one-time scan of that many keys never
	// seen before in the middle of the trace.
	ScanObjects int
	// Seed makes the trace reproducible.
	Seed uint64
}

// Validate reports a spec that cannot produce a trace.
func (s Spec) Validate() error {
	switch {
	case s.Objects <= 0:
		return fmt.Errorf("trace: Objects must be > 0 (got %d)", s.Objects)
	case s.Requests <= 0:
		return fmt.Errorf("trace: Requests must be > 0 (got %d)", s.Requests)
	case s.Alpha <= 0 || math.IsNaN(s.Alpha):
		return fmt.Errorf("trace: Alpha must be > 0 (got %v)", s.Alpha)
	case s.Size <= 0:
		return fmt.Errorf("trace: Size must be > 0 (got %d)", s.Size)
	case s.ScanObjects < 0:
		return fmt.Errorf("trace: ScanObjects must not be negative (got %d)", s.ScanObjects)
	}
	return nil
}

// Generate builds the trace. Popularity ranks are shuffled over keys so that
// key order carries no information.
func Generate(s Spec) ([]Request, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(s.Seed, s.Seed^0x9e3779b97f4a7c15))
	cdf := make([]float64, s.Objects)
	var sum float64
	for i := range cdf {
		sum += 1 / math.Pow(float64(i+1), s.Alpha)
		cdf[i] = sum
	}
	perm := rng.Perm(s.Objects)
	out := make([]Request, 0, s.Requests+s.ScanObjects)
	scanAt := s.Requests / 2
	for i := 0; i < s.Requests; i++ {
		if i == scanAt {
			for j := 0; j < s.ScanObjects; j++ {
				out = append(out, Request{Key: uint64(s.Objects + j), Size: s.Size})
			}
		}
		u := rng.Float64() * sum
		rank := sort.SearchFloat64s(cdf, u)
		if rank >= s.Objects {
			rank = s.Objects - 1
		}
		out = append(out, Request{Key: uint64(perm[rank]), Size: s.Size})
	}
	return out, nil
}

// Policy is a cache under test: Access looks the key up and, on a miss,
// offers the object for storage. It reports whether it was a hit.
type Policy interface {
	Name() string
	Access(r Request) bool
}

// Result is one policy's outcome on one trace.
type Result struct {
	Policy   string
	Requests int
	Hits     int
}

// HitRatio is Hits / Requests.
func (r Result) HitRatio() float64 {
	if r.Requests == 0 {
		return 0
	}
	return float64(r.Hits) / float64(r.Requests)
}

// Replay runs the trace through p. The first warm requests are replayed but
// not counted, so the figure is the steady state.
func Replay(p Policy, reqs []Request, warm int) Result {
	res := Result{Policy: p.Name()}
	for i, r := range reqs {
		hit := p.Access(r)
		if i < warm {
			continue
		}
		res.Requests++
		if hit {
			res.Hits++
		}
	}
	return res
}

// EntryOverhead approximates what a stored entry costs beyond its body
// (key, metadata, index); the LRU charges it so that it competes with L1 on
// the same byte budget.
const EntryOverhead = 64

// LRU is an exact least-recently-used cache with a byte budget.
type LRU struct {
	budget, used int64
	ll           *list.List
	m            map[uint64]*list.Element
}

type lruEntry struct {
	key  uint64
	size int64
}

// NewLRU returns an LRU holding at most budget bytes.
func NewLRU(budget int64) *LRU {
	return &LRU{budget: budget, ll: list.New(), m: map[uint64]*list.Element{}}
}

// Name implements Policy.
func (c *LRU) Name() string { return "lru" }

// Access implements Policy.
func (c *LRU) Access(r Request) bool {
	if e, ok := c.m[r.Key]; ok {
		c.ll.MoveToFront(e)
		return true
	}
	size := int64(r.Size + EntryOverhead)
	if size > c.budget {
		return false
	}
	for c.used+size > c.budget {
		back := c.ll.Back()
		be := back.Value.(*lruEntry)
		c.ll.Remove(back)
		delete(c.m, be.key)
		c.used -= be.size
	}
	c.m[r.Key] = c.ll.PushFront(&lruEntry{key: r.Key, size: size})
	c.used += size
	return false
}

// L1 replays against the real L1 tier (BigCache plus its admission policy).
type L1 struct {
	name string
	t    *l1.Tier
	body []byte
	key  []byte
}

// NewL1 starts an L1 tier of budget bytes with the given admission policy
// (l1.AdmitTinyLFU or l1.AdmitAlways) and L1's default split between
// BigCache and the large-body pool. Close it after use.
func NewL1(budget int64, admission string) (*L1, error) {
	return NewL1WithOptions(l1.Options{Bytes: budget, Admission: admission})
}

// NewL1WithOptions starts an L1 tier as opts say, for replaying the
// trade-offs L1's options make (e.g. LargeBody -1: every body in BigCache).
func NewL1WithOptions(opts l1.Options) (*L1, error) {
	t, err := l1.New(opts)
	if err != nil {
		return nil, err
	}
	name := "l1-" + opts.Admission
	if opts.LargeBody < 0 {
		name += "-nosplit"
	}
	return &L1{name: name, t: t}, nil
}

// Name implements Policy.
func (c *L1) Name() string { return c.name }

// Close releases the tier.
func (c *L1) Close() error { return c.t.Close() }

// Access implements Policy.
func (c *L1) Access(r Request) bool {
	c.key = fmt.Appendf(c.key[:0], "k%d", r.Key)
	key := string(c.key)
	if _, _, err := c.t.GetBytes(key); err == nil {
		return true
	}
	if len(c.body) < r.Size {
		c.body = make([]byte, r.Size)
	}
	w, err := c.t.Put(context.Background(), key, &tier.Meta{Status: 200, Size: int64(r.Size)})
	if err != nil {
		return false
	}
	_, _ = w.Write(c.body[:r.Size])
	_ = w.Commit()
	return false
}
