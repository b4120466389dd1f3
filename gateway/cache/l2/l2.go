// Package l2 is the on-disk cache tier: one self-verifying file per object
// under a directory, a byte budget enforced by S3-FIFO eviction, and an index
// that survives restarts (snapshot plus journal).
//
// Writes go to a temp file that is renamed into place on Commit, so a crash
// never leaves a half-written object under its name. Every file carries
// checksums of its header and metadata (CRC-32C) and of each 32 KiB body
// block (XXH3-64; CRC-32C in files of format version 1, still read); every
// read verifies what it serves, and a file that fails is removed, counted
// and reported as a miss; its bad bytes are never returned. Hits are served
// from kept read-only mappings of the files on unix systems, and read with
// positioned reads of a file opened per hit on Windows (sys_windows.go).
// A full disk makes the tier
// evict and then refuse new objects for a while (ErrNotAdmitted), never fail
// a request.
//
// It owns disk storage only. It must not know HTTP caching rules, and it does
// not decide promotion between tiers (package tiered does).
package l2

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-edge/meridian/gateway/cache/failurelog"
	"github.com/meridian-edge/meridian/gateway/cache/tier"
)

const (
	gib = 1 << 30
	// inlineFile: files up to this size are read and verified whole in one
	// call, so a corrupt small object is a clean miss.
	inlineFile = chunkSize
	// smallRead is the first read of a Get: files below this size take one
	// read into a pooled buffer. The same pool serves the block buffers of
	// large bodies (smallRead >= blockSize).
	smallRead = 64 << 10
	// diskBlock rounds charged sizes to what a file really occupies.
	diskBlock = 4096
)

// Options configures the tier.
type Options struct {
	// Dir holds the objects and the index. Required; created if missing.
	Dir string
	// Bytes is the disk budget (file sizes rounded up to 4 KiB). Default 10 GiB.
	Bytes int64
	// MaxObject is the largest body the tier stores; larger ones get
	// ErrTooLarge. Default an eighth of Bytes.
	MaxObject int64
	// Policy is PolicyS3FIFO (default) or PolicyLRU.
	Policy string
	// Sync fsyncs each object file before it is renamed into place. Without
	// it a process crash still loses nothing committed (the page cache
	// survives), and after a power loss a torn file fails its checksum and is
	// a miss; with it, committed objects also survive a power loss.
	Sync bool
	// DiskFullBypass is how long Put refuses new objects after the disk ran
	// full even after evicting. Default 30s.
	DiskFullBypass time.Duration
	// Logger receives corruption and disk-full reports; nil discards.
	Logger *slog.Logger
	// Registerer receives the tier's metrics; nil registers nothing.
	Registerer prometheus.Registerer
}

// Counters are the tier's event counts since Open.
type Counters struct {
	Hits, Misses int64
	// Corrupt counts object files that failed verification and were removed.
	Corrupt int64
	// Evictions counts objects removed to stay within the budget.
	Evictions int64
	// DiskFull counts writes that hit ENOSPC/EDQUOT/EFBIG.
	DiskFull int64
	// Bypassed counts Puts refused while the disk-full bypass was active.
	Bypassed int64
	// Stored counts committed objects.
	Stored int64
	// IndexRebuilt is 1 when Open could not use the saved index and walked
	// the object files instead (in the background).
	IndexRebuilt int64
}

// Tier is the disk tier. It implements tier.Tier, tier.MetaUpdater,
// tier.Scanner and tier.Stats.
type Tier struct {
	dir, objDir, tmpDir string
	budget, maxObject   int64
	sync                bool
	bypassFor           time.Duration
	log                 *slog.Logger
	// failures rate-limits the disk-full reports: a full disk fails every
	// store, and a line each would flood the log.
	failures *failurelog.Log

	// mu guards the index and the journal. A hit takes it for reading
	// only (see hit); everything that changes the index takes it whole.
	mu    sync.RWMutex
	idx   map[uint64]*node
	pol   evictionPolicy
	used  int64
	j     *journal
	snapN int // entries in the last snapshot, to decide when to compact
	// compacting is set while an online compaction runs.
	compacting bool
	// compactAfter is the journal length (records) that triggers an online
	// compaction, at least twice the snapshot's entries.
	compactAfter int64

	bufs   sync.Pool // *[]byte of smallRead bytes, for whole-file reads
	chunks sync.Pool // *[]byte of chunkSize bytes: mid-size files, large-body steps
	metas  *metaCache
	fds    *fdCache
	// noMmap turns mappings off: files are read with pread only, as
	// where mmap fails (tests and benchmarks of that fallback).
	noMmap bool

	bypassUntil atomic.Int64 // unix nanos
	c           struct {
		hits, misses, corrupt, evictions, diskFull, bypassed, stored, rebuilt atomic.Int64
	}

	// indexed is closed once the index holds every object file: at Open
	// after a clean stop, after the reconcile walk otherwise.
	indexed chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed atomic.Bool
}

