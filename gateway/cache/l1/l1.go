// Package l1 is the in-memory cache tier on github.com/allegro/bigcache/v3:
// a byte budget, one compact buffer per object (metadata and body encoded
// together), and a TinyLFU admission filter.
//
// # Large bodies
//
// BigCache has no way to lend out an entry: Get copies the whole entry into
// a fresh allocation. For a 1 KiB object that copy is noise; for a 256 KiB
// one it was most of the CPU of a hit (the copy, the allocation, and the
// garbage collection it causes; measured with the cache's L1Hit benchmark
// and the peer benchmark). So objects whose encoding reaches
// Options.LargeBody keep only their metadata in BigCache, which stays the
// index (lookups, Scan for purge by URL, prefix, surrogate key and site,
// UpdateMeta for 304s and soft purge), and their body in a side pool of
// immutable byte slices that every hit shares without copying.
//
// The side pool has its own byte budget, Options.LargeBytes, carved out of
// Options.Bytes: BigCache's queues fill to their configured size under any
// churn (they reclaim space only by evicting at their maximum), so the two
// cannot share one dynamic budget without the total exceeding Bytes. What
// moves instead is the size from which bodies go to the pool: while
// BigCache is full and the pool is not, smaller bodies (down to
// Options.LargeBodyMin) go there too, and back while the pool is full and
// BigCache is not, so that traffic of small objects does not leave half of
// the memory idle (see splitter). The pool evicts in insertion order like
// BigCache, uses the same admission filter, and removing an object from
// BigCache in any way (Delete, purge, replacement, eviction) removes its
// body. A body evicted or purged while a slow client is still being sent it
// stays intact until that response ends: bodies are never reused or written
// after they are stored (see largeBodies).
//
// # Hot objects
//
// The most requested objects (three recent requests) are also kept decoded
// in a small memo (hotEntries: a sixty-fourth of Bytes, at most 16 MiB), so
// their hits skip BigCache's copy and the metadata decoding. Every removal
// from BigCache drops the key from the memo first, so purges and
// replacements show on the next read. GetBytes therefore returns metadata
// that other readers may share: callers copy it before changing it.
//
// # Memory
//
// Options.Preallocate reserves BigCache's queues at full size so they never
// double and copy while filling; see its doc for the collector setting it
// needs. The frequency sketch costs 8 bytes per KiB of BigCache's budget.
// Small bodies the splitter sends to the side pool are packed into 64 KiB
// chunks (see largeBodies): about packedOverhead (48 bytes) and the key
// beside the body, plus the object's index entry in BigCache, and no heap
// object of their own for the Go collector to mark. They go there only
// while BigCache is full and the pool has room.
//
// BigCache evicts in FIFO order per shard, which alone loses to LRU on
// skewed traffic. Once the tier is under pressure, a new object is admitted
// only when the frequency sketch has seen its key before (TinyLFU admission
// with a "second request" threshold), which keeps one-hit wonders from pushing
// popular objects out; measured with package trace. The bar an object must
// pass is the average frequency of recent victims; it decays while
// newcomers are refused and nothing is evicted, or the tier would stay
// below its budget for good.
//
// It owns memory storage only. It must not know HTTP caching rules.
package l1

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/allegro/bigcache/v3"

	"github.com/meridian-edge/meridian/gateway/cache/freq"
	"github.com/meridian-edge/meridian/gateway/cache/tier"
)

const mib = 1 << 20

// Entry layouts in BigCache: a tag byte, then either the metadata followed by
// the body (inline), or an 8-byte body id followed by the metadata (large:
// the body is in the side pool).
const (
	tagInline byte = 0
	tagLarge  byte = 1
	largeHdr       = 1 + 8
	// maxLargeMeta bounds the metadata of a large object, which BigCache
	// holds; shards are sized for it.
	maxLargeMeta = 64 << 10
)

// Admission policies.
const (
	// AdmitTinyLFU admits every object while the tier has room and, under
	// pressure, only objects whose key was requested before.
	AdmitTinyLFU = "tinylfu"
	// AdmitAlways admits every object (plain BigCache FIFO).
	AdmitAlways = "always"
)

