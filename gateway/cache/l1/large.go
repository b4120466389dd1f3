package l1

import (
	"sync"
)

// bodyOverhead is what one large body costs beside its bytes: its map slot,
// its FIFO slot and the slice header, rounded up. It keeps the accounting
// honest for many mid-sized bodies.
const bodyOverhead = 96

// largeBodies holds the bodies of large objects outside BigCache, in one
// byte-budgeted FIFO pool (the same eviction order BigCache uses). A body is
// an immutable []byte allocated once at fill time and shared by every hit;
// nothing ever writes to it again or returns it to a pool, so a response
// still streaming a body after its eviction or purge keeps exactly the bytes
// it started with, and the garbage collector frees the body once the last
// reader is done. That is the reference count; there is no other.
//
// Bodies are keyed by a unique id, never by the cache key: the BigCache
// entry of the object holds the id, so replacing an object can never pair
// new metadata with an old body or the reverse.
type largeBodies struct {
	mu     sync.RWMutex
	m      map[uint64]largeBody
	fifo   []uint64 // ids in insertion order; removed ids are skipped lazily
	head   int
	used   int64
	budget int64
}

type largeBody struct {
	body []byte
	key  string
}

// cost is the bytes a body counts against the budget.
func (b largeBody) cost() int64 { return int64(len(b.body)+len(b.key)) + bodyOverhead }

// victim is a body evicted to make room; its BigCache entry must go too.
type victim struct {
	id   uint64
	key  string
	cost int64
}

func newLargeBodies(budget int64) *largeBodies {
	return &largeBodies{m: map[uint64]largeBody{}, budget: budget}
}

// get returns the body stored under id.
func (l *largeBodies) get(id uint64) ([]byte, bool) {
	l.mu.RLock()
	b, ok := l.m[id]
	l.mu.RUnlock()
	return b.body, ok
}

// put stores body under id, first evicting the oldest bodies until it fits.
// It returns the evicted bodies; the caller drops their BigCache entries
// (outside this lock: BigCache's removal callback takes it).
func (l *largeBodies) put(id uint64, key string, body []byte) []victim {
	b := largeBody{body: body, key: key}
	c := b.cost()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []victim
	for l.used+c > l.budget && l.head < len(l.fifo) {
		vid := l.fifo[l.head]
		l.fifo[l.head] = 0
		l.head++
		if v, ok := l.m[vid]; ok {
			delete(l.m, vid)
			l.used -= v.cost()
			out = append(out, victim{id: vid, key: v.key, cost: v.cost()})
		}
	}
	l.m[id] = b
	l.used += c
	l.fifo = append(l.fifo, id)
	l.compact()
	return out
}

// compact drops consumed and dead FIFO slots once they outnumber the live
// ones, so deletes without evictions cannot grow the FIFO without bound.
func (l *largeBodies) compact() {
	n := len(l.fifo) - l.head
	if n < 64 || n < 2*len(l.m) {
		if l.head > 1024 && l.head > len(l.fifo)/2 {
			l.fifo = append(l.fifo[:0], l.fifo[l.head:]...)
			l.head = 0
		}
		return
	}
	live := l.fifo[:0]
	for _, id := range l.fifo[l.head:] {
		if _, ok := l.m[id]; ok {
			live = append(live, id)
		}
	}
	clear(l.fifo[len(live):])
	l.fifo = live
	l.head = 0
}

// remove drops the body under id and returns its cost (0 when it was gone).
func (l *largeBodies) remove(id uint64) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.m[id]
	if !ok {
		return 0
	}
	delete(l.m, id)
	l.used -= b.cost()
	return b.cost()
}

// usage returns the number of bodies and the bytes they count.
func (l *largeBodies) usage() (int, int64) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return len(l.m), l.used
}