// Open opens (or creates) the tier in opts.Dir, loading the saved index. If
// the previous process did not close cleanly, a background walk adds object
// files the index missed; lookups work meanwhile because every file is found
// by its key's hash and verified on read.
func Open(opts Options) (*Tier, error) {
	if opts.Dir == "" {
		return nil, errors.New("l2: Dir is required; set the cache directory for the disk tier")
	}
	if opts.Bytes == 0 {
		opts.Bytes = 10 * gib
	}
	if opts.Bytes < 1<<20 {
		return nil, fmt.Errorf("l2: Bytes %d is below the 1 MiB minimum; set a disk budget such as 10GiB", opts.Bytes)
	}
	if opts.MaxObject == 0 {
		opts.MaxObject = opts.Bytes / 8
	}
	if opts.MaxObject < 0 || opts.MaxObject > opts.Bytes {
		return nil, fmt.Errorf("l2: MaxObject %d must be positive and at most Bytes (%d)", opts.MaxObject, opts.Bytes)
	}
	if opts.DiskFullBypass == 0 {
		opts.DiskFullBypass = 30 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	t := &Tier{
		bufs:   sync.Pool{New: func() any { b := make([]byte, smallRead); return &b }},
		chunks: sync.Pool{New: func() any { b := make([]byte, chunkSize); return &b }},
		metas:  new(metaCache), fds: newFDCache(),
		dir: opts.Dir, objDir: filepath.Join(opts.Dir, "objects"), tmpDir: filepath.Join(opts.Dir, "tmp"),
		budget: opts.Bytes, maxObject: opts.MaxObject, sync: opts.Sync, bypassFor: opts.DiskFullBypass,
		log: opts.Logger, failures: failurelog.New(opts.Logger, failurelog.DefaultEvery, nil),
		idx: make(map[uint64]*node), compactAfter: 1 << 20,
		indexed: make(chan struct{}),
	}
	switch opts.Policy {
	case "", PolicyS3FIFO:
		t.pol = newS3FIFO(opts.Bytes)
	case PolicyLRU:
		t.pol = &lru{}
	default:
		return nil, fmt.Errorf("l2: unknown policy %q; use %q or %q", opts.Policy, PolicyS3FIFO, PolicyLRU)
	}
	for _, d := range []string{t.objDir, t.tmpDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("l2: create %s: %w", d, err)
		}
	}
	// Temp files are uncommitted writes of a previous process.
	if ents, err := os.ReadDir(t.tmpDir); err == nil {
		for _, e := range ents {
			_ = os.Remove(filepath.Join(t.tmpDir, e.Name()))
		}
	}
	rebuild, replayed, err := t.loadIndex()
	if err != nil {
		return nil, err
	}
	// After a clean Close the snapshot is current; rewriting it would only
	// delay the first hit.
	if rebuild || replayed {
		if err := t.compact(); err != nil {
			return nil, err
		}
	} else {
		t.snapN = len(t.idx)
	}
	if t.j, err = openJournal(t.dir); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(t.dir, dirtyName), nil, 0o644); err != nil {
		t.j.close()
		return nil, fmt.Errorf("l2: mark %s in use: %w", t.dir, err)
	}
	t.mu.Lock()
	victims := t.evictLocked(0)
	t.mu.Unlock()
	t.removeFiles(victims)
	t.ctx, t.cancel = context.WithCancel(context.Background())
	if rebuild {
		t.c.rebuilt.Store(1)
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			err := t.reconcile(t.ctx)
			if err != nil && !errors.Is(err, context.Canceled) {
				t.log.Warn("l2: index reconcile walk failed", "dir", t.objDir, "err", err)
			}
			if err == nil {
				close(t.indexed)
			}
		}()
	} else {
		close(t.indexed)
	}
	if err := t.register(opts.Registerer); err != nil {
		_ = t.Close()
		return nil, err
	}
	return t, nil
}

// loadIndex fills the index from the snapshot and journals. It reports
// whether the object files must be walked (unclean shutdown or lost index).
func (t *Tier) loadIndex() (rebuild, replayed bool, err error) {
	_, dirtyErr := os.Stat(filepath.Join(t.dir, dirtyName))
	rebuild = dirtyErr == nil
	recs, err := readSnapshot(t.dir)
	if errors.Is(err, errNoSnapshot) {
		// A new directory, or a lost index when object files exist.
		recs = nil
		if ents, _ := os.ReadDir(t.objDir); len(ents) > 0 {
			rebuild = true
		}
	} else if err != nil {
		t.log.Warn("l2: index snapshot unusable; rebuilding from the object files", "dir", t.dir, "err", err)
		recs, rebuild = nil, true
	}
	if len(recs) > 0 {
		t.idx = make(map[uint64]*node, len(recs))
	}
	// One allocation for all restored nodes keeps a 1M-entry load fast.
	nodes := make([]node, len(recs))
	for i, r := range recs {
		n := &nodes[i]
		n.hash, n.size = r.hash, r.size
		n.freq.Store(uint32(r.freq))
		if old := t.idx[r.hash]; old != nil {
			t.dropLocked(old)
		}
		t.idx[r.hash] = n
		t.used += n.size
		t.pol.add(n, r.queue)
	}
	apply := func(op uint8, h uint64, size int64) {
		if old := t.idx[h]; old != nil {
			t.dropLocked(old)
		}
		if op == opAdd {
			t.insertLocked(h, size)
		}
	}
	for _, name := range []string{oldLogName, logName} {
		n, err := replayLog(filepath.Join(t.dir, name), apply)
		if err != nil {
			return false, false, err
		}
		replayed = replayed || n > 0
	}
	return rebuild, replayed, nil
}

