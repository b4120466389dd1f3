// Package l1 is the in-memory cache tier on github.com/allegro/bigcache/v3:
// a byte budget, one compact buffer per object (metadata and body encoded
// together), and a TinyLFU admission filter.
//
// BigCache evicts in FIFO order per shard, which alone loses to LRU on
// skewed traffic. Once the tier is under pressure, a new object is admitted
// only when the frequency sketch has seen its key before (TinyLFU admission
// with a "second request" threshold), which keeps one-hit wonders from pushing
// popular objects out; measured with package trace.
//
// It owns memory storage only. It must not know HTTP caching rules.
package l1

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/meridian-edge/meridian/gateway/cache/freq"
	"hash/maphash"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/allegro/bigcache/v3"

	"github.com/meridian-edge/meridian/gateway/cache/tier"
)

const mib = 1 << 20

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
	// Bytes is the memory budget. BigCache budgets in whole MiB, so it is
	// rounded down to MiB; at least 1 MiB. Default 512 MiB.
	Bytes int64
	// MaxObject is the largest encoded object (headers and body) the tier
	// holds; larger ones get ErrTooLarge. Default 1 MiB, and at most a
	// quarter of one shard.
	MaxObject int64
	// Admission is AdmitTinyLFU (default) or AdmitAlways.
	Admission string
	// Logger receives eviction anomalies; nil discards.
	Logger *slog.Logger
}

// Tier is the BigCache-backed L1 tier.
type Tier struct {
	bc         *bigcache.BigCache
	budget     int64
	maxObject  int64
	admitAll   bool
	sketch     *freq.Sketch
	seed       maphash.Seed
	live       atomic.Int64 // bytes of live entries
	victimFreq atomic.Int64 // average frequency of evicted entries, x16
	objects    atomic.Int64
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
	mb := int(opts.Bytes / mib)
	budget := int64(mb) * mib
	// Enough shards for concurrency, but each shard must hold several of the
	// largest objects, or big objects would evict whole shards.
	shards := 1
	for shards < 256 && budget/int64(shards*2) >= 4*opts.MaxObject {
		shards *= 2
	}
	if opts.MaxObject > budget/int64(shards)/4 {
		opts.MaxObject = budget / int64(shards) / 4
	}
	t := &Tier{
		budget:    budget,
		maxObject: opts.MaxObject,
		admitAll:  opts.Admission == AdmitAlways,
		seed:      maphash.MakeSeed(),
		log:       opts.Logger,
	}
	// One sketch word per expected entry, assuming 1 KiB entries (small
	// objects dominate counts); 8 bytes per KiB of budget.
	t.sketch = freq.New(min(max(int(budget/1024), 1024), 1<<24))
	cfg := bigcache.Config{
		Shards:             shards,
		LifeWindow:         100 * 365 * 24 * time.Hour, // expiry is HTTP's job, not BigCache's
		CleanWindow:        0,                          // no cleaner goroutine
		MaxEntriesInWindow: shards * 64,
		MaxEntrySize:       256, // initial allocation only; queues grow to HardMaxCacheSize
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

func (t *Tier) onRemove(key string, entry []byte, reason bigcache.RemoveReason) {
	t.live.Add(-int64(len(entry)))
	t.objects.Add(-1)
	if reason == bigcache.NoSpace && !t.admitAll {
		// Exponentially weighted average of evicted keys' frequency, in
		// sixteenths: the admission bar.
		f := int64(t.sketch.Estimate(maphash.String(t.seed, key))) * 16
		for {
			old := t.victimFreq.Load()
			if t.victimFreq.CompareAndSwap(old, old+(f-old)/16) {
				break
			}
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
// slice that the caller owns. The cache uses it on the hit path.
func (t *Tier) GetBytes(key string) (*tier.Meta, []byte, error) {
	t.sketch.Increment(maphash.String(t.seed, key))
	b, err := t.bc.Get(key)
	if err != nil {
		return nil, nil, tier.ErrNotFound
	}
	m, body, err := tier.DecodeMeta(b)
	if err != nil {
		t.log.Warn("l1: dropping undecodable entry", "key", key, "err", err)
		_ = t.bc.Delete(key)
		return nil, nil, tier.ErrNotFound
	}
	return m, body, nil
}

func (t *Tier) admit(key string, size int64) bool {
	if t.admitAll {
		return true
	}
	if t.live.Load()+size <= t.budget*9/10 {
		return true
	}
	// TinyLFU compares the candidate with the entry it would evict. BigCache
	// does not expose its FIFO victim, so compare with the recent victims'
	// average frequency instead: admit what is asked for more often than
	// what the cache has been throwing out, and never a first request.
	est := t.sketch.Estimate(maphash.String(t.seed, key))
	return est >= 2 && est*16 > uint64(t.victimFreq.Load())
}

// Put implements tier.Tier.
func (t *Tier) Put(_ context.Context, key string, meta *tier.Meta) (tier.Writer, error) {
	if meta.Size > t.maxObject {
		return nil, tier.ErrTooLarge
	}
	if !t.admit(key, max(meta.Size, 0)) {
		return nil, tier.ErrNotAdmitted
	}
	buf := t.bufs.Get().(*bytes.Buffer)
	buf.Reset()
	buf.Write(tier.AppendMeta(buf.AvailableBuffer(), meta))
	return &writer{t: t, key: key, buf: buf}, nil
}

type writer struct {
	t        *Tier
	key      string
	buf      *bytes.Buffer
	tooLarge bool
	done     bool
}

func (w *writer) Write(p []byte) (int, error) {
	if w.tooLarge || w.done {
		return len(p), nil
	}
	if int64(w.buf.Len()+len(p)) > w.t.maxObject {
		w.tooLarge = true
		w.release()
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
	err := w.t.set(w.key, w.buf.Bytes())
	w.release()
	return err
}

func (w *writer) Abort() {
	w.done = true
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

// Delete implements tier.Tier.
func (t *Tier) Delete(_ context.Context, key string) error {
	err := t.bc.Delete(key)
	if err != nil && !errors.Is(err, bigcache.ErrEntryNotFound) {
		return fmt.Errorf("l1: delete: %w", err)
	}
	return nil
}

// UpdateMeta implements tier.MetaUpdater by re-encoding the entry in memory.
func (t *Tier) UpdateMeta(_ context.Context, key string, meta *tier.Meta) error {
	b, err := t.bc.Get(key)
	if err != nil {
		return tier.ErrNotFound
	}
	_, body, err := tier.DecodeMeta(b)
	if err != nil {
		_ = t.bc.Delete(key)
		return tier.ErrNotFound
	}
	nb := tier.AppendMeta(make([]byte, 0, len(b)+64), meta)
	nb = append(nb, body...)
	return t.set(key, nb)
}

// Scan implements tier.Scanner over a snapshot of BigCache's entries.
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
		m, _, err := tier.DecodeMeta(info.Value())
		if err != nil {
			continue
		}
		if !fn(info.Key(), m) {
			return nil
		}
	}
	return nil
}

// Usage implements tier.Stats.
func (t *Tier) Usage() (objects, bytes int64) { return t.objects.Load(), t.live.Load() }

// Close releases the tier.
func (t *Tier) Close() error { return t.bc.Close() }