// Options configures the tier.
type Options struct {
	// Bytes is the memory budget, large bodies included. BigCache budgets
	// in whole MiB, so its part is rounded down to MiB; at least 1 MiB.
	// Default 512 MiB.
	Bytes int64
	// MaxObject is the largest encoded object (headers and body) the tier
	// holds; larger ones get ErrTooLarge. Default 1 MiB, and at most a
	// quarter of one BigCache shard (an eighth of LargeBytes when large
	// bodies are held apart).
	MaxObject int64
	// LargeBody is the encoded size (headers and body) from which an
	// object's body is always held outside BigCache, shared by hits without
	// a copy (smaller ones may be too, see LargeBodyMin). Default 8 KiB;
	// negative keeps every body in BigCache.
	LargeBody int64
	// LargeBodyMin is how far the tier may lower LargeBody while BigCache
	// evicts and the side pool has room, so that smaller bodies use the
	// pool's budget instead of leaving it idle (see splitter); it raises
	// it back, up to LargeBody, while the pool evicts and BigCache has
	// room. Default 1 KiB; negative keeps the threshold at LargeBody.
	LargeBodyMin int64
	// LargeBytes is the part of Bytes for bodies held outside BigCache.
	// Default half of Bytes when Bytes is at least 64 MiB; smaller budgets
	// keep every body in BigCache (LargeBody is then ignored). It must
	// leave BigCache at least 1 MiB.
	LargeBytes int64
	// Preallocate sizes BigCache's queues at their maximum from the start
	// instead of letting them double (and copy) as they fill. The memory is
	// reserved, not touched: the process grows only as objects arrive, and
	// never holds the garbage of the old queues or their slack of up to half
	// their size (about 1.2 KB per cached 1 KiB object, measured with the
	// peer benchmark's memory test). The Go collector counts the reserved
	// memory as live heap, so pair it with a lower GC percentage
	// (cache.GCPercent) or the default GOGC=100 lets garbage grow as
	// large as the reservation.
	Preallocate bool
	// Admission is AdmitTinyLFU (default) or AdmitAlways.
	Admission string
	// Logger receives eviction anomalies; nil discards.
	Logger *slog.Logger
}

// Tier is the BigCache-backed L1 tier.
type Tier struct {
	bc         *bigcache.BigCache
	budget     int64 // BigCache's part
	maxObject  int64
	large      *largeBodies // nil: no side pool
	split      *splitter    // with large: which bodies go there
	hot        *hotEntries
	admitAll   bool
	sketch     *freq.Sketch
	seed       maphash.Seed
	live       atomic.Int64 // bytes of live BigCache entries
	victimFreq atomic.Int64 // average frequency of evicted entries, x16
	refusals   atomic.Int64 // admissions refused since the last eviction
	objects    atomic.Int64
	nextID     atomic.Uint64
	bufs       sync.Pool
	log        *slog.Logger
}