// compact writes the index as a new snapshot and empties the journals.
// Called at Open (before the journal is opened) and Close (after).
func (t *Tier) compact() error {
	t.mu.Lock()
	recs := t.snapshotLocked()
	t.mu.Unlock()
	if err := writeSnapshot(t.dir, recs); err != nil {
		return err
	}
	t.snapN = len(recs)
	for _, name := range []string{oldLogName, logName} {
		if err := os.Remove(filepath.Join(t.dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("l2: remove index journal: %w", err)
		}
	}
	return nil
}

func (t *Tier) snapshotLocked() []snapRec {
	recs := make([]snapRec, 0, len(t.idx))
	t.pol.each(func(n *node) {
		recs = append(recs, snapRec{hash: n.hash, size: n.size, queue: n.queue, freq: uint8(n.freq.Load())})
	})
	return recs
}

// compactOnline folds a long journal into a new snapshot while the tier
// runs: the journal is rotated under the lock, the snapshot written outside.
func (t *Tier) compactOnline() {
	t.mu.Lock()
	if t.j == nil {
		t.mu.Unlock()
		return
	}
	recs := t.snapshotLocked()
	_ = t.j.close()
	err := os.Rename(filepath.Join(t.dir, logName), filepath.Join(t.dir, oldLogName))
	nj, jerr := openJournal(t.dir)
	if jerr != nil {
		t.log.Error("l2: reopen index journal failed; index changes are not persisted until restart", "err", jerr)
		t.j = nil
	} else {
		t.j = nj
	}
	t.mu.Unlock()
	if err != nil {
		t.log.Warn("l2: rotate index journal", "err", err)
		return
	}
	if err := writeSnapshot(t.dir, recs); err != nil {
		t.log.Warn("l2: index compaction failed; the journal keeps growing", "err", err)
		return
	}
	t.mu.Lock()
	t.snapN = len(recs)
	t.mu.Unlock()
	_ = os.Remove(filepath.Join(t.dir, oldLogName))
}

// endCompaction clears the compacting flag.
func (t *Tier) endCompaction() {
	t.mu.Lock()
	t.compacting = false
	t.mu.Unlock()
}

func (t *Tier) register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	counter := func(name, help string, v *atomic.Int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "meridian", Subsystem: "cache_l2", Name: name, Help: help},
			func() float64 { return float64(v.Load()) })
	}
	cs := []prometheus.Collector{
		counter("hits_total", "Objects served from the disk tier.", &t.c.hits),
		counter("misses_total", "Lookups the disk tier could not answer.", &t.c.misses),
		counter("corrupt_total", "Object files that failed checksum verification and were removed.", &t.c.corrupt),
		counter("evictions_total", "Objects evicted to stay within the byte budget.", &t.c.evictions),
		counter("disk_full_total", "Writes that ran out of disk space.", &t.c.diskFull),
		counter("bypassed_total", "Stores refused while the disk was full.", &t.c.bypassed),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "meridian", Subsystem: "cache_l2", Name: "bytes", Help: "Bytes held by the disk tier."},
			func() float64 { _, b := t.Usage(); return float64(b) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "meridian", Subsystem: "cache_l2", Name: "objects", Help: "Objects held by the disk tier."},
			func() float64 { n, _ := t.Usage(); return float64(n) }),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("l2: register metrics: %w", err)
		}
	}
	return nil
}

func hashKey(key string) uint64 { return xxhash.Sum64String(key) }

func (t *Tier) path(h uint64) string {
	const digits = "0123456789abcdef"
	var b [16]byte
	for i := 15; i >= 0; i-- {
		b[i] = digits[h&15]
		h >>= 4
	}
	// objDir/xx/<hash> in one allocation (every miss asks for it). objDir
	// is clean (made by filepath.Join), so this is what filepath.Join
	// would return.
	var p strings.Builder
	p.Grow(len(t.objDir) + 2 + 2 + len(b))
	p.WriteString(t.objDir)
	p.WriteByte(filepath.Separator)
	p.Write(b[:2])
	p.WriteByte(filepath.Separator)
	p.Write(b[:])
	return p.String()
}

func charge(fileSize int64) int64 { return (fileSize + diskBlock - 1) / diskBlock * diskBlock }

// insertLocked indexes a new node and journals nothing.
func (t *Tier) insertLocked(h uint64, size int64) *node {
	n := &node{hash: h, size: size}
	t.idx[h] = n
	t.used += size
	t.pol.add(n, qNone)
	return n
}

func (t *Tier) dropLocked(n *node) {
	t.pol.remove(n)
	delete(t.idx, n.hash)
	t.used -= n.size
}

func (t *Tier) journalLocked(op uint8, h uint64, size int64) {
	if t.j == nil {
		return
	}
	if err := t.j.append(op, h, size); err != nil {
		t.log.Warn("l2: index journal append failed; the index may miss this change after a restart", "err", err)
	}
}

// evictLocked removes nodes until need more bytes fit in the budget and
// returns their hashes; the caller deletes the files after unlocking.
func (t *Tier) evictLocked(need int64) []uint64 {
	var victims []uint64
	for t.used+need > t.budget {
		n := t.pol.victim()
		if n == nil {
			break
		}
		delete(t.idx, n.hash)
		t.used -= n.size
		t.journalLocked(opDel, n.hash, 0)
		// The generation moves now, not only when the file goes (after
		// the lock): a hit that found the file before would otherwise
		// index it again (see hit), and removeFiles would then keep it,
		// over the budget.
		t.fds.drop(n.hash)
		victims = append(victims, n.hash)
	}
	t.c.evictions.Add(int64(len(victims)))
	return victims
}

// removeFiles deletes evicted files. Each check and unlink is done under
// the lock that install renames under, so a file re-stored under the same
// hash since the eviction (and indexed again) is left alone.
func (t *Tier) removeFiles(hashes []uint64) {
	for _, h := range hashes {
		t.mu.Lock()
		if t.idx[h] != nil {
			t.mu.Unlock()
			continue
		}
		err := os.Remove(t.path(h))
		// Dropped under the lock, as install and Delete do, so that a
		// hit that started before sees the generation change (see hit).
		t.fds.drop(h)
		t.mu.Unlock()
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.log.Warn("l2: remove evicted file", "err", err)
		}
	}
}

// Name implements tier.Tier.
func (t *Tier) Name() string { return "l2" }

