package l1

import (
	"sync"
	"sync/atomic"
)

// bodyOverhead is what one body with its own allocation costs beside its
// bytes: its map slot, its FIFO slot and the slice header, rounded up
// (measured: 82 to 107 bytes with the map's growth). It keeps the
// accounting honest for many mid-sized bodies.
const bodyOverhead = 96

// packedOverhead is what one packed body costs beside its bytes and its
// key's: its map slot (24 bytes, at the map's load factor) and its id in
// the chunk's list.
const packedOverhead = 48

// maxChunk is the size of the chunks small bodies are packed into. A
// reader still sending a packed body keeps its whole chunk alive after
// eviction, so chunks stay small: a slow client can pin at most this much
// beyond the budget.
const maxChunk = 64 << 10

// largeBodies holds the bodies of large objects outside BigCache, in one
// byte-budgeted FIFO pool (the same eviction order BigCache uses). A body is
// immutable once stored and shared by every hit; nothing ever writes to it
// again or returns its memory to a pool, so a response still streaming a
// body after its eviction or purge keeps exactly the bytes it started with,
// and the garbage collector frees the memory once the last reader is done.
// That is the reference count; there is no other.
//
// Bodies of packMax bytes and more have their own allocation, made at fill
// time. Smaller ones (those the splitter sends here when BigCache is full
// and the pool is not) are copied into append-only chunks of maxChunk bytes
// and indexed by a map without pointers: one heap object per chunk instead
// of one per body, so a pool holding hundreds of thousands of 1 KiB bodies
// costs the collector almost nothing to mark (measured with
// BenchmarkFullTierSmallObjects), and a body costs packedOverhead instead
// of bodyOverhead. A chunk is evicted whole, in FIFO order with the other
// bodies, and freed early once all its bodies are deleted. Bytes of a chunk
// are only ever appended past what was handed out, so packed bodies are as
// immutable as the others.
//
// Bodies are keyed by a unique id, never by the cache key: the BigCache
// entry of the object holds the id, so replacing an object can never pair
// new metadata with an old body or the reverse. Ids grow with insertion, so
// they also give the FIFO order between the two kinds.
type largeBodies struct {
	mu     sync.RWMutex
	m      map[uint64]largeBody
	fifo   []uint64 // ids in insertion order; removed ids are skipped lazily
	head   int
	packed map[uint64]span
	chunks []*chunk     // oldest first; the last one is being filled
	seq0   uint32       // seq of chunks[0]
	used   atomic.Int64 // written under mu; read without it by bytes
	budget int64

	chunkSize int
	packMax   int // bodies below this are packed
}

type largeBody struct {
	body []byte
	key  string
}

// cost is the bytes a body counts against the budget.
func (b largeBody) cost() int64 { return int64(len(b.body)+len(b.key)) + bodyOverhead }

// span locates a packed body (n bytes at off) and its key (kn bytes after
// it) in the chunk numbered seq.
type span struct {
	seq, off, n, kn uint32
}

type chunk struct {
	buf  []byte   // nil once freed
	ids  []uint64 // bodies packed here, in order
	live int
}

// victim is a body evicted to make room; its BigCache entry must go too.
type victim struct {
	id  uint64
	key string
}

// newLargeBodies makes a pool of budget bytes that packs bodies below
// packBelow bytes.
func newLargeBodies(budget, packBelow int64) *largeBodies {
	cs := int(min(maxChunk, max(budget/64, 4<<10)))
	return &largeBodies{m: map[uint64]largeBody{}, packed: map[uint64]span{}, budget: budget,
		chunkSize: cs, packMax: int(min(packBelow, int64(cs/8)))}
}

// packs reports whether a body of n bytes would be packed (copied into a
// chunk) rather than kept as the slice given.
func (l *largeBodies) packs(n int64) bool { return n < int64(l.packMax) }

// bytes returns the bytes counted against the budget.
func (l *largeBodies) bytes() int64 { return l.used.Load() }

// get returns the body stored under id.
func (l *largeBodies) get(id uint64) ([]byte, bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if b, ok := l.m[id]; ok {
		return b.body, true
	}
	s, ok := l.packed[id]
	if !ok {
		return nil, false
	}
	buf := l.chunks[s.seq-l.seq0].buf
	return buf[s.off : s.off+s.n : s.off+s.n], true
}

