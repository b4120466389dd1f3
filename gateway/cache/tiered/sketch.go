package tiered

import "sync/atomic"

// sketch is a count-min sketch of recent lookups per key hash: four rows of
// saturating counters (max 15), all halved after every 10 x width
// increments so that old popularity fades. Lock-free; races only make counts
// approximate, which is fine for an admission decision.
type sketch struct {
	rows      [4][]atomic.Uint32
	mask      uint64
	additions atomic.Int64
	period    int64
}

func newSketch(width int) *sketch {
	w := 1
	for w < width {
		w <<= 1
	}
	s := &sketch{mask: uint64(w - 1), period: int64(w) * 10}
	for i := range s.rows {
		s.rows[i] = make([]atomic.Uint32, w)
	}
	return s
}

func (s *sketch) index(h uint64, row int) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd + uint64(row)*0x9e3779b97f4a7c15
	h ^= h >> 29
	return h & s.mask
}

// increment counts one lookup of h and returns the new estimate.
func (s *sketch) increment(h uint64) uint32 {
	est := uint32(15)
	for i := range s.rows {
		c := &s.rows[i][s.index(h, i)]
		v := c.Load()
		if v < 15 {
			v = c.Add(1)
		}
		est = min(est, v)
	}
	if s.additions.Add(1) == s.period {
		s.additions.Store(0)
		for i := range s.rows {
			for j := range s.rows[i] {
				c := &s.rows[i][j]
				c.Store(c.Load() / 2)
			}
		}
	}
	return est
}