// Dir is the directory the tier keeps its files in (Options.Dir), for
// reports of its failures.
func (t *Tier) Dir() string { return t.dir }

// Indexed returns a channel closed once the index holds every object file
// on disk: at once after a clean stop, and when the background walk ends
// after an unclean one (it stays open if the walk was stopped by Close).
// Hits do not wait for it; it tells when Usage and eviction see everything.
func (t *Tier) Indexed() <-chan struct{} { return t.indexed }

// MaxObject returns the largest body the tier stores.
func (t *Tier) MaxObject() int64 { return t.maxObject }

// Counters returns the tier's event counts.
func (t *Tier) Counters() Counters {
	return Counters{
		Hits: t.c.hits.Load(), Misses: t.c.misses.Load(), Corrupt: t.c.corrupt.Load(),
		Evictions: t.c.evictions.Load(), DiskFull: t.c.diskFull.Load(), Bypassed: t.c.bypassed.Load(),
		Stored: t.c.stored.Load(), IndexRebuilt: t.c.rebuilt.Load(),
	}
}

// Usage implements tier.Stats.
func (t *Tier) Usage() (objects, bytes int64) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return int64(len(t.idx)), t.used
}

// Get implements tier.Tier. The body streams from the file; the caller must
// close it. The body also implements io.Seeker: seeking and then reading
// serves a Range with only the needed 32 KiB blocks read and verified.
func (t *Tier) Get(ctx context.Context, key string) (*tier.Object, error) {
	return t.GetRange(ctx, key, 0, -1)
}

// ErrRange is returned by GetRange for a range outside the body.
var ErrRange = errors.New("l2: range not satisfiable")

// GetRange returns the object with a body holding only bytes [off, off+n)
// (n < 0: to the end). It reads and verifies only the 32 KiB blocks the range
// touches, so a Range request is served from disk without reading the whole
// file. Meta describes the whole object (Meta.Size is the full length).
func (t *Tier) GetRange(ctx context.Context, key string, off, n int64) (*tier.Object, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	h := hashKey(key)
	gen := t.fds.generation()
	l, err := t.load(h, key, gen)
	switch {
	case err == nil:
	case errors.Is(err, errCorrupt):
		t.corrupt(h, t.path(h), err)
		return nil, tier.ErrNotFound
	case errors.Is(err, errOtherKey):
		t.miss(h, false, gen) // a miss, not damage
		return nil, tier.ErrNotFound
	default:
		t.miss(h, errors.Is(err, fs.ErrNotExist), gen)
		return nil, tier.ErrNotFound
	}
	m := l.meta
	size := int64(l.p.hdr.bodyLen)
	end := size
	if n >= 0 {
		end = off + n
	}
	if off < 0 || off > size || end > size || end < off {
		l.free()
		return nil, fmt.Errorf("%w: bytes %d-%d of %d", ErrRange, off, end, size)
	}
	t.hit(h, charge(l.size), gen)
	if l.body != nil && l.mf != nil {
		// One allocation for the object and its body.
		o := &mappedObject{body: mappedBody{mf: l.mf, m: l.mf.m, file: fileRef{t, h}, at: l.p.hdr.bodyOff() + off}}
		o.body.r.Reset(l.body[off:end])
		o.obj = tier.Object{Meta: m, Body: &o.body}
		return &o.obj, nil
	}
	if l.body != nil {
		// One allocation for the object and its body; the buffer is the
		// pool's.
		o := &bytesObject{body: bytesBody{pool: l.pool, buf: l.buf}}
		o.body.Reset(l.body[off:end])
		o.obj = tier.Object{Meta: m, Body: &o.body}
		return &o.obj, nil
	}
	// One allocation for the object and its body.
	o := &blockObject{r: blockReader{
		f: l.f, p: l.p, start: off, off: off, end: end,
		file:   fileRef{t, h},
		chunks: &t.chunks,
	}}
	r := &o.r
	if l.mf != nil {
		r.mf, r.m = l.mf, l.mf.m
		r.mb = r.m[l.p.hdr.bodyOff():l.p.hdr.tableOff()]
	} else {
		// The block buffer comes from the same pool (smallRead >= blockSize).
		r.bufs, r.bufp = &t.bufs, t.bufs.Get().(*[]byte)
		r.buf = (*r.bufp)[:blockSize]
	}
	o.obj = tier.Object{Meta: m, Body: r}
	return &o.obj, nil
}

// fileRef names an object file for a body read from it to report it
// corrupt (a value, not a closure: no allocation per hit).
type fileRef struct {
	t *Tier
	h uint64
}

func (f fileRef) corrupt() {
	if f.t != nil {
		f.t.corrupt(f.h, f.t.path(f.h), errCorrupt)
	}
}

// loaded is an object file opened for a Get, its header, key, meta and
// table verified. Small and mid-size files are verified whole (body): read
// into a pooled buffer that release gives back, or, for a small file hit
// before, in its mapping (mf). Large ones are mapped (mf, usually kept in
// the fdCache) or, where mapping fails, kept open (f), and their body is
// verified as it streams.
type loaded struct {
	p    parsed
	meta *tier.Meta
	size int64 // file size
	body []byte
	pool *sync.Pool // where buf goes back when the body is done, or nil
	buf  *[]byte    // the pooled buffer body is in
	mf   *openFile
	f    *os.File
}

// free gives back what a loaded file holds when it is not served.
func (l *loaded) free() {
	if l.buf != nil {
		l.pool.Put(l.buf)
	}
	if l.mf != nil {
		l.mf.release()
	}
	if l.f != nil {
		_ = l.f.Close()
	}
}

