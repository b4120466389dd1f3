package l2

import "sync/atomic"

// Eviction policies. Both work on byte sizes and are driven under the tier's
// lock (a hit of S3-FIFO under its read lock only: see touchShared). S3-FIFO (Yang et al., SOSP 2023) is the default: measured against
// LRU and Belady in policy_test.go, it wins on Zipf traces and clearly on a
// scan-polluted trace, and a hit only bumps a small counter instead of moving
// a list node.

// Policy names for Options.Policy.
const (
	PolicyS3FIFO = "s3fifo"
	PolicyLRU    = "lru"
)

// Queue identifiers stored in node.queue and in the index snapshot.
const (
	qNone  uint8 = 0
	qSmall uint8 = 1
	qMain  uint8 = 2
)

// node is one indexed object.
type node struct {
	hash uint64
	size int64 // bytes charged against the budget
	// freq is S3-FIFO's hit counter (0-3). Hits bump it under the tier's
	// read lock, concurrently, so it is atomic; the rest of the policy
	// reads and resets it under the write lock.
	freq       atomic.Uint32
	queue      uint8
	prev, next *node
}

// list is an intrusive doubly linked list; push at the head, pop at the tail.
type list struct {
	head, tail *node
	bytes      int64
	n          int
}

func (l *list) pushHead(n *node) {
	n.prev, n.next = nil, l.head
	if l.head != nil {
		l.head.prev = n
	}
	l.head = n
	if l.tail == nil {
		l.tail = n
	}
	l.bytes += n.size
	l.n++
}

func (l *list) remove(n *node) {
	if n.prev != nil {
		n.prev.next = n.next
	} else {
		l.head = n.next
	}
	if n.next != nil {
		n.next.prev = n.prev
	} else {
		l.tail = n.prev
	}
	n.prev, n.next = nil, nil
	l.bytes -= n.size
	l.n--
}

// evictionPolicy orders indexed nodes for eviction.
type evictionPolicy interface {
	// add inserts a new node; queue is a restored queue from the snapshot,
	// or qNone for a fresh insert.
	add(n *node, queue uint8)
	// touch records a hit, under the tier's write lock.
	touch(n *node)
	// touchShared records a hit under the tier's read lock, concurrently
	// with other touchShared calls, and reports whether it could; when it
	// cannot, the caller takes the write lock and calls touch.
	touchShared(n *node) bool
	// remove drops a node (deleted or replaced).
	remove(n *node)
	// victim removes and returns the next node to evict, nil when empty.
	victim() *node
	// each visits nodes from the next victim to the most protected, in an
	// order that add(n, n.queue) restores.
	each(fn func(n *node))
}

// s3fifo: a small FIFO (10% of bytes) filters one-hit wonders; objects hit
// while in it move to the main FIFO, the rest leave a ghost entry (hash
// only) so that a quick return goes straight to main. The main FIFO gives
// hit objects another round (CLOCK-like, frequency up to 3).
type s3fifo struct {
	small, main list
	budget      int64
	ghost       ghostSet
}

func newS3FIFO(budget int64) *s3fifo {
	return &s3fifo{budget: budget, ghost: newGhost(4096)}
}

func (p *s3fifo) add(n *node, queue uint8) {
	switch {
	case queue == qMain:
		n.queue = qMain
		p.main.pushHead(n)
	case queue == qSmall:
		n.queue = qSmall
		p.small.pushHead(n)
	case p.ghost.remove(n.hash):
		n.queue = qMain
		n.freq.Store(0)
		p.main.pushHead(n)
	default:
		n.queue = qSmall
		n.freq.Store(0)
		p.small.pushHead(n)
	}
	// The ghost remembers about as many keys as main holds objects.
	p.ghost.setCap(max(p.main.n+p.small.n, 4096))
}

func (p *s3fifo) touch(n *node) { p.touchShared(n) }

