package cache

import (
	"context"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// group collapses concurrent fetches of one key into one flight.
type group struct {
	mu sync.Mutex
	m  map[string]*flight
	// pass remembers keys whose last response could not be shared (Varnish's
	// hit-for-miss): their requests go to the origin at once instead of
	// queueing behind a leader only to be sent on after its headers arrive.
	pass map[string]time.Time
	// left holds, per slot of keys (leftSlot), when a flight last left the
	// group (UnixNano): see leftRecently.
	left [leftSlots]atomic.Int64
}

// leftSlots is how many slots left spreads keys over: a flight leaving
// makes the next leader of the other keys in its slot look the store up
// once more (within recheckWindow), so at 100 fills a second about 5% of
// misses pay a second lookup.
const leftSlots = 4096

// recheckWindow is how long after a flight left the group a new leader of
// its key looks the store up again before going to the origin: longer than
// the time between a request's lookup and its join on a loaded PoP.
const recheckWindow = time.Second

// leftSlot is key's slot in left (FNV-1a: keys are the cache's own; a
// collision costs one lookup).
func leftSlot(key string) uint32 { return fnv32(key) % leftSlots }

// leftRecently reports whether a flight of key (or of a key in its slot)
// left the group within recheckWindow before now. A request that looked
// the store up before that flight stored its object, and joins after the
// flight left, becomes the leader of a new one: it must look again before
// it fetches what is now stored (nginx's proxy_cache_lock and Varnish's
// waiting list do not have this gap, as their lookup and wait are one
// step under one lock; here the lookup runs outside the group's lock,
// the fast path's even before net/http parses the request).
func (g *group) leftRecently(key string, now time.Time) bool {
	return now.UnixNano()-g.left[leftSlot(key)].Load() < int64(recheckWindow)
}

// passFor is how long a key stays in the pass memo; maxPass bounds its size.
const (
	passFor = 2 * time.Minute
	maxPass = 65536
)

func (g *group) markPass(key string, now time.Time) {
	g.mu.Lock()
	if g.pass == nil || len(g.pass) >= maxPass {
		g.pass = map[string]time.Time{} // crude but bounded: start over
	}
	g.pass[key] = now.Add(passFor)
	g.mu.Unlock()
}

func (g *group) clearPass(key string) {
	g.mu.Lock()
	delete(g.pass, key)
	g.mu.Unlock()
}

func (g *group) isPass(key string, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	until, ok := g.pass[key]
	if ok && now.After(until) {
		delete(g.pass, key)
		return false
	}
	return ok
}

// flight is one origin fetch that several requests may share. Readers are
// registered at join time, under the group lock, so that once the flight is
// released (removed from the map) its set of readers is final and the fill
// can free body bytes every reader has consumed.
//
// Only the leader's request goes to the origin (run, with its context), so
// only its access log line has the origin fields (middleware.MarkOrigin);
// the followers' lines say cache=collapsed and have none, as nginx logs no
// $upstream_addr for the requests proxy_cache_lock held and Varnish no
// backend fetch for its waiting list: one line with origin_time per origin
// request, so counting them counts the origin's load. A follower that
// fetches on its own after all (Vary, a response it may not share) gets
// its own.
type flight struct {
	ready  chan struct{} // closed when res is set
	res    result
	fill   *fill
	header http.Header // the leader's request header, for Vary checks
	// seq is its key's purge clock (purgeClock) when the flight started: a
	// request that comes after a purge or an invalidation must not join
	// it (its body may be what was purged), nor may it store its result.
	seq uint64
}

type resultKind int

const (
	kindStream resultKind = iota // a shareable response; read it from the fill
	kindStored                   // serve res.stored (revalidated by a 304)
	kindPass                     // not shareable: each request goes to origin itself
	kindError                    // origin failed: res.err
)

type result struct {
	kind    resultKind
	status  int
	header  http.Header // kindStream: response header, read-only
	length  int64       // kindStream: Content-Length or -1
	stored  *stored     // kindStored: the entry; kindPass/kindError: the stale candidate
	err     error
	vary    []string // kindStream: the response's Vary fields
	storing bool     // kindStream: a tier is storing the body
	hit     bool     // kindStored: stored by a fill that ended as the leader came (a hit, not a revalidation)
	// notStored is why a kindPass response was not stored (a
	// policy.Reason, or "too-large"), for its Cache-Status detail.
	notStored string
}

// inFlight reports whether a fetch of key is under way.
func (g *group) inFlight(key string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.m[key] != nil
}

// join returns the flight for key and a registered reader of it; leader is
// true when the caller created the flight and must run it. seq is the
// key's purge clock now: a flight that started before a later purge
// or invalidation is not joined but replaced (its own readers finish it).
// Without that, a fill still in the group when its URL was purged (its
// pump not yet done, or a fetch under way) served the purged body to the
// requests after the purge.
func (g *group) join(key string, header http.Header, seq uint64) (f *flight, rd *reader, leader bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if f = g.m[key]; f != nil && f.seq == seq {
		if rd = f.fill.register(); rd != nil {
			return f, rd, false
		}
		// The fill no longer holds the body from its start: fetch anew.
	}
	f = newFlight(header, seq)
	g.m[key] = f
	return f, f.fill.register(), true
}

func newFlight(header http.Header, seq uint64) *flight {
	return &flight{ready: make(chan struct{}), fill: newFill(), header: header, seq: seq}
}

// release publishes the result. With keep, the flight stays joinable: a
// response being stored streams from its fill to requests that arrive while
// the body is still coming (the pump calls forget when the fill ends).
// Otherwise later requests start a new flight.
func (g *group) release(key string, f *flight, res result, keep bool) {
	f.res = res
	if !keep {
		g.forget(key, f)
	}
	close(f.ready)
}

// forget removes f from the group if it is still the flight for key.
func (g *group) forget(key string, f *flight) {
	g.mu.Lock()
	gone := g.m[key] == f
	if gone {
		delete(g.m, key)
	}
	g.mu.Unlock()
	if gone { // hashed outside the lock every fill takes
		g.left[leftSlot(key)].Store(time.Now().UnixNano())
	}
}

const (
	chunkSize = 32 << 10
	// window bounds how far a non-stored body runs ahead of its slowest
	// reader, which bounds memory for objects too large to store.
	window = 1 << 20
)

// fill is a response body being read from the origin once and streamed to
// any number of registered readers. While a tier stores the body (retain),
// the origin is read at full speed and the body is kept until readers have
// consumed it (bounded by the tier's object limit). Otherwise the origin is
// read at most window bytes ahead of the slowest reader, and the fetch stops
// when the last reader leaves.
type fill struct {
	mu      sync.Mutex
	chunks  [][]byte
	base    int64 // offset of chunks[0]
	size    int64 // bytes appended so far
	done    bool
	err     error
	retain  bool // keep every chunk (late joiners, storage in progress)
	storing bool // a tier is storing the body: go on without readers
	readers map[*reader]struct{}
	notify  chan struct{} // closed and replaced when data arrives or the fill ends
	space   chan struct{} // closed and replaced when a reader advances or leaves
}

func newFill() *fill {
	return &fill{readers: map[*reader]struct{}{}, notify: make(chan struct{}), space: make(chan struct{})}
}

type reader struct {
	f      *fill
	off    int64
	closed bool
}

// register adds a reader from offset 0, or returns nil when the start of the
// body is already gone.
func (f *fill) register() *reader {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.base > 0 || (f.size > 0 && !f.retain) {
		return nil
	}
	r := &reader{f: f}
	f.readers[r] = struct{}{}
	return r
}

func (f *fill) setRetain(v bool) {
	f.mu.Lock()
	f.retain = v
	f.trimLocked()
	f.mu.Unlock()
}

func (f *fill) setStoring(v bool) {
	f.mu.Lock()
	f.storing = v
	f.wakePump()
	f.mu.Unlock()
}

func (f *fill) wake() {
	close(f.notify)
	f.notify = make(chan struct{})
}

func (f *fill) wakePump() {
	close(f.space)
	f.space = make(chan struct{})
}

// append adds p (owned by the fill from now on).
func (f *fill) append(p []byte) {
	f.mu.Lock()
	f.chunks = append(f.chunks, p)
	f.size += int64(len(p))
	f.wake()
	f.mu.Unlock()
}

func (f *fill) finish(err error) {
	f.mu.Lock()
	f.done = true
	f.err = err
	f.wake()
	f.mu.Unlock()
}

// trimLocked frees chunks every reader has consumed, unless retained.
func (f *fill) trimLocked() {
	if f.retain {
		return
	}
	minOff := f.size
	for r := range f.readers {
		minOff = min(minOff, r.off)
	}
	for len(f.chunks) > 0 && f.base+int64(len(f.chunks[0])) <= minOff {
		f.base += int64(len(f.chunks[0]))
		f.chunks[0] = nil
		f.chunks = f.chunks[1:]
	}
}

// waitSpace blocks the pump while the body runs too far ahead of the readers.
// It returns false when nobody needs more of the body: no reader is left
// and no tier is storing it.
func (f *fill) waitSpace(ctx context.Context) bool {
	f.mu.Lock()
	for {
		if f.retain {
			f.mu.Unlock()
			return true
		}
		if len(f.readers) == 0 {
			storing := f.storing
			f.mu.Unlock()
			return storing
		}
		minOff := f.size
		for r := range f.readers {
			minOff = min(minOff, r.off)
		}
		if f.size-minOff < window {
			f.mu.Unlock()
			return true
		}
		ch := f.space
		f.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
		f.mu.Lock()
	}
}

// Read copies the next bytes for this reader, waiting for the origin as
// needed. It returns io.EOF at the end of a complete body, the origin's error
// for a broken one, or ctx's error when the client goes away.
func (r *reader) Read(ctx context.Context, p []byte) (int, error) {
	f := r.f
	f.mu.Lock()
	for {
		if r.off < f.size {
			pos := f.base
			n := 0
			for _, c := range f.chunks {
				end := pos + int64(len(c))
				if r.off < end {
					n = copy(p, c[r.off-pos:])
					break
				}
				pos = end
			}
			r.off += int64(n)
			f.trimLocked()
			f.wakePump()
			f.mu.Unlock()
			return n, nil
		}
		if f.done {
			err := f.err
			f.mu.Unlock()
			if err == nil {
				err = io.EOF
			}
			return 0, err
		}
		ch := f.notify
		f.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		f.mu.Lock()
	}
}

// Close detaches the reader; the fill goes on for the others (and for the
// tier storing it).
func (r *reader) Close() {
	f := r.f
	f.mu.Lock()
	if !r.closed {
		r.closed = true
		delete(f.readers, r)
		f.trimLocked()
		f.wakePump()
	}
	f.mu.Unlock()
}

// idle reports whether the reader has consumed everything that has arrived
// while more is still to come.
func (r *reader) idle() bool {
	f := r.f
	f.mu.Lock()
	defer f.mu.Unlock()
	return r.off >= f.size && !f.done
}