// load opens and verifies h's file, checks that it holds key and decodes
// its meta; gen is the fdCache generation read before. Errors wrap
// errCorrupt for a damaged file and are errOtherKey for a hash collision;
// any other error (ENOENT above all) is a plain miss.
//
// The fdCache keeps what the next hit needs. A small file (below
// smallRead) is read on its first hit with one pread into a pooled buffer
// and its descriptor kept; on its second hit it is mapped, and from then on
// a hit makes no system call at all. Mid-size and large files are mapped
// on their first hit (no read of the body before it is served) and the
// mapping kept. A file not kept is opened and sized with one fstat, which
// picks the path. Where mapping is off or fails, mid-size files are read
// whole and large ones streamed through pread.
//
// Files up to inlineFile bytes are verified whole here, so damage is a
// clean miss; larger ones have their head and table verified here and each
// body block as it is served. Keeping a descriptor or mapping keeps no
// verification: every hit verifies what it serves.
func (t *Tier) load(h uint64, key string, gen uint64) (l loaded, err error) {
	if c := t.fds.get(h); c != nil {
		if c.m == nil && !t.noMmap {
			// The second hit of a small file: map it, so that its later
			// hits make no system call at all.
			if mc := t.fds.upgrade(h, c); mc != nil {
				c.release()
				c = mc
			}
		}
		if c.m != nil {
			return t.fromMapping(c, h, key)
		}
		bp := t.bufs.Get().(*[]byte)
		k, rerr := pread(c.fd, *bp, 0)
		c.release()
		if rerr == nil && k < len(*bp) {
			l.size, l.pool, l.buf = int64(k), &t.bufs, bp
			if l.p, l.body, err = parseWhole((*bp)[:k]); err == nil {
				l.meta, err = t.identify(&l.p, h, key)
			}
			if err != nil {
				l.free()
				return loaded{}, err
			}
			return l, nil
		}
		// Not the small file it was (or failing): read it afresh through
		// a descriptor of its own, below.
		t.bufs.Put(bp)
	}
	path := t.path(h)
	fd, err := openRead(path)
	if err != nil {
		return loaded{}, err
	}
	if l.size, err = fileSize(fd); err != nil {
		closeFD(fd)
		return loaded{}, fmt.Errorf("l2: stat %s: %w", path, err)
	}
	var m []byte
	switch {
	case l.size < smallRead:
		bp := t.bufs.Get().(*[]byte)
		l.pool, l.buf = &t.bufs, bp
		k, rerr := pread(fd, *bp, 0)
		if rerr == nil && int64(k) == l.size {
			t.fds.add(h, fd, gen)
			l.p, l.body, err = parseWhole((*bp)[:k])
		} else {
			closeFD(fd)
			err = fmt.Errorf("%w: read %d of %d bytes: %v", errCorrupt, k, l.size, rerr)
		}
	case !t.noMmap && mapFile(fd, l.size, &m):
		// Mid-size and large files are mapped and the mapping kept, with
		// the descriptor (for sendfile).
		return t.fromMapping(t.fds.addMap(h, fd, m, gen), h, key)
	case l.size <= inlineFile:
		// Mid-size, not mapped: read whole into a pooled chunk buffer and
		// verify the whole file, as for a small one, so damage is a clean
		// miss.
		cp := t.chunks.Get().(*[]byte)
		l.pool, l.buf = &t.chunks, cp
		k, rerr := pread(fd, (*cp)[:l.size], 0)
		closeFD(fd)
		if rerr == nil && int64(k) == l.size {
			l.p, l.body, err = parseWhole((*cp)[:k])
		} else {
			err = fmt.Errorf("%w: read %d of %d bytes: %v", errCorrupt, k, l.size, rerr)
		}
	default:
		l.f = os.NewFile(uintptr(fd), path)
		l.p, err = readHead(l.f, l.size)
	}
	if err == nil {
		l.meta, err = t.identify(&l.p, h, key)
	}
	if err != nil {
		l.free()
		return loaded{}, err
	}
	return l, nil
}

// errOtherKey: the file holds another key with the same 64-bit hash.
var errOtherKey = errors.New("l2: object file holds another key")

// identify checks that p is key's file and decodes its metadata.
func (t *Tier) identify(p *parsed, h uint64, key string) (*tier.Meta, error) {
	if string(p.key) != key {
		return nil, errOtherKey
	}
	m, err := t.metas.decode(h, p.meta)
	if err != nil {
		return nil, fmt.Errorf("%w: metadata: %v", errCorrupt, err)
	}
	return m, nil
}

// fromMapping parses and verifies a mapped file (the whole file up to
// inlineFile bytes, as a read one is, else its head and table), checks its
// key and decodes its meta, and returns it holding the caller's reference
// to mf. All of it reads the mapping under a fault guard; afterwards only
// the body readers touch the mapping, under theirs.
//
// The first verification of a mapping keeps what it found (mf.head): the
// header, key and table copied out of the mapping, and the decoded meta.
// Later hits check the key and verify the body against that table, and
// skip the header and table checksums and the meta decoding. That trusts
// nothing the mapping could change: what a hit serves is the body, verified
// on every hit, and the meta, decoded from bytes verified before.
func (t *Tier) fromMapping(mf *openFile, h uint64, key string) (l loaded, err error) {
	defer func(old bool) {
		debug.SetPanicOnFault(old)
		if ferr := faultError(recover(), mf.m); ferr != nil {
			err = ferr
		}
		if err != nil {
			mf.release()
			l = loaded{}
		}
	}(debug.SetPanicOnFault(true))
	l.size, l.mf = int64(len(mf.m)), mf
	if mh := mf.head.Load(); mh != nil {
		if string(mh.p.key) != key {
			return loaded{}, errOtherKey
		}
		l.p, l.meta = mh.p, mh.meta // shared, as decode's result is
		if l.size <= inlineFile {
			l.body = mf.m[l.p.hdr.bodyOff():l.p.hdr.tableOff()]
			err = l.p.verify(l.body, 0)
		}
		return l, err
	}
	if l.size <= inlineFile {
		l.p, l.body, err = parseWhole(mf.m)
	} else {
		l.p, err = parseFile(mf.m)
	}
	if err == nil {
		l.meta, err = t.identify(&l.p, h, key)
	}
	if err == nil {
		mh := &mappedHead{p: parsed{hdr: l.p.hdr, key: bytes.Clone(l.p.key), table: bytes.Clone(l.p.table)}, meta: l.meta}
		mf.head.Store(mh)
		l.p = mh.p
	}
	return l, err
}