// touchShared bumps n's counter up to 3. A hit needs nothing else, so
// hits of S3-FIFO never take the tier's write lock; a saturated counter
// (the usual state of a hot object) is only read, so concurrent hits of
// one object do not even contend for its cache line.
func (p *s3fifo) touchShared(n *node) bool {
	for {
		f := n.freq.Load()
		if f >= 3 || n.freq.CompareAndSwap(f, f+1) {
			return true
		}
	}
}

func (p *s3fifo) remove(n *node) {
	switch n.queue {
	case qSmall:
		p.small.remove(n)
	case qMain:
		p.main.remove(n)
	}
	n.queue = qNone
}

func (p *s3fifo) victim() *node {
	for {
		if p.small.n > 0 && (p.small.bytes >= p.budget/10 || p.main.n == 0) {
			n := p.small.tail
			p.small.remove(n)
			if n.freq.Load() > 0 {
				n.freq.Store(0)
				n.queue = qMain
				p.main.pushHead(n)
				continue
			}
			n.queue = qNone
			p.ghost.add(n.hash)
			return n
		}
		if p.main.n == 0 {
			return nil
		}
		n := p.main.tail
		p.main.remove(n)
		if f := n.freq.Load(); f > 0 {
			n.freq.Store(f - 1)
			p.main.pushHead(n)
			continue
		}
		n.queue = qNone
		return n
	}
}

func (p *s3fifo) each(fn func(n *node)) {
	for n := p.small.tail; n != nil; n = n.prev {
		fn(n)
	}
	for n := p.main.tail; n != nil; n = n.prev {
		fn(n)
	}
}

// ghostSet is a bounded FIFO set of hashes.
type ghostSet struct {
	m    map[uint64]uint64 // hash -> sequence number of its live ring slot
	ring []ghostSlot
	head int
	seq  uint64
	cap  int
}

type ghostSlot struct{ hash, seq uint64 }

func newGhost(c int) ghostSet {
	return ghostSet{m: make(map[uint64]uint64), cap: c}
}

func (g *ghostSet) setCap(c int) { g.cap = c }

func (g *ghostSet) add(h uint64) {
	if _, ok := g.m[h]; ok {
		return
	}
	g.seq++
	g.m[h] = g.seq
	g.ring = append(g.ring, ghostSlot{h, g.seq})
	for len(g.m) > g.cap && g.head < len(g.ring) {
		s := g.ring[g.head]
		// A slot is stale when its hash was removed (or re-added later).
		if g.m[s.hash] == s.seq {
			delete(g.m, s.hash)
		}
		g.head++
	}
	// Drop slots of removed hashes once they pile up.
	if len(g.ring)-g.head > 2*g.cap+1024 {
		live := g.ring[:0]
		for _, s := range g.ring[g.head:] {
			if g.m[s.hash] == s.seq {
				live = append(live, s)
			}
		}
		g.ring, g.head = live, 0
	}
	// Compact the ring once its dead prefix dominates.
	if g.head > 1024 && g.head > len(g.ring)/2 {
		g.ring = append(g.ring[:0], g.ring[g.head:]...)
		g.head = 0
	}
}

func (g *ghostSet) remove(h uint64) bool {
	if _, ok := g.m[h]; !ok {
		return false
	}
	delete(g.m, h)
	return true
}

// lru is a plain least-recently-used list, kept for comparison.
type lru struct{ l list }

func (p *lru) add(n *node, _ uint8) { n.queue = qMain; p.l.pushHead(n) }
func (p *lru) touch(n *node) {
	if n.queue == qMain {
		p.l.remove(n)
		p.l.pushHead(n)
	}
}

// touchShared cannot move a node: LRU hits take the write lock.
func (p *lru) touchShared(*node) bool { return false }
func (p *lru) remove(n *node) {
	if n.queue == qMain {
		p.l.remove(n)
	}
	n.queue = qNone
}
func (p *lru) victim() *node {
	n := p.l.tail
	if n != nil {
		p.l.remove(n)
		n.queue = qNone
	}
	return n
}
func (p *lru) each(fn func(n *node)) {
	for n := p.l.tail; n != nil; n = n.prev {
		fn(n)
	}
}