// put stores body under id, first evicting the oldest bodies until it fits.
// A body below packMax is copied (the caller may reuse body); a larger one
// is kept as given and must never be written again. put returns the
// evicted bodies; the caller drops their BigCache entries (outside this
// lock: BigCache's removal callback takes it).
func (l *largeBodies) put(id uint64, key string, body []byte) []victim {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.packs(int64(len(body))) {
		b := largeBody{body: body, key: key}
		out := l.evict(b.cost())
		l.m[id] = b
		l.used.Add(b.cost())
		l.fifo = append(l.fifo, id)
		l.compact()
		return out
	}
	need := len(body) + len(key)
	var out []victim
	var c *chunk
	for {
		if c = l.filling(); c != nil && len(c.buf)+need <= cap(c.buf) {
			out = append(out, l.evict(packedOverhead)...)
			if l.filling() == c {
				break
			}
			continue // evicting took the chunk being filled
		}
		out = append(out, l.evict(int64(l.chunkSize)+packedOverhead)...)
		c = &chunk{buf: make([]byte, 0, l.chunkSize)}
		l.chunks = append(l.chunks, c)
		l.used.Add(int64(l.chunkSize))
		break
	}
	off := len(c.buf)
	c.buf = append(append(c.buf, body...), key...)
	c.ids = append(c.ids, id)
	c.live++
	l.packed[id] = span{seq: l.seq0 + uint32(len(l.chunks)-1), off: uint32(off), n: uint32(len(body)), kn: uint32(len(key))}
	l.used.Add(packedOverhead)
	return out
}

// filling returns the chunk being filled, or nil.
func (l *largeBodies) filling() *chunk {
	if len(l.chunks) == 0 {
		return nil
	}
	if c := l.chunks[len(l.chunks)-1]; c.buf != nil {
		return c
	}
	return nil
}

// evict drops the oldest bodies until c more bytes fit: the older of the
// first unpacked body and the first chunk, as their ids say.
func (l *largeBodies) evict(c int64) []victim {
	var out []victim
	for l.used.Load()+c > l.budget {
		for l.head < len(l.fifo) {
			if _, ok := l.m[l.fifo[l.head]]; ok {
				break
			}
			l.fifo[l.head] = 0
			l.head++
		}
		l.dropFreedChunks()
		haveBody, haveChunk := l.head < len(l.fifo), len(l.chunks) > 0
		switch {
		case haveChunk && (!haveBody || l.chunks[0].ids[0] < l.fifo[l.head]):
			out = l.evictChunk(out)
		case haveBody:
			vid := l.fifo[l.head]
			l.fifo[l.head] = 0
			l.head++
			v := l.m[vid]
			delete(l.m, vid)
			l.used.Add(-v.cost())
			out = append(out, victim{id: vid, key: v.key})
		default:
			return out // empty: the new body alone exceeds the budget
		}
	}
	return out
}

// evictChunk drops the oldest chunk and every body still packed in it.
func (l *largeBodies) evictChunk(out []victim) []victim {
	c := l.chunks[0]
	for _, id := range c.ids {
		s, ok := l.packed[id]
		if !ok {
			continue
		}
		delete(l.packed, id)
		l.used.Add(-packedOverhead)
		out = append(out, victim{id: id, key: string(c.buf[s.off+s.n : s.off+s.n+s.kn])})
	}
	l.used.Add(-int64(l.chunkSize))
	c.buf, c.ids = nil, nil // readers keep their own slices of it
	l.chunks[0] = nil
	l.chunks = l.chunks[1:]
	l.seq0++
	return out
}

// dropFreedChunks forgets freed chunks at the head of the FIFO.
func (l *largeBodies) dropFreedChunks() {
	for len(l.chunks) > 0 && l.chunks[0].buf == nil {
		l.chunks[0] = nil
		l.chunks = l.chunks[1:]
		l.seq0++
	}
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

// remove drops the body under id. A chunk whose last body goes is freed at
// once, even the one being filled (the next packed body starts a new one).
func (l *largeBodies) remove(id uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if b, ok := l.m[id]; ok {
		delete(l.m, id)
		l.used.Add(-b.cost())
		return
	}
	s, ok := l.packed[id]
	if !ok {
		return
	}
	delete(l.packed, id)
	l.used.Add(-packedOverhead)
	c := l.chunks[s.seq-l.seq0]
	if c.live--; c.live == 0 {
		c.buf, c.ids = nil, nil
		l.used.Add(-int64(l.chunkSize))
		l.dropFreedChunks()
	}
}

// usage returns the number of bodies and the bytes they count.
func (l *largeBodies) usage() (int, int64) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return len(l.m) + len(l.packed), l.used.Load()
}