// hit counts a hit of h's file, read by a lookup that started at fdCache
// generation gen. Every rename or removal of an object file bumps the
// generation under t.mu, so an unchanged generation means the file read is
// still the one under h's path.
//
// The common case, an indexed object under S3-FIFO, only bumps the node's
// atomic counter, under the read lock, so concurrent hits do not wait for
// each other; the rest is done under the write lock, as before.
func (t *Tier) hit(h uint64, size int64, gen uint64) {
	t.c.hits.Add(1)
	t.mu.RLock()
	n := t.idx[h]
	done := n != nil && t.pol.touchShared(n)
	t.mu.RUnlock()
	if done {
		return
	}
	t.mu.Lock()
	if n := t.idx[h]; n != nil {
		t.pol.touch(n)
	} else if t.j != nil && t.fds.generation() == gen {
		// A valid file the index did not know (crash before the journal
		// append, or the reconcile walk has not reached it yet). Not when
		// a file was removed or renamed since the lookup started: this
		// one may have been deleted or evicted meanwhile (and indexing it
		// would leave an entry without a file); a later hit or the walk
		// will index it if it is still there.
		t.insertLocked(h, size)
		t.journalLocked(opAdd, h, size)
	}
	t.mu.Unlock()
}

// miss counts a miss; gone means h's file was not there, and its index
// entry is dropped unless a file was renamed or removed since the lookup
// started at generation gen (the entry may be for a file installed since).
func (t *Tier) miss(h uint64, gone bool, gen uint64) {
	t.c.misses.Add(1)
	if !gone {
		return
	}
	// Most misses are of objects the index does not hold either: those
	// need only the read lock.
	t.mu.RLock()
	indexed := t.idx[h] != nil
	t.mu.RUnlock()
	if !indexed {
		return
	}
	t.mu.Lock()
	if n := t.idx[h]; n != nil && t.fds.generation() == gen {
		t.dropLocked(n)
		t.journalLocked(opDel, h, 0)
	}
	t.mu.Unlock()
}

// corrupt removes a file that failed verification. It is counted and logged
// and the lookup is a miss.
func (t *Tier) corrupt(h uint64, path string, cause error) {
	t.c.corrupt.Add(1)
	t.c.misses.Add(1)
	t.log.Warn("l2: removing corrupt object file", "file", path, "err", cause)
	t.mu.Lock()
	_ = os.Remove(path)
	t.fds.drop(h)
	if n := t.idx[h]; n != nil {
		t.dropLocked(n)
		t.journalLocked(opDel, h, 0)
	}
	t.mu.Unlock()
}

// Put implements tier.Tier. The body is written to a temp file and becomes
// visible on Commit.
func (t *Tier) Put(ctx context.Context, key string, meta *tier.Meta) (tier.Writer, error) {
	if t.closed.Load() {
		return nil, errors.New("l2: tier is closed")
	}
	if meta.Size > t.maxObject {
		return nil, tier.ErrTooLarge
	}
	if time.Now().UnixNano() < t.bypassUntil.Load() {
		t.c.bypassed.Add(1)
		return nil, tier.ErrNotAdmitted
	}
	if len(key) > 1<<16 {
		return nil, fmt.Errorf("l2: key of %d bytes is too long (limit 64 KiB)", len(key))
	}
	f, err := os.CreateTemp(t.tmpDir, "put-*")
	if err != nil && t.diskFull(err) {
		if f, err = os.CreateTemp(t.tmpDir, "put-*"); err != nil {
			t.bypass(err)
			return nil, tier.ErrNotAdmitted
		}
	}
	if err != nil {
		return nil, fmt.Errorf("l2: create temp file in %s: %w", t.tmpDir, err)
	}
	// A copy: the caller may change its header after Put; the meta is
	// encoded at Commit, when the body length is known.
	w := &writer{t: t, key: key, meta: meta.Clone(), f: f}
	head := make([]byte, headerSize, headerSize+len(key))
	head = append(head, key...)
	w.write(head)
	w.bodyN = 0
	if w.failed != nil {
		w.Abort()
		if errors.Is(w.failed, tier.ErrNotAdmitted) {
			return nil, tier.ErrNotAdmitted
		}
		return nil, w.failed
	}
	return w, nil
}

// diskFull reports whether err means the disk is out of space; if so it
// evicts a slice of the budget (1%, at least 8 MiB) so that a retry can
// succeed.
func (t *Tier) diskFull(err error) bool {
	if !isDiskFull(err) {
		return false
	}
	t.c.diskFull.Add(1)
	t.mu.Lock()
	free := max(t.budget/100, 8<<20)
	victims := t.evictLocked(t.budget - t.used + free)
	t.mu.Unlock()
	t.removeFiles(victims)
	t.failures.Warn("disk-full/"+failurelog.ErrorKind(err), "l2: disk full; evicted to make room", "tier", "l2", "dir", t.dir, "evicted", len(victims), "err", err)
	return true
}

