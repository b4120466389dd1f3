package l2

import (
	"container/heap"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
)

// A small trace simulator: the eviction policies of this package replayed
// against Zipf traces and a scan-polluted trace, next to LRU and Belady's
// optimum (with bypass), all with unit-size objects. It is how S3-FIFO was
// chosen over LRU for this tier.

// zipf draws ranks 0..n-1 with P(k) proportional to 1/(k+1)^s; unlike
// math/rand's Zipf it accepts s < 1.
type zipf struct {
	cdf []float64
	r   *rand.Rand
}

func newZipf(n int, s float64, seed uint64) *zipf {
	z := &zipf{cdf: make([]float64, n), r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	sum := 0.0
	for k := range n {
		sum += 1 / math.Pow(float64(k+1), s)
		z.cdf[k] = sum
	}
	for k := range z.cdf {
		z.cdf[k] /= sum
	}
	return z
}

func (z *zipf) next() uint64 {
	u := z.r.Float64()
	return uint64(sort.SearchFloat64s(z.cdf, u))
}

// zipfTrace returns length requests over n objects. Keys are scrambled so
// that popularity does not follow key order.
func zipfTrace(n, length int, s float64, seed uint64) []uint64 {
	z := newZipf(n, s, seed)
	t := make([]uint64, length)
	for i := range t {
		t[i] = z.next()*0x9e3779b97f4a7c15 + 1
	}
	return t
}

// scanTrace is a Zipf trace with a one-time scan of scan distinct new keys
// inserted in the middle.
func scanTrace(n, length int, s float64, scan int, seed uint64) []uint64 {
	t := zipfTrace(n, length, s, seed)
	mid := len(t) / 2
	out := make([]uint64, 0, len(t)+scan)
	out = append(out, t[:mid]...)
	for i := range scan {
		out = append(out, 1<<62+uint64(i))
	}
	return append(out, t[mid:]...)
}

// wtinylfu is W-TinyLFU as in Caffeine, for comparison only: a 1% window
// LRU in front of a segmented LRU (80% protected, 20% probation); an object
// leaving the window enters the main area only if it was requested more
// often than the probation victim it would replace. Frequencies are exact
// counts halved every 10 x capacity requests (a count-min sketch
// approximates the same).
type wtinylfu struct {
	window, probation, protected list
	capacity                     int64
	freq                         map[uint64]int
	ops                          int
}

const (
	qWindow    uint8 = 10
	qProbation uint8 = 11
	qProtected uint8 = 12
)

func newWTinyLFU(capacity int64) *wtinylfu {
	return &wtinylfu{capacity: capacity, freq: map[uint64]int{}}
}

func (p *wtinylfu) count(h uint64) {
	p.freq[h]++
	p.ops++
	if int64(p.ops) >= 10*p.capacity {
		p.ops = 0
		for k, v := range p.freq {
			if v/2 == 0 {
				delete(p.freq, k)
			} else {
				p.freq[k] = v / 2
			}
		}
	}
}

func (p *wtinylfu) add(n *node, _ uint8) {
	p.count(n.hash)
	n.queue = qWindow
	p.window.pushHead(n)
}

// touchShared: W-TinyLFU moves nodes on a hit, under the write lock.
func (p *wtinylfu) touchShared(*node) bool { return false }

func (p *wtinylfu) touch(n *node) {
	p.count(n.hash)
	switch n.queue {
	case qWindow:
		p.window.remove(n)
		p.window.pushHead(n)
	case qProbation:
		p.probation.remove(n)
		n.queue = qProtected
		p.protected.pushHead(n)
		for p.protected.bytes > p.capacity*99/100*8/10 {
			d := p.protected.tail
			p.protected.remove(d)
			d.queue = qProbation
			p.probation.pushHead(d)
		}
	case qProtected:
		p.protected.remove(n)
		p.protected.pushHead(n)
	}
}

func (p *wtinylfu) remove(n *node) {
	switch n.queue {
	case qWindow:
		p.window.remove(n)
	case qProbation:
		p.probation.remove(n)
	case qProtected:
		p.protected.remove(n)
	}
	n.queue = qNone
}

func (p *wtinylfu) victim() *node {
	windowCap := max(p.capacity/100, 1)
	for {
		if p.window.bytes > windowCap || p.probation.n+p.protected.n == 0 {
			c := p.window.tail
			if c == nil {
				return nil
			}
			p.window.remove(c)
			if p.probation.bytes+p.protected.bytes+c.size <= p.capacity-windowCap {
				c.queue = qProbation
				p.probation.pushHead(c)
				continue
			}
			v := p.probation.tail
			if v == nil {
				v = p.protected.tail
			}
			if p.freq[c.hash] > p.freq[v.hash] {
				p.remove(v)
				c.queue = qProbation
				p.probation.pushHead(c)
				return v
			}
			c.queue = qNone
			return c
		}
		v := p.probation.tail
		if v == nil {
			v = p.protected.tail
		}
		p.remove(v)
		return v
	}
}

func (p *wtinylfu) each(fn func(n *node)) {}

func simulate(p evictionPolicy, capacity int, trace []uint64) float64 {
	idx := make(map[uint64]*node, capacity)
	hits := 0
	for _, k := range trace {
		if n := idx[k]; n != nil {
			hits++
			p.touch(n)
			continue
		}
		for len(idx) >= capacity {
			v := p.victim()
			delete(idx, v.hash)
		}
		n := &node{hash: k, size: 1}
		idx[k] = n
		p.add(n, qNone)
	}
	return float64(hits) / float64(len(trace))
}

type farEntry struct {
	next int
	key  uint64
}
type farHeap []farEntry

func (h farHeap) Len() int           { return len(h) }
func (h farHeap) Less(i, j int) bool { return h[i].next > h[j].next }
func (h farHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *farHeap) Push(x any)        { *h = append(*h, x.(farEntry)) }
func (h *farHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// belady is the offline optimum: evict (or do not admit) the object whose
// next request is farthest away.
func belady(capacity int, trace []uint64) float64 {
	next := make([]int, len(trace))
	last := map[uint64]int{}
	for i := len(trace) - 1; i >= 0; i-- {
		if j, ok := last[trace[i]]; ok {
			next[i] = j
		} else {
			next[i] = math.MaxInt
		}
		last[trace[i]] = i
	}
	cur := map[uint64]int{} // cached key -> its next use
	h := &farHeap{}
	hits := 0
	for i, k := range trace {
		if _, ok := cur[k]; ok {
			hits++
			cur[k] = next[i]
			heap.Push(h, farEntry{next[i], k})
			continue
		}
		if len(cur) >= capacity {
			// Find the live entry with the farthest next use.
			for {
				top := (*h)[0]
				if n, ok := cur[top.key]; ok && n == top.next {
					break
				}
				heap.Pop(h)
			}
			if (*h)[0].next <= next[i] {
				continue // the new object is needed last: do not admit it
			}
			top := heap.Pop(h).(farEntry)
			delete(cur, top.key)
		}
		cur[k] = next[i]
		heap.Push(h, farEntry{next[i], k})
	}
	return float64(hits) / float64(len(trace))
}

func TestPolicyHitRatios(t *testing.T) {
	const objects, length = 50_000, 400_000
	type result struct{ s3fifo, wtlfu, lru, opt float64 }
	var rows []string
	run := func(name string, capacity int, trace []uint64) result {
		r := result{
			s3fifo: simulate(newS3FIFO(int64(capacity)), capacity, trace),
			wtlfu:  simulate(newWTinyLFU(int64(capacity)), capacity, trace),
			lru:    simulate(&lru{}, capacity, trace),
			opt:    belady(capacity, trace),
		}
		rows = append(rows, fmt.Sprintf("%-26s cache %5d  s3fifo %5.1f%%  w-tinylfu %5.1f%%  lru %5.1f%%  belady %5.1f%%",
			name, capacity, 100*r.s3fifo, 100*r.wtlfu, 100*r.lru, 100*r.opt))
		return r
	}
	for _, s := range []float64{0.9, 1.1} {
		tr := zipfTrace(objects, length, s, 1)
		for _, frac := range []float64{0.01, 0.1} {
			capacity := int(frac * objects)
			r := run(fmt.Sprintf("zipf %.1f", s), capacity, tr)
			if r.s3fifo < r.lru {
				t.Errorf("zipf %.1f, cache %d: s3fifo %.3f below lru %.3f", s, capacity, r.s3fifo, r.lru)
			}
			if r.opt < r.s3fifo {
				t.Errorf("belady %.3f below s3fifo %.3f: the optimum is wrong", r.opt, r.s3fifo)
			}
		}
	}
	for _, frac := range []float64{0.01, 0.1} {
		capacity := int(frac * objects)
		tr := scanTrace(objects, length, 0.9, 10*capacity, 2)
		r := run("zipf 0.9 + scan 10x cache", capacity, tr)
		if r.s3fifo < r.lru+0.05 {
			t.Errorf("scan trace, cache %d: s3fifo %.3f does not beat lru %.3f by 5 points", capacity, r.s3fifo, r.lru)
		}
	}
	t.Log("hit ratios (unit-size objects, " + fmt.Sprint(objects) + " objects, " + fmt.Sprint(length) + " requests):\n" + strings.Join(rows, "\n"))
}
