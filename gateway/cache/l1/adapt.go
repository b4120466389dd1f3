package l1

import (
	"sync"
	"sync/atomic"
)

// splitter decides, object by object, whether a body goes to the side pool
// or stays inline in BigCache, and moves that line as the traffic asks.
//
// Why: the split of Bytes between BigCache and the pool is fixed at start
// (BigCache's queues cannot shrink), but the traffic's sizes are not known
// then. With a fixed LargeBody of 8 KiB, a PoP serving mostly small objects
// left half of its memory idle: on a Zipf(0.9) trace of 1 KiB objects and a
// cache of 10% of the catalogue, L1 hit 60.3% against 63.6% for an exact
// LRU of the same bytes (bench/cachetrace). So the threshold moves:
//
//   - BigCache full (evicting, or refusing newcomers for room) and the pool
//     not: it halves, down to LargeBodyMin, and smaller bodies use the pool.
//   - The pool full and BigCache not: it doubles, up to twice LargeBody
//     (where no body below LargeBody goes to the pool).
//   - Both full: it moves by 1/32 towards the point where both are offered
//     the same bytes per byte of capacity. Equal demand per byte gives both
//     the same turnover, and two FIFOs with equal residence times hit like
//     one FIFO of their summed size.
//
// Bodies of LargeBody and more always go to the pool (their hits must not
// copy); the threshold only decides about the objects in between.
//
// An object goes to the pool when its size reaches the threshold times a
// per-key factor in [1/2, 1): objects of the threshold and more go, below
// half of it none, and in between a share of the keys that grows with the
// size. A plain size threshold would move all objects of one size at once,
// so a traffic of a single size would flip between all-in-BigCache and
// all-in-the-pool; this one splits it in any proportion, and still sends
// larger objects first, which matters because a body in the pool costs a
// fixed amount more than inline (packedOverhead, the key again, and the
// index entry in BigCache: about 10% of a 1 KiB object).
//
// The counts are taken per window of offered bytes (a 256th of Bytes), so
// the threshold reacts within a small part of one turnover of the cache.
type splitter struct {
	floor, largeBody int64 // the threshold moves within [floor, 2*largeBody]
	capBC, capPool   int64 // bytes
	window           int64 // bytes offered between adjustments
	threshold        atomic.Int64

	// Counts of the current window.
	inBC, inPool     atomic.Int64 // bytes offered (Put), admitted or not
	fullBC, fullPool atomic.Int64 // objects evicted or refused for room
	mu               sync.Mutex   // one adjustment at a time
}

// fineStep is the fraction (1/32) the threshold moves by while both sides
// are full: near the balance point, halving would swing the split back and
// forth. balanceSlack is how much (1/16) the demands per byte may differ
// before it moves.
const (
	fineStep     = 32
	balanceSlack = 16
)

func newSplitter(floor, largeBody, capBC, capPool int64) *splitter {
	s := &splitter{floor: floor, largeBody: largeBody, capBC: capBC, capPool: capPool,
		window: max((capBC+capPool)/256, 64<<10)}
	s.threshold.Store(2 * largeBody) // start like a fixed LargeBody
	return s
}

// toPool reports whether an object of encoded size goes to the pool.
func (s *splitter) toPool(key string, size int64) bool {
	if size >= s.largeBody {
		return true
	}
	if size < s.floor {
		return false
	}
	th := s.threshold.Load()
	switch {
	case size >= th:
		return true
	case size*2 < th:
		return false // the common case while BigCache has room: no hashing
	}
	// size/f >= th with f = (1+u)/2 in [1/2, 1): size*2 >= th*(1+u).
	u := keyFactor(key) // 0..1023
	return size*2048 >= th*(1024+u)
}

// keyFactor is a fixed hash of key in [0, 1024). It is fixed (not seeded
// per process) so a key goes the same way on every run.
func keyFactor(key string) int64 {
	h := uint64(14695981039346656037) // FNV-1a
	for i := 0; i < len(key); i++ {
		h ^= uint64(key[i])
		h *= 1099511628211
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	return int64(h >> 54)
}

// offer counts an object offered to the tier (admitted or not): its
// encoded size is metaLen+bodyLen, and pool says where its body goes. At
// the end of each window it adjusts the threshold.
//
// Offered bytes, not stored bytes, measure the demand on each side: under
// TinyLFU admission a full side refuses most newcomers instead of evicting,
// so what it stores says little about how much it is asked to hold.
func (s *splitter) offer(key string, metaLen, bodyLen int64, pool bool) {
	k := int64(len(key)) + bcEntryHeader
	bc, p := metaLen+bodyLen+k, int64(0)
	if pool {
		bc, p = metaLen-1+largeHdr+k, bodyLen+int64(len(key))+bodyOverhead
	}
	n := s.inBC.Add(bc) + s.inPool.Add(p)
	if n < s.window || !s.mu.TryLock() {
		return
	}
	defer s.mu.Unlock()
	if s.inBC.Load()+s.inPool.Load() < s.window {
		return // another caller just adjusted
	}
	s.adjust(s.inBC.Swap(0), s.inPool.Swap(0), s.fullBC.Swap(0), s.fullPool.Swap(0))
}

// adjust moves the threshold after a window in which BigCache and the pool
// were offered inBC and inPool bytes and were found full fullBC and
// fullPool times.
func (s *splitter) adjust(inBC, inPool, fullBC, fullPool int64) {
	th := s.threshold.Load()
	switch {
	case fullBC > 0 && fullPool == 0:
		th /= 2
	case fullPool > 0 && fullBC == 0:
		th *= 2
	case fullBC > 0 && fullPool > 0:
		// Demand per byte of capacity, inBC/capBC against inPool/capPool,
		// cross-multiplied (in float64: the products overflow int64 for
		// budgets of many GiB).
		dBC, dPool := float64(inBC)*float64(s.capPool), float64(inPool)*float64(s.capBC)
		switch {
		case dBC > dPool*(1+1.0/balanceSlack):
			th -= th / fineStep
		case dPool > dBC*(1+1.0/balanceSlack):
			th += th/fineStep + 1
		}
	}
	s.threshold.Store(min(max(th, s.floor), 2*s.largeBody))
}