// bypass makes Put refuse new objects for a while: the disk stayed full
// after evicting.
func (t *Tier) bypass(err error) {
	t.bypassUntil.Store(time.Now().Add(t.bypassFor).UnixNano())
	t.failures.Warn("bypass/"+failurelog.ErrorKind(err), "l2: disk still full after evicting; not storing new objects for a while", "tier", "l2", "dir", t.dir, "for", t.bypassFor, "err", err)
}

type writer struct {
	t      *Tier
	key    string
	meta   *tier.Meta
	f      *os.File
	off    int64 // file offset of the next write
	bodyN  int64
	table  tableWriter
	failed error
	done   bool
}

// write appends b to the file, retrying once after evicting on a full disk.
func (w *writer) write(b []byte) {
	if w.failed != nil {
		return
	}
	n, err := w.f.WriteAt(b, w.off)
	if err != nil && w.t.diskFull(err) {
		w.off += int64(n)
		b = b[n:]
		n, err = w.f.WriteAt(b, w.off)
		if err != nil {
			w.t.bypass(err)
			w.failed = tier.ErrNotAdmitted
			return
		}
	} else if err != nil {
		w.failed = fmt.Errorf("l2: write %s: %w", w.f.Name(), err)
		return
	}
	w.off += int64(n)
}

// Write implements tier.Writer. Errors are kept for Commit: a storage
// problem must not fail the response being streamed to the client.
func (w *writer) Write(p []byte) (int, error) {
	if w.done || w.failed != nil {
		return len(p), nil
	}
	if w.bodyN+int64(len(p)) > w.t.maxObject {
		w.failed = tier.ErrTooLarge
		return len(p), nil
	}
	w.write(p)
	w.table.write(p)
	w.bodyN += int64(len(p))
	return len(p), nil
}

// Commit implements tier.Writer.
func (w *writer) Commit() error {
	if w.done {
		return errors.New("l2: Commit after Commit or Abort")
	}
	w.done = true
	t := w.t
	if w.failed != nil {
		w.discard()
		return w.failed
	}
	m := *w.meta
	m.Size = w.bodyN
	enc := tier.AppendMeta(nil, &m)
	tail := w.table.finish()
	tableCRC := crc32Sum(tail)
	tail = append(tail, enc...)
	w.write(tail)
	hdr := header{ver: writeVersion, keyLen: uint32(len(w.key)), metaLen: uint32(len(enc)), bodyLen: uint64(w.bodyN), tableCRC: tableCRC}
	var hb [headerSize]byte
	hdr.marshal(hb[:])
	hdr.headCRC = headSum(hb[:], []byte(w.key), enc)
	hdr.marshal(hb[:])
	if w.failed == nil {
		if _, err := w.f.WriteAt(hb[:], 0); err != nil {
			w.failed = fmt.Errorf("l2: write header: %w", err)
		}
	}
	if w.failed == nil && t.sync {
		if err := w.f.Sync(); err != nil {
			w.failed = fmt.Errorf("l2: sync %s: %w", w.f.Name(), err)
		}
	}
	if w.failed != nil {
		w.discard()
		return w.failed
	}
	if err := w.f.Close(); err != nil {
		_ = os.Remove(w.f.Name())
		return fmt.Errorf("l2: close %s: %w", w.f.Name(), err)
	}
	return t.install(w.f.Name(), hashKey(w.key), charge(hdr.fileSize()))
}

// install renames a complete temp file into place and indexes it, evicting
// first to stay within the budget.
func (t *Tier) install(tmp string, h uint64, size int64) error {
	path := t.path(h)
	t.mu.Lock()
	if t.closed.Load() {
		t.mu.Unlock()
		_ = os.Remove(tmp)
		return errors.New("l2: tier is closed")
	}
	if old := t.idx[h]; old != nil {
		t.dropLocked(old)
	}
	victims := t.evictLocked(size)
	err := os.Rename(tmp, path)
	if errors.Is(err, fs.ErrNotExist) {
		if err = os.MkdirAll(filepath.Dir(path), 0o755); err == nil {
			err = os.Rename(tmp, path)
		}
	}
	if err == nil {
		t.fds.drop(h)
		t.insertLocked(h, size)
		t.journalLocked(opAdd, h, size)
	}
	if t.j != nil && !t.compacting && t.j.records > max(2*int64(t.snapN), t.compactAfter) {
		t.compacting = true
		// Added under the lock: Close sets closed and then takes the lock
		// once before it waits, so no Add can race with its Wait.
		t.wg.Add(1)
		go func() { defer t.wg.Done(); defer t.endCompaction(); t.compactOnline() }()
	}
	t.mu.Unlock()
	t.removeFiles(victims)
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("l2: install object file: %w", err)
	}
	t.c.stored.Add(1)
	return nil
}

func (w *writer) discard() {
	_ = w.f.Close()
	_ = os.Remove(w.f.Name())
}

// Abort implements tier.Writer.
func (w *writer) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.discard()
}

// Delete implements tier.Tier.
func (t *Tier) Delete(_ context.Context, key string) error {
	h := hashKey(key)
	t.mu.Lock()
	defer t.mu.Unlock()
	if n := t.idx[h]; n != nil {
		t.dropLocked(n)
		t.journalLocked(opDel, h, 0)
	}
	err := os.Remove(t.path(h))
	t.fds.drop(h)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("l2: delete object file: %w", err)
	}
	return nil
}