// New creates an L1 tier.
func New(opts Options) (*Tier, error) {
	if opts.Bytes == 0 {
		opts.Bytes = 512 * mib
	}
	if opts.Bytes < mib {
		return nil, fmt.Errorf("l1: Bytes %d is below the 1 MiB minimum BigCache can budget; set at least 1048576", opts.Bytes)
	}
	if opts.MaxObject == 0 {
		opts.MaxObject = mib
	}
	if opts.MaxObject < 0 {
		return nil, fmt.Errorf("l1: MaxObject %d must be positive", opts.MaxObject)
	}
	if opts.LargeBytes < 0 {
		return nil, fmt.Errorf("l1: LargeBytes %d must not be negative (0 means the default)", opts.LargeBytes)
	}
	if opts.LargeBytes > 0 && opts.Bytes-opts.LargeBytes < mib {
		return nil, fmt.Errorf("l1: LargeBytes %d leaves BigCache less than 1 MiB of Bytes %d; lower LargeBytes or raise Bytes", opts.LargeBytes, opts.Bytes)
	}
	if opts.LargeBody == 0 {
		opts.LargeBody = 8 << 10
	}
	if opts.LargeBytes == 0 && opts.LargeBody > 0 && opts.Bytes >= 64*mib {
		opts.LargeBytes = opts.Bytes / 2
	}
	if opts.LargeBody < 0 {
		opts.LargeBytes = 0
	}
	switch {
	case opts.LargeBodyMin > 0 && opts.LargeBody > 0 && opts.LargeBodyMin > opts.LargeBody:
		return nil, fmt.Errorf("l1: LargeBodyMin %d exceeds LargeBody %d; it is how far LargeBody may be lowered, so set it at most LargeBody (or negative to keep LargeBody fixed)", opts.LargeBodyMin, opts.LargeBody)
	case opts.LargeBodyMin == 0:
		opts.LargeBodyMin = min(1<<10, opts.LargeBody)
	case opts.LargeBodyMin < 0:
		opts.LargeBodyMin = opts.LargeBody
	}
	switch opts.Admission {
	case "":
		opts.Admission = AdmitTinyLFU
	case AdmitTinyLFU, AdmitAlways:
	default:
		return nil, fmt.Errorf("l1: unknown admission policy %q; use %q or %q", opts.Admission, AdmitTinyLFU, AdmitAlways)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	mb := int((opts.Bytes - opts.LargeBytes) / mib)
	budget := int64(mb) * mib
	// The largest entry BigCache must hold: a whole object, or only the
	// metadata of one whose body is held apart.
	maxEntry := opts.MaxObject
	if opts.LargeBytes > 0 {
		maxEntry = min(opts.MaxObject, opts.LargeBody+maxLargeMeta)
	}
	// Enough shards for concurrency, but each shard must hold several of the
	// largest entries, or big entries would evict whole shards.
	shards := 1
	for shards < 256 && budget/int64(shards*2) >= 4*maxEntry {
		shards *= 2
	}
	if opts.LargeBytes > 0 {
		opts.MaxObject = min(opts.MaxObject, opts.LargeBytes/8)
	} else if opts.MaxObject > budget/int64(shards)/4 {
		opts.MaxObject = budget / int64(shards) / 4
	}
	t := &Tier{
		budget:    budget,
		maxObject: opts.MaxObject,
		admitAll:  opts.Admission == AdmitAlways,
		seed:      maphash.MakeSeed(),
		log:       opts.Logger,
	}
	t.hot = newHotEntries(min(opts.Bytes/64, 16*mib))
	if opts.LargeBytes > 0 {
		t.large = newLargeBodies(opts.LargeBytes, opts.LargeBody)
		t.split = newSplitter(opts.LargeBodyMin, opts.LargeBody, budget, opts.LargeBytes)
	}
	// One sketch word per expected entry: 8 bytes per KiB of BigCache's
	// part, assuming 1 KiB entries (small objects dominate counts), and per
	// 64 KiB of the large-body pool.
	t.sketch = freq.New(min(max(int(budget/1024+opts.LargeBytes/(64<<10)), 1024), 1<<24))
	// BigCache's first queue is InitialShardSize (MaxEntriesInWindow per
	// shard) times MaxEntrySize bytes; it also sizes each shard's key maps
	// and its entry buffer by them, so keep the count modest.
	perShard, entrySize := 64, 256 // queues start small and double
	if opts.Preallocate {
		perShard, entrySize = 256, max(int(budget)/shards/256, 256)
	}
	cfg := bigcache.Config{
		Shards:             shards,
		LifeWindow:         100 * 365 * 24 * time.Hour, // expiry is HTTP's job, not BigCache's
		CleanWindow:        0,                          // no cleaner goroutine
		MaxEntriesInWindow: shards * perShard,
		MaxEntrySize:       entrySize, // initial allocation only; queues grow to HardMaxCacheSize
		HardMaxCacheSize:   mb,
		Hasher:             hasher{seed: t.seed},
		OnRemoveWithReason: t.onRemove,
		Logger:             nopLogger{},
	}
	bc, err := bigcache.New(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("l1: start bigcache: %w", err)
	}
	t.bc = bc
	t.bufs.New = func() any { return new(bytes.Buffer) }
	return t, nil
}

type hasher struct{ seed maphash.Seed }

func (h hasher) Sum64(s string) uint64 { return maphash.String(h.seed, s) }

type nopLogger struct{}

func (nopLogger) Printf(string, ...any) {}

// largeID returns the side-pool id of a large entry, or 0.
func largeID(entry []byte) uint64 {
	if len(entry) < largeHdr || entry[0] != tagLarge {
		return 0
	}
	return binary.LittleEndian.Uint64(entry[1:largeHdr])
}

func (t *Tier) onRemove(key string, entry []byte, reason bigcache.RemoveReason) {
	t.hot.remove(key)
	t.live.Add(-int64(len(entry)))
	t.objects.Add(-1)
	if id := largeID(entry); id != 0 {
		t.large.remove(id)
	}
	if reason == bigcache.NoSpace {
		t.noteVictim(key)
		if t.split != nil {
			t.split.fullBC.Add(1)
		}
	}
}

// noteVictim folds an evicted key's frequency into the admission bar.
func (t *Tier) noteVictim(key string) {
	if t.admitAll {
		return
	}
	// Exponentially weighted average of evicted keys' frequency, in
	// sixteenths: the admission bar.
	t.refusals.Store(0)
	f := int64(t.sketch.Estimate(maphash.String(t.seed, key))) * 16
	for {
		old := t.victimFreq.Load()
		if t.victimFreq.CompareAndSwap(old, old+(f-old)/16) {
			break
		}
	}
}

// Name implements tier.Tier.
func (t *Tier) Name() string { return "l1" }

// MaxObject returns the largest encoded object the tier accepts.
func (t *Tier) MaxObject() int64 { return t.maxObject }

// Get implements tier.Tier. Every lookup, hit or miss, counts toward the
// key's admission frequency.
func (t *Tier) Get(_ context.Context, key string) (*tier.Object, error) {
	m, body, err := t.GetBytes(key)
	if err != nil {
		return nil, err
	}
	return &tier.Object{Meta: m, Body: io.NopCloser(bytes.NewReader(body))}, nil
}

// GetBytes is Get without the reader wrapper: the body is returned as a byte
// slice. The cache uses it on the hit path. The metadata and the body may be
// shared with the tier and other readers: copy before modifying either. Both
// stay valid (and unchanged) for as long as the caller holds them, even if
// the object is evicted or purged meanwhile.
func (t *Tier) GetBytes(key string) (*tier.Meta, []byte, error) {
	h := maphash.String(t.seed, key)
	t.sketch.Increment(h)
	if e, ok := t.hot.get(key); ok {
		return e.meta, e.body, nil
	}
	since := t.hot.removals.Load()
	b, err := t.bc.Get(key)
	if err != nil {
		return nil, nil, tier.ErrNotFound
	}
	m, body, id, err := decodeEntry(b)
	if err != nil {
		t.log.Warn("l1: dropping undecodable entry", "key", key, "err", err)
		_ = t.bc.Delete(key)
		return nil, nil, tier.ErrNotFound
	}
	if id != 0 {
		var ok bool
		if body, ok = t.large.get(id); !ok {
			// Evicted from the side pool a moment ago; its BigCache entry
			// is being removed by the evicting Put.
			return nil, nil, tier.ErrNotFound
		}
	}
	if t.sketch.Estimate(h) >= hotAfter {
		t.hot.add(key, hotEntry{meta: m, body: body, cost: int64(len(b)) + hotOverhead}, since)
	}
	return m, body, nil
}

// hotAfter is how many recent requests make a key worth keeping decoded.
const hotAfter = 3

// decodeEntry splits a BigCache entry into metadata and, for an inline
// entry, the body; for a large entry it returns the side-pool id instead.
func decodeEntry(b []byte) (m *tier.Meta, body []byte, id uint64, err error) {
	if len(b) == 0 {
		return nil, nil, 0, errors.New("l1: empty entry")
	}
	switch b[0] {
	case tagInline:
		m, body, err = tier.DecodeMeta(b[1:])
		return m, body, 0, err
	case tagLarge:
		if len(b) < largeHdr {
			return nil, nil, 0, errors.New("l1: truncated large entry")
		}
		m, _, err = tier.DecodeMeta(b[largeHdr:])
		return m, nil, largeID(b), err
	}
	return nil, nil, 0, fmt.Errorf("l1: unknown entry tag %d", b[0])
}

func (t *Tier) admit(key string, size int64, large bool) bool {
	if t.admitAll {
		return true
	}
	if large {
		if t.large.bytes()+size <= t.large.budget*9/10 {
			return true
		}
		t.split.fullPool.Add(1)
	} else {
		if t.live.Load()+size <= t.budget*9/10 {
			return true
		}
		if t.split != nil {
			t.split.fullBC.Add(1)
		}
	}
	// TinyLFU compares the candidate with the entry it would evict. BigCache
	// does not expose its FIFO victim, so compare with the recent victims'
	// average frequency instead: admit what is asked for more often than
	// what the cache has been throwing out, and never a first request.
	est := t.sketch.Estimate(maphash.String(t.seed, key))
	if est >= 2 && est*16 > uint64(t.victimFreq.Load()) {
		return true
	}
	// The bar is only as fresh as the last eviction. A bar above every
	// newcomer admits none, so nothing is evicted and the bar never moves:
	// the tier would stay at nine tenths of its budget for good (measured:
	// 90% of each side with the large-body pool, 95% of BigCache without,
	// on bench/cachetrace's Zipf traces). So a run of refusals without an
	// eviction lowers the bar until something gets in again.
	if t.refusals.Add(1) >= staleBar {
		t.refusals.Store(0)
		for {
			old := t.victimFreq.Load()
			if t.victimFreq.CompareAndSwap(old, old-old/16) {
				break
			}
		}
	}
	return false
}

// staleBar is how many refusals in a row, without an eviction, make the
// admission bar stale. Chosen on bench/cachetrace's Zipf(0.9, 1.1) traces
// at 1% and 10% of the catalogue: 64 kept L1 at LRU's hit ratio at 10%
// (88.6% at alpha 1.1), 16 cost 0.4 to 0.9 points at 1%; 32 is in between
// (88.7% at 10%, within 0.3 points of 64 at 1%).
const staleBar = 32

// Put implements tier.Tier.
func (t *Tier) Put(_ context.Context, key string, meta *tier.Meta) (tier.Writer, error) {
	if meta.Size > t.maxObject {
		return nil, tier.ErrTooLarge
	}
	buf := t.bufs.Get().(*bytes.Buffer)
	buf.Reset()
	buf.WriteByte(tagInline)
	buf.Write(tier.AppendMeta(buf.AvailableBuffer(), meta))
	w := &writer{t: t, key: key, buf: buf, metaLen: buf.Len(), sized: meta.Size >= 0}
	large := w.sized && t.route(key, int64(w.metaLen), meta.Size)
	if !t.admit(key, int64(w.metaLen)+max(meta.Size, 0), large) {
		w.release()
		return nil, tier.ErrNotAdmitted
	}
	w.pool = large
	if large && !t.large.packs(meta.Size) {
		// Going to the pool as is: read the body straight into its final,
		// exactly sized home. A body to be packed is read into buf like an
		// inline one and copied into its chunk at Commit.
		w.body = make([]byte, 0, meta.Size)
	}
	return w, nil
}

type writer struct {
	t        *Tier
	key      string
	buf      *bytes.Buffer // tag and metadata, then an inline body
	metaLen  int
	body     []byte // a large body, when its size was known at Put
	sized    bool   // the size was known at Put, which chose the body's home
	pool     bool   // the body goes to the pool (when sized)
	tooLarge bool
	done     bool
}

func (w *writer) Write(p []byte) (int, error) {
	if w.tooLarge || w.done {
		return len(p), nil
	}
	if int64(w.buf.Len()+len(w.body)+len(p)) > w.t.maxObject {
		w.tooLarge = true
		w.release()
		w.body = nil
		return len(p), nil
	}
	if w.body != nil {
		w.body = append(w.body, p...)
		return len(p), nil
	}
	return w.buf.Write(p)
}

func (w *writer) release() {
	if w.buf != nil {
		if w.buf.Cap() <= 4*mib {
			w.t.bufs.Put(w.buf)
		}
		w.buf = nil
	}
}

func (w *writer) Commit() error {
	if w.done {
		return errors.New("l1: Commit after Commit or Abort")
	}
	w.done = true
	if w.tooLarge {
		return tier.ErrTooLarge
	}
	defer w.release()
	t := w.t
	pool := w.pool
	if !w.sized {
		// A streamed body without a known length: its home is chosen now.
		pool = t.route(w.key, int64(w.metaLen), int64(w.buf.Len()-w.metaLen))
	}
	if !pool {
		return t.set(w.key, w.buf.Bytes())
	}
	meta := w.buf.Bytes()[1:w.metaLen]
	if len(meta) > maxLargeMeta {
		return tier.ErrTooLarge
	}
	body := w.body
	if body == nil {
		body = w.buf.Bytes()[w.metaLen:]
		if !t.large.packs(int64(len(body))) {
			// Kept as given by the pool: it must not share buf, which
			// is reused.
			body = bytes.Clone(body)
		}
	}
	return t.setLarge(w.key, meta, body)
}

func (w *writer) Abort() {
	w.done = true
	w.body = nil
	w.release()
}

func (t *Tier) set(key string, b []byte) error {
	// Delete first so the replaced entry's bytes leave the accounting
	// (BigCache does not report overwritten entries).
	_ = t.bc.Delete(key)
	if err := t.bc.Set(key, b); err != nil {
		return fmt.Errorf("l1: store %d bytes: %w", len(b), err)
	}
	t.live.Add(int64(len(b)))
	t.objects.Add(1)
	return nil
}

// bcEntryHeader is what BigCache adds to each entry in its queue: a
// timestamp, the key hash, the key length and the queue's length prefix.
const bcEntryHeader = 8 + 8 + 2 + 2

// setLarge stores body in the side pool and meta (encoded) in BigCache.
func (t *Tier) setLarge(key string, meta, body []byte) error {
	id := t.nextID.Add(1)
	t.dropVictims(t.large.put(id, key, body))
	e := make([]byte, largeHdr, largeHdr+len(meta))
	e[0] = tagLarge
	binary.LittleEndian.PutUint64(e[1:], id)
	e = append(e, meta...)
	if err := t.set(key, e); err != nil {
		t.large.remove(id)
		return err
	}
	return nil
}

// dropVictims removes the BigCache entries of bodies the side pool evicted,
// unless the key has been stored again since (its entry then names a newer
// body).
func (t *Tier) dropVictims(vs []victim) {
	t.split.fullPool.Add(int64(len(vs)))
	for _, v := range vs {
		t.noteVictim(v.key)
		if b, err := t.bc.Get(v.key); err == nil && largeID(b) == v.id {
			_ = t.bc.Delete(v.key)
		}
	}
}

// Delete implements tier.Tier.
func (t *Tier) Delete(_ context.Context, key string) error {
	err := t.bc.Delete(key)
	if err != nil && !errors.Is(err, bigcache.ErrEntryNotFound) {
		return fmt.Errorf("l1: delete: %w", err)
	}
	return nil
}

// UpdateMeta implements tier.MetaUpdater by re-encoding the entry in memory.
// A large body is shared by the new entry, not copied; a packed small one
// is packed again (large.put copies it into the current chunk).
func (t *Tier) UpdateMeta(_ context.Context, key string, meta *tier.Meta) error {
	b, err := t.bc.Get(key)
	if err != nil {
		return tier.ErrNotFound
	}
	_, body, id, err := decodeEntry(b)
	if err != nil {
		_ = t.bc.Delete(key)
		return tier.ErrNotFound
	}
	if id != 0 {
		lb, ok := t.large.get(id)
		if !ok {
			return tier.ErrNotFound
		}
		return t.setLarge(key, tier.AppendMeta(nil, meta), lb)
	}
	nb := append(make([]byte, 0, len(b)+64), tagInline)
	nb = tier.AppendMeta(nb, meta)
	nb = append(nb, body...)
	return t.set(key, nb)
}

// Scan implements tier.Scanner over a snapshot of BigCache's entries, which
// index large bodies too.
func (t *Tier) Scan(ctx context.Context, fn func(key string, meta *tier.Meta) bool) error {
	it := t.bc.Iterator()
	for it.SetNext() {
		if err := ctx.Err(); err != nil {
			return err
		}
		info, err := it.Value()
		if err != nil {
			continue // removed meanwhile
		}
		m, _, _, err := decodeEntry(info.Value())
		if err != nil {
			continue
		}
		if !fn(info.Key(), m) {
			return nil
		}
	}
	return nil
}

// route decides whether an object's body goes to the large-body pool and
// tells the splitter what was offered to which side. t.split and t.large
// exist together.
func (t *Tier) route(key string, metaLen, bodyLen int64) bool {
	if t.split == nil {
		return false
	}
	pool := t.split.toPool(key, metaLen+bodyLen)
	t.split.offer(key, metaLen, bodyLen, pool)
	return pool
}

// Usage implements tier.Stats: objects, and bytes of BigCache entries plus
// the large bodies held apart.
func (t *Tier) Usage() (objects, bytes int64) {
	bytes = t.live.Load()
	if t.split != nil {
		bytes += t.large.bytes()
	}
	return t.objects.Load(), bytes
}

// Split describes how the tier currently divides objects between BigCache
// and the large-body pool (see Options.LargeBodyMin).
type Split struct {
	// Threshold is the encoded size from which objects go to the pool now;
	// from half of it, some keys do. Objects of Options.LargeBody and more
	// always go. 0 when there is no pool.
	Threshold int64
	// PoolBodies and PoolBytes are the bodies in the pool and the bytes
	// they count against PoolBudget (Options.LargeBytes).
	PoolBodies            int
	PoolBytes, PoolBudget int64
}

// Split reports the current split, for metrics and tests.
func (t *Tier) Split() Split {
	if t.split == nil {
		return Split{}
	}
	n, used := t.large.usage()
	return Split{Threshold: t.split.threshold.Load(), PoolBodies: n, PoolBytes: used, PoolBudget: t.large.budget}
}

// Close releases the tier.
func (t *Tier) Close() error { return t.bc.Close() }
