// Package freq is the access-frequency sketch the cache tiers use to decide
// admission (L1) and promotion (the tiered walk): a TinyLFU-style count-min
// sketch of recent accesses by key hash. It holds counts only, no keys.
package freq

import (
	"sync/atomic"
)

// Sketch is a count-min sketch of recent access frequency (the TinyLFU
// admission filter), laid out like Caffeine's: 4-bit counters packed sixteen
// to a word, four counters per key. The table has one word per expected
// entry, so each key has about sixteen counters' worth of room and the
// estimates stay sharp; every sampleSize increments all counters are halved
// so old popularity fades. Lock-free; races only make counts approximate.
type Sketch struct {
	table      []atomic.Uint64
	mask       uint64
	additions  atomic.Int64
	sampleSize int64
}

// New makes a sketch sized for about entries distinct hot keys.
func New(entries int) *Sketch {
	w := 1
	for w < entries {
		w <<= 1
	}
	return &Sketch{table: make([]atomic.Uint64, w), mask: uint64(w - 1), sampleSize: int64(w) * 10}
}

// slot returns the word index and nibble shift of counter i (0..3) of h.
func (s *Sketch) slot(h uint64, i int) (uint64, uint) {
	x := h + uint64(i)*0x9e3779b97f4a7c15
	x ^= x >> 31
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 29
	return x & s.mask, uint(x>>60) * 4
}

// Increment records one access.
func (s *Sketch) Increment(h uint64) {
	for i := 0; i < 4; i++ {
		idx, sh := s.slot(h, i)
		w := &s.table[idx]
		for {
			old := w.Load()
			if (old>>sh)&0xf == 0xf {
				break
			}
			if w.CompareAndSwap(old, old+(1<<sh)) {
				break
			}
		}
	}
	if s.additions.Add(1) >= s.sampleSize {
		s.additions.Store(0)
		s.age()
	}
}

// Estimate returns the approximate recent access count of h (0..15).
func (s *Sketch) Estimate(h uint64) uint64 {
	est := uint64(15)
	for i := 0; i < 4; i++ {
		idx, sh := s.slot(h, i)
		est = min(est, (s.table[idx].Load()>>sh)&0xf)
	}
	return est
}

// age halves every counter.
func (s *Sketch) age() {
	for i := range s.table {
		w := &s.table[i]
		w.Store((w.Load() >> 1) & 0x7777777777777777)
	}
}

// Add records one access and returns the new estimate.
func (s *Sketch) Add(h uint64) uint64 {
	s.Increment(h)
	return s.Estimate(h)
}