// UpdateMeta implements tier.MetaUpdater: it writes a copy of the file with
// the new metadata (the body is copied by the kernel) and renames it into
// place, so a crash leaves the old or the new version.
func (t *Tier) UpdateMeta(ctx context.Context, key string, meta *tier.Meta) error {
	h := hashKey(key)
	path := t.path(h)
	f, err := openShared(path)
	if err != nil {
		return tier.ErrNotFound
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return tier.ErrNotFound
	}
	p, err := readHead(f, fi.Size())
	if err != nil {
		t.corrupt(h, path, err)
		return tier.ErrNotFound
	}
	if string(p.key) != key {
		return tier.ErrNotFound
	}
	m := *meta
	m.Size = int64(p.hdr.bodyLen)
	enc := tier.AppendMeta(nil, &m)
	tmp, err := os.CreateTemp(t.tmpDir, "meta-*")
	if err != nil {
		t.diskFull(err)
		return fmt.Errorf("l2: update meta of %s: %w", path, err)
	}
	hdr := p.hdr
	hdr.metaLen = uint32(len(enc))
	var hb [headerSize]byte
	hdr.marshal(hb[:])
	hdr.headCRC = headSum(hb[:], p.key, enc)
	hdr.marshal(hb[:])
	err = func() error {
		if _, err := tmp.Write(hb[:]); err != nil {
			return err
		}
		if _, err := tmp.Write(p.key); err != nil {
			return err
		}
		// Body and block table, unchanged; io.Copy uses copy_file_range.
		if _, err := f.Seek(p.hdr.bodyOff(), io.SeekStart); err != nil {
			return err
		}
		if _, err := io.Copy(tmp, io.LimitReader(f, p.hdr.metaOff()-p.hdr.bodyOff())); err != nil {
			return err
		}
		if _, err := tmp.Write(enc); err != nil {
			return err
		}
		if t.sync {
			if err := tmp.Sync(); err != nil {
				return err
			}
		}
		return tmp.Close()
	}()
	if err != nil {
		tmp.Close()
		_ = os.Remove(tmp.Name())
		t.diskFull(err)
		return fmt.Errorf("l2: update meta of %s: %w", path, err)
	}
	return t.install(tmp.Name(), h, charge(hdr.fileSize()))
}

// Scan implements tier.Scanner. It reads each indexed object's key and
// metadata from its file (bodies are not read); files that fail
// verification are removed and skipped.
func (t *Tier) Scan(ctx context.Context, fn func(key string, meta *tier.Meta) bool) error {
	t.mu.Lock()
	hashes := make([]uint64, 0, len(t.idx))
	for h := range t.idx {
		hashes = append(hashes, h)
	}
	t.mu.Unlock()
	for _, h := range hashes {
		if err := ctx.Err(); err != nil {
			return err
		}
		path := t.path(h)
		key, m, err := t.readMeta(path)
		if errors.Is(err, errCorrupt) {
			t.corrupt(h, path, err)
			continue
		}
		if err != nil {
			continue // removed meanwhile
		}
		if !fn(key, m) {
			return nil
		}
	}
	return nil
}

func (t *Tier) readMeta(path string) (string, *tier.Meta, error) {
	f, err := openShared(path)
	if err != nil {
		return "", nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", nil, err
	}
	p, err := readHead(f, fi.Size())
	if err != nil {
		return "", nil, err
	}
	m, _, err := tier.DecodeMeta(p.meta)
	if err != nil {
		return "", nil, fmt.Errorf("%w: %v", errCorrupt, err)
	}
	return string(p.key), m, nil
}

// reconcile walks the object files and indexes those the index lacks.
func (t *Tier) reconcile(ctx context.Context) error {
	subs, err := os.ReadDir(t.objDir)
	if err != nil {
		return err
	}
	added := 0
	for _, sub := range subs {
		if err := ctx.Err(); err != nil {
			return err
		}
		ents, err := os.ReadDir(filepath.Join(t.objDir, sub.Name()))
		if err != nil {
			continue
		}
		for _, e := range ents {
			h, err := strconv.ParseUint(e.Name(), 16, 64)
			if err != nil || len(e.Name()) != 16 {
				continue
			}
			t.mu.Lock()
			known := t.idx[h] != nil
			t.mu.Unlock()
			if known {
				continue
			}
			info, err := e.Info()
			if err != nil {
				continue
			}
			t.mu.Lock()
			if t.idx[h] == nil && !t.closed.Load() {
				size := charge(info.Size())
				victims := t.evictLocked(size)
				t.insertLocked(h, size)
				t.journalLocked(opAdd, h, size)
				t.mu.Unlock()
				t.removeFiles(victims)
				added++
				continue
			}
			t.mu.Unlock()
		}
	}
	if added > 0 {
		t.log.Info("l2: indexed object files missing from the saved index", "dir", t.objDir, "files", added)
	}
	return nil
}

// Close stops background work, saves the index and marks the directory
// cleanly closed. Writers still open fail their Commit.
func (t *Tier) Close() error {
	if !t.closed.CompareAndSwap(false, true) {
		return nil
	}
	if t.cancel != nil {
		t.cancel()
	}
	t.mu.Lock() // barrier: see install
	t.mu.Unlock()
	t.wg.Wait()
	t.fds.close()
	t.mu.Lock()
	var err error
	if t.j != nil {
		err = t.j.close()
		t.j = nil
	}
	t.mu.Unlock()
	if cerr := t.compact(); cerr != nil {
		return cerr
	}
	if err != nil {
		return fmt.Errorf("l2: close index journal: %w", err)
	}
	if err := os.Remove(filepath.Join(t.dir, dirtyName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("l2: mark clean shutdown: %w", err)
	}
	return nil
}
