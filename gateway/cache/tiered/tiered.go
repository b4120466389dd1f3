// Package tiered composes cache tiers (L1 memory, L2 disk, L3 object store)
// into one tier.Tier for the HTTP cache.
//
// A lookup walks the tiers in order and reports which one answered. A hit in
// a lower tier is copied into the tiers above it while the caller reads it,
// but only for keys looked up at least PromoteAfter times recently (a
// count-min sketch), so a one-off request does not churn the fast tiers;
// when the caller reads only part of it (a Range), the copy is made in the
// background instead, into the middle tiers; when it reads none of it (a
// HEAD, a 304), into every tier above, as a read would have. Bodies
// returned seek (io.Seeker), for Range. A
// store goes to the first tier synchronously and to the lower tiers through
// bounded queues with their own workers, so a slow or unreachable L3 never
// slows a hit or a fill: when a queue is full the write-down is dropped and
// counted. A site's objects larger than its memory limit (LimitFirst, the
// cache's SitePolicy.MaxL1Object) skip the first tier, on store and on
// promotion. A delete that fails in a tier (L3 down) leaves a tombstone: the
// old copy there is not served, and the delete is retried.
//
// It owns the flow between tiers. It must not know HTTP caching rules, and it
// does not own the tiers' lifetimes: Close stops its workers, not the tiers.
package tiered

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/meridian-edge/meridian/gateway/cache/failurelog"
	"github.com/meridian-edge/meridian/gateway/cache/freq"
	"io"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-edge/meridian/gateway/cache/tier"
)

// Options configures the composition.
type Options struct {
	// Tiers in lookup order, fastest first. At least one.
	Tiers []tier.Tier
	// PromoteAfter is how many recent lookups of a key make a lower-tier hit
	// worth copying upward. Default 2; 1 promotes every hit; negative never
	// promotes.
	PromoteAfter int
	// QueueLen bounds each lower tier's write-down queue. Default 256.
	QueueLen int
	// Workers per lower tier. Default 2.
	Workers int
	// SpoolLimit is the largest body buffered in memory for an asynchronous
	// write-down. Larger bodies are streamed into the second tier while they
	// are stored (it is expected to be local disk) and copied from there to
	// the tiers below. Default 1 MiB.
	SpoolLimit int64
	// SpoolBytes bounds the memory held by queued bodies; beyond it
	// write-downs are dropped. Default 64 MiB.
	SpoolBytes int64
	// SkipScan names tiers that Scan (and so a purge by prefix, tag or
	// site) does not enumerate, such as "l3" on a large regional bucket,
	// where enumerating means one request per object. Purged objects there
	// are still never served (the cache checks purges on read) and leave by
	// eviction.
	SkipScan []string
	// RetryEvery is how often deletes that failed in a tier (an unreachable
	// L3) are retried. Default 5s.
	RetryEvery time.Duration
	// Now is the clock used to date deletes; default time.Now. It must be
	// the clock that sets Meta.ResponseTime.
	Now func() time.Time
	// Logger receives dropped write-downs and tier errors; nil discards.
	Logger *slog.Logger
	// Registerer receives the composition's metrics; nil registers nothing.
	Registerer prometheus.Registerer
}

// Counters are event counts since New, per tier name where it applies.
type Counters struct {
	// Hits per tier name that answered; Misses when no tier had the key.
	Hits   map[string]int64
	Misses int64
	// Errors per tier: lookups or stores that failed (treated as misses).
	Errors map[string]int64
	// Promotions per tier name copied into.
	Promotions map[string]int64
	// WriteDowns per lower tier completed; Dropped because a queue or the
	// spool budget was full (a tier's queue also carries the background
	// promotions out of it: a dropped one counts there).
	WriteDowns map[string]int64
	Dropped    map[string]int64
	// Hidden per tier: objects found but not served because a delete of
	// their key failed in that tier after they were stored.
	Hidden map[string]int64
	// PendingDeletes is the number of keys whose delete is still to be
	// retried in some tier.
	PendingDeletes int
}

type tierStats struct {
	hits, errors, promotions, writeDowns, dropped, hidden atomic.Int64
}

// tombstone records a delete that failed in some tiers: objects stored there
// before at must not be served, and the delete is retried until it succeeds.
type tombstone struct {
	at    time.Time
	tiers uint64 // bit i: tier i still holds a deleted object
}

// maxTombstones bounds the memory of failed deletes (about 100 bytes each).
const maxTombstones = 200_000

// Tiered is the composition. It implements tier.Tier, tier.MetaUpdater,
// tier.Scanner and tier.Stats.
type Tiered struct {
	tiers        []tier.Tier
	stats        []tierStats
	misses       atomic.Int64
	promoteAfter uint32
	spoolLimit   int64
	spoolBytes   int64
	spoolUsed    atomic.Int64
	pending      atomic.Int64 // write-downs queued or running
	sketch       *freq.Sketch
	log          *slog.Logger
	failures     *failurelog.Log // store failures, rate-limited per tier and error kind

	queues []chan *job // index i-1 for tier i

	// Deletions newer than a queued write-down cancel it: deleted maps a key
	// to the sequence number of its last Delete; floor cancels every job
	// older than it (set when the map is reset to bound its size).
	seq     atomic.Uint64
	delMu   sync.Mutex
	deleted map[string]uint64
	floor   uint64

	skipScan map[string]bool

	// firstMax maps a site to the largest body the first tier may hold
	// for it (int64; LimitFirst): larger ones are kept in the lower tiers
	// only, by Put and by promotions.
	firstMax sync.Map

	tombMu sync.Mutex
	tombs  map[string]tombstone
	// ntombs is len(tombs), read without tombMu: a hit skips the lock
	// and the lookup while no delete is pending (the usual state).
	ntombs     atomic.Int64
	now        func() time.Time
	retryEvery time.Duration

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed atomic.Bool
}

// job is one write-down to one lower tier, or a queued delete there.
type job struct {
	key  string
	meta *tier.Meta
	seq  uint64
	body *spool    // in-memory body, or nil
	from tier.Tier // else copy from this tier
	del  bool      // delete the key instead of storing
	// up copies the object from the job's tier (from) into every tier
	// above it that does not hold the key: a promotion, not a write-down.
	up bool
	// untomb clears the key's tombstone for the tier once the job succeeded.
	untomb bool
	t      *Tiered
}

// spool is a body shared by the jobs of several tiers.
type spool struct {
	b    []byte
	refs atomic.Int32
	t    *Tiered
}

func (s *spool) release() {
	if s.refs.Add(-1) == 0 {
		s.t.spoolUsed.Add(-int64(cap(s.b)))
	}
}

// New starts the composition's write-down workers.
func New(opts Options) (*Tiered, error) {
	if len(opts.Tiers) == 0 {
		return nil, errors.New("tiered: at least one tier is required")
	}
	for i, t := range opts.Tiers {
		if t == nil {
			return nil, fmt.Errorf("tiered: tier %d is nil", i)
		}
	}
	if opts.PromoteAfter == 0 {
		opts.PromoteAfter = 2
	}
	if opts.PromoteAfter > 15 {
		return nil, fmt.Errorf("tiered: PromoteAfter %d must be at most 15 (the frequency sketch saturates there), or negative to never promote", opts.PromoteAfter)
	}
	if opts.PromoteAfter < 0 {
		opts.PromoteAfter = 16 // above any estimate
	}
	if opts.QueueLen == 0 {
		opts.QueueLen = 256
	}
	if opts.Workers == 0 {
		opts.Workers = 2
	}
	if opts.SpoolLimit == 0 {
		opts.SpoolLimit = 1 << 20
	}
	if opts.SpoolBytes == 0 {
		opts.SpoolBytes = 64 << 20
	}
	if opts.QueueLen < 0 || opts.Workers < 0 || opts.SpoolLimit < 0 || opts.SpoolBytes < 0 || opts.RetryEvery < 0 {
		return nil, errors.New("tiered: QueueLen, Workers, SpoolLimit, SpoolBytes and RetryEvery must not be negative")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.RetryEvery == 0 {
		opts.RetryEvery = 5 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if len(opts.Tiers) > 64 {
		return nil, errors.New("tiered: at most 64 tiers")
	}
	t := &Tiered{
		tombs: map[string]tombstone{}, now: opts.Now, retryEvery: opts.RetryEvery, skipScan: map[string]bool{},
		tiers: opts.Tiers, stats: make([]tierStats, len(opts.Tiers)),
		promoteAfter: uint32(opts.PromoteAfter), spoolLimit: opts.SpoolLimit, spoolBytes: opts.SpoolBytes,
		sketch: freq.New(1 << 20), log: opts.Logger, deleted: map[string]uint64{},
		failures: failurelog.New(opts.Logger, failurelog.DefaultEvery, nil),
	}
	for _, n := range opts.SkipScan {
		t.skipScan[n] = true
	}
	if err := t.register(opts.Registerer); err != nil {
		return nil, err
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	for i := 1; i < len(t.tiers); i++ {
		q := make(chan *job, opts.QueueLen)
		t.queues = append(t.queues, q)
		for range opts.Workers {
			t.wg.Add(1)
			go t.worker(i, q)
		}
	}
	t.wg.Add(1)
	go t.retryLoop()
	return t, nil
}

func (t *Tiered) register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	desc := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("meridian_cache_tiered_"+name, help, []string{"tier"}, nil)
	}
	c := &collector{t: t,
		hits:       desc("hits_total", "Lookups answered by each tier."),
		errors:     desc("errors_total", "Tier lookups or stores that failed and were treated as misses."),
		promotions: desc("promotions_total", "Objects copied up into each tier."),
		writeDowns: desc("write_downs_total", "Objects written down into each lower tier."),
		dropped:    desc("write_downs_dropped_total", "Write-downs dropped because a queue or the spool budget was full."),
		hidden:     desc("hidden_total", "Objects not served because their delete had failed in that tier."),
	}
	if err := reg.Register(c); err != nil {
		return fmt.Errorf("tiered: register metrics: %w", err)
	}
	return nil
}

type collector struct {
	t                                                     *Tiered
	hits, errors, promotions, writeDowns, dropped, hidden *prometheus.Desc
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.hits
	ch <- c.errors
	ch <- c.promotions
	ch <- c.writeDowns
	ch <- c.dropped
	ch <- c.hidden
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	for i, tr := range c.t.tiers {
		s := &c.t.stats[i]
		n := tr.Name()
		ch <- prometheus.MustNewConstMetric(c.hits, prometheus.CounterValue, float64(s.hits.Load()), n)
		ch <- prometheus.MustNewConstMetric(c.errors, prometheus.CounterValue, float64(s.errors.Load()), n)
		ch <- prometheus.MustNewConstMetric(c.promotions, prometheus.CounterValue, float64(s.promotions.Load()), n)
		ch <- prometheus.MustNewConstMetric(c.writeDowns, prometheus.CounterValue, float64(s.writeDowns.Load()), n)
		ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(s.dropped.Load()), n)
		ch <- prometheus.MustNewConstMetric(c.hidden, prometheus.CounterValue, float64(s.hidden.Load()), n)
	}
}

// Name implements tier.Tier; GetFrom names the tier that answered.
func (t *Tiered) Name() string { return "tiered" }

// Tiers returns the composed tiers, fastest first.
func (t *Tiered) Tiers() []tier.Tier { return append([]tier.Tier(nil), t.tiers...) }

// LimitFirst keeps objects of site (tier.Meta.Site) whose body is larger
// than maxBody out of the first tier (the memory tier): Put stores them in
// the lower tiers only, a body of unknown length leaves the first tier when
// it outgrows the limit, and hits in a lower tier are not promoted into it.
// A maxBody of 0 or less removes the limit. The cache calls it for each
// site's MaxL1Object; it may be called again at any time (a reload).
func (t *Tiered) LimitFirst(site string, maxBody int64) {
	if maxBody <= 0 {
		t.firstMax.Delete(site)
		return
	}
	t.firstMax.Store(site, maxBody)
}

// firstLimit is LimitFirst's limit for site, 0 for none.
func (t *Tiered) firstLimit(site string) int64 {
	if v, ok := t.firstMax.Load(site); ok {
		return v.(int64)
	}
	return 0
}

// fitsFirst reports whether an object with meta may be stored in the first
// tier under its site's limit; one of unknown size may not when there is a
// limit.
func (t *Tiered) fitsFirst(meta *tier.Meta) bool {
	limit := t.firstLimit(meta.Site)
	return limit <= 0 || (meta.Size >= 0 && meta.Size <= limit)
}

// MaxObject returns the largest object any of the tiers stores (the cache
// streams larger responses through unstored); math.MaxInt64 when a tier
// states no limit.
func (t *Tiered) MaxObject() int64 {
	var n int64
	for _, tr := range t.tiers {
		mo, ok := tr.(interface{ MaxObject() int64 })
		if !ok {
			return math.MaxInt64
		}
		n = max(n, mo.MaxObject())
	}
	return n
}

// Get implements tier.Tier.
func (t *Tiered) Get(ctx context.Context, key string) (*tier.Object, error) {
	o, _, err := t.GetFrom(ctx, key)
	return o, err
}

// GetFrom looks key up in each tier in order and returns the object with the
// name of the tier that answered (for Cache-Status), or tier.ErrNotFound. A
// tier that fails is counted and skipped. When the key is popular enough, a
// lower-tier hit is copied into the tiers above while the caller reads the
// body; closing the body part way abandons that copy for one into the
// middle tiers in the background, and closing it unread (a HEAD) for one
// into every tier above in the background.
func (t *Tiered) GetFrom(ctx context.Context, key string) (*tier.Object, string, error) {
	seen := t.sketch.Add(xxhash.Sum64String(key))
	for i, tr := range t.tiers {
		o, err := get(ctx, tr, key)
		if err != nil {
			if !errors.Is(err, tier.ErrNotFound) {
				t.stats[i].errors.Add(1)
				t.log.Debug("tiered: lookup failed; trying the next tier", "tier", tr.Name(), "err", err)
			}
			if ctx.Err() != nil {
				return nil, "", ctx.Err()
			}
			continue
		}
		if t.hidden(key, i, o.Meta) {
			o.Body.Close()
			t.stats[i].hidden.Add(1)
			if i > 0 {
				// The tier answers again: retry the delete now.
				t.enqueue(i, &job{key: key, seq: t.seq.Add(1), del: true, untomb: true, t: t})
			}
			continue
		}
		t.stats[i].hits.Add(1)
		if i > 0 && seen >= uint64(t.promoteAfter) {
			o = t.promote(ctx, key, o, i)
		}
		return o, tr.Name(), nil
	}
	t.misses.Add(1)
	return nil, "", tier.ErrNotFound
}

// bytesGetter is the in-memory fast path of the L1 tier.
type bytesGetter interface {
	GetBytes(key string) (*tier.Meta, []byte, error)
}

// get reads key from tr; an in-memory tier's body is returned as a
// seekable reader over its bytes, without a copy.
func get(ctx context.Context, tr tier.Tier, key string) (*tier.Object, error) {
	if bg, ok := tr.(bytesGetter); ok {
		m, b, err := bg.GetBytes(key)
		if err != nil {
			return nil, err
		}
		return &tier.Object{Meta: m, Body: bytesBody{bytes.NewReader(b)}}, nil
	}
	return tr.Get(ctx, key)
}

// bytesBody is an in-memory body that seeks and closes.
type bytesBody struct{ *bytes.Reader }

func (bytesBody) Close() error { return nil }

// promote wraps o's body so that, as it is read, it is also stored in the
// tiers above tier src.
func (t *Tiered) promote(ctx context.Context, key string, o *tier.Object, src int) *tier.Object {
	var ws []tier.Writer
	var into []int
	for j := range src {
		if j == 0 && !t.fitsFirst(o.Meta) {
			continue
		}
		w, err := t.tiers[j].Put(ctx, key, o.Meta)
		if err != nil {
			continue // not admitted, too large, or failing: serve anyway
		}
		ws = append(ws, w)
		into = append(into, j)
	}
	if len(ws) == 0 {
		return o
	}
	tb := &teeBody{r: o.Body, ws: ws, into: into, t: t, want: o.Meta.Size}
	tb.onPartial = func(unread bool) {
		seq := t.seq.Add(1)
		if unread {
			// Closed before any read: the caller wanted the metadata only
			// (a HEAD, a 304 to a conditional request, a Vary index
			// record). The key is as popular as a GET's that is promoted,
			// and every such lookup costs a request to the lower tier
			// (one S3 GET for L3), so the object is copied whole into
			// every tier above, as a GET would have, by one job on the
			// source tier's queue that reads it once. This is what
			// nginx (proxy_cache_convert_head) and Varnish (HEAD fetched
			// as GET) do to fill a cache on a HEAD: pay one body read,
			// off the request path here, so the next HEAD or GET is a
			// fast-tier hit.
			t.enqueue(src, &job{key: key, seq: seq, from: t.tiers[src], up: true, t: t})
			return
		}
		// A reader that stops part way (a Range, a client gone) cannot
		// feed the copy; the object is then copied into the middle tiers
		// in the background instead. Not into L1: a Range reader wants a
		// slice of what is usually a large object, whose home is disk.
		for j := 1; j < src; j++ {
			t.enqueue(j, &job{key: key, meta: o.Meta, seq: seq, from: t.tiers[src], t: t})
		}
	}
	if s, ok := o.Body.(io.Seeker); ok {
		return &tier.Object{Meta: o.Meta, Body: &seekTee{teeBody: tb, s: s}}
	}
	return &tier.Object{Meta: o.Meta, Body: tb}
}

// teeBody copies what the caller reads into promotion writers. Only bytes
// read in order from the start are copied; the writers are committed when
// the copy reached the end of the body, and aborted otherwise.
type teeBody struct {
	r    io.ReadCloser
	ws   []tier.Writer
	into []int
	t    *Tiered
	want int64 // body length (Meta.Size)
	pos  int64 // the source's read position
	teed int64 // bytes copied to the writers, always a prefix
	done bool  // writers committed or aborted
	read bool  // Read was called
	// onPartial runs when the body is closed before the copy completed
	// (a Range, a client gone, or, unread, a HEAD): it copies the object
	// in the background.
	onPartial func(unread bool)
}

func (b *teeBody) Read(p []byte) (int, error) {
	b.read = true
	n, err := b.r.Read(p)
	if n > 0 && !b.done {
		if b.pos == b.teed {
			for _, w := range b.ws {
				_, _ = w.Write(p[:n])
			}
			b.teed += int64(n)
		}
	}
	b.pos += int64(n)
	if !b.done {
		switch {
		case err == io.EOF && b.teed == b.pos && (b.want < 0 || b.teed == b.want):
			b.done = true
			for k, w := range b.ws {
				if w.Commit() == nil {
					b.t.stats[b.into[k]].promotions.Add(1)
				}
			}
		case err != nil && err != io.EOF:
			b.done = true
			b.abort()
		}
	}
	return n, err
}

func (b *teeBody) abort() {
	for _, w := range b.ws {
		w.Abort()
	}
}

func (b *teeBody) Close() error {
	if !b.done {
		b.done = true
		b.abort()
		if b.onPartial != nil {
			b.onPartial(!b.read)
		}
	}
	return b.r.Close()
}

// seekTee is a teeBody over a source that seeks (L2 files, L3 objects), so
// the cache can serve a Range from it. Seeking does not end the copy: it
// goes on while reads happen at its position (a reader may seek to the end
// to learn the size and back to the start).
type seekTee struct {
	*teeBody
	s io.Seeker
}

func (b *seekTee) Seek(off int64, whence int) (int64, error) {
	pos, err := b.s.Seek(off, whence)
	if err == nil {
		b.pos = pos
	}
	return pos, err
}

// Put implements tier.Tier. The first tier is written synchronously (unless
// the object is larger than its site's LimitFirst); the lower tiers receive
// the object after Commit through their queues, or, for a large body,
// through a writer on the second tier as it arrives. With several tiers it
// returns a writer even when the first refuses the object; with one, that
// tier's refusal (ErrTooLarge over the site's limit). Commit returns
// ErrTooLarge when the first tier refused the object for its size and no
// lower tier took it.
func (t *Tiered) Put(ctx context.Context, key string, meta *tier.Meta) (tier.Writer, error) {
	if t.closed.Load() {
		return nil, errors.New("tiered: closed")
	}
	w := &writer{t: t, key: key, meta: meta.Clone(), topMax: t.firstLimit(meta.Site)}
	var err error
	if w.topMax > 0 && meta.Size > w.topMax {
		// Larger than the site keeps in memory: the lower tiers only.
		err, w.topTooLarge = tier.ErrTooLarge, true
	} else {
		var top tier.Writer
		top, err = t.tiers[0].Put(ctx, key, meta)
		switch {
		case err == nil:
			w.top = top
		case errors.Is(err, tier.ErrTooLarge):
			w.topTooLarge = true
		case errors.Is(err, tier.ErrNotAdmitted):
		default:
			t.storeFailed(0, err)
		}
	}
	if len(t.tiers) == 1 && w.top == nil {
		return nil, err
	}
	if meta.Size > t.spoolLimit && len(t.tiers) > 1 {
		w.startDirect(ctx)
	}
	return w, nil
}

type writer struct {
	t      *Tiered
	key    string
	meta   *tier.Meta
	top    tier.Writer // first tier, may be nil
	buf    bytes.Buffer
	direct tier.Writer // second tier, when the body outgrew the spool
	spill  bool        // the body outgrew the spool and no direct writer took it
	n      int64
	done   bool
	// topMax is the site's limit for the first tier (LimitFirst), 0 for
	// none; topTooLarge: the body exceeds it, so top was not used or was
	// aborted when the body outgrew it.
	topMax      int64
	topTooLarge bool
}

// startDirect switches a large body from the memory spool to a synchronous
// writer on the second tier.
func (w *writer) startDirect(ctx context.Context) {
	d, err := w.t.tiers[1].Put(ctx, w.key, w.meta)
	if err != nil {
		if !errors.Is(err, tier.ErrNotAdmitted) && !errors.Is(err, tier.ErrTooLarge) {
			w.t.storeFailed(1, err)
		}
		w.spill = true
		w.buf = bytes.Buffer{}
		return
	}
	w.direct = d
	if w.buf.Len() > 0 {
		_, _ = d.Write(w.buf.Bytes())
	}
	w.buf = bytes.Buffer{}
}

func (w *writer) Write(p []byte) (int, error) {
	if w.done {
		return len(p), nil
	}
	w.n += int64(len(p))
	if w.top != nil {
		if w.topMax > 0 && w.n > w.topMax {
			// A body of unknown length outgrew the site's memory limit:
			// it goes on into the lower tiers only.
			w.top.Abort()
			w.top, w.topTooLarge = nil, true
		} else {
			_, _ = w.top.Write(p)
		}
	}
	switch {
	case len(w.t.tiers) == 1, w.spill:
	case w.direct != nil:
		_, _ = w.direct.Write(p)
	case w.n > w.t.spoolLimit:
		w.startDirect(context.Background())
		if w.direct != nil {
			_, _ = w.direct.Write(p)
		}
	default:
		w.buf.Write(p)
	}
	return len(p), nil
}

// Commit implements tier.Writer: the first tier's result is returned (nil
// when only lower tiers take the object); write-downs are queued.
func (w *writer) Commit() error {
	if w.done {
		return errors.New("tiered: Commit after Commit or Abort")
	}
	w.done = true
	t := w.t
	var topErr error = tier.ErrNotAdmitted
	if w.topTooLarge {
		topErr = tier.ErrTooLarge
	}
	if w.top != nil {
		topErr = w.top.Commit()
	}
	if len(t.tiers) == 1 {
		return topErr
	}
	meta := w.meta.Clone()
	meta.Size = w.n
	seq := t.seq.Add(1)
	queued := false
	switch {
	case w.direct != nil:
		if err := w.direct.Commit(); err != nil {
			if !errors.Is(err, tier.ErrNotAdmitted) && !errors.Is(err, tier.ErrTooLarge) {
				t.storeFailed(1, err)
			}
			break
		}
		t.stats[1].writeDowns.Add(1)
		queued = true
		// The tiers below the second copy the object from it.
		for i := 2; i < len(t.tiers); i++ {
			t.enqueue(i, &job{key: w.key, meta: meta, seq: seq, from: t.tiers[1], t: t})
		}
	case w.spill:
		for i := 1; i < len(t.tiers); i++ {
			t.stats[i].dropped.Add(1)
		}
	default:
		b := w.buf.Bytes()
		if t.spoolUsed.Add(int64(cap(b))) > t.spoolBytes {
			t.spoolUsed.Add(-int64(cap(b)))
			for i := 1; i < len(t.tiers); i++ {
				t.stats[i].dropped.Add(1)
			}
			break
		}
		sp := &spool{b: b, t: t}
		sp.refs.Store(int32(len(t.queues)))
		for i := 1; i < len(t.tiers); i++ {
			if t.enqueue(i, &job{key: w.key, meta: meta, seq: seq, body: sp, t: t}) {
				queued = true
			} else {
				sp.release()
			}
		}
	}
	if topErr != nil && queued {
		return nil
	}
	return topErr
}

// enqueue adds j to tier i's queue without blocking; a full queue drops it.
func (t *Tiered) enqueue(i int, j *job) bool {
	if t.closed.Load() {
		t.stats[i].dropped.Add(1)
		return false
	}
	t.pending.Add(1)
	select {
	case t.queues[i-1] <- j:
		return true
	default:
		t.pending.Add(-1)
		t.stats[i].dropped.Add(1)
		t.log.Debug("tiered: write-down queue full; dropping", "tier", t.tiers[i].Name(), "key", j.key)
		return false
	}
}

func (w *writer) Abort() {
	if w.done {
		return
	}
	w.done = true
	if w.top != nil {
		w.top.Abort()
	}
	if w.direct != nil {
		w.direct.Abort()
	}
	w.buf = bytes.Buffer{}
}

func (t *Tiered) worker(i int, q chan *job) {
	defer t.wg.Done()
	for {
		select {
		case <-t.ctx.Done():
			// Release what is still queued.
			for {
				select {
				case j := <-q:
					if j.body != nil {
						j.body.release()
					}
					t.pending.Add(-1)
				default:
					return
				}
			}
		case j := <-q:
			t.run(i, j)
		}
	}
}

// storeFailed counts a store into tier i that failed for another reason
// than admission or size, and reports it at WARN: the first failure per
// tier and error kind, then at most one a minute with the number left out.
// Without the line a read-only or full disk under L2 fails silently (the
// error counter alone moves); with one line per store it floods the log.
func (t *Tiered) storeFailed(i int, err error) {
	t.stats[i].errors.Add(1)
	tr := t.tiers[i]
	attrs := []any{"tier", tr.Name()}
	if d, ok := tr.(interface{ Dir() string }); ok {
		attrs = append(attrs, "dir", d.Dir())
	}
	attrs = append(attrs, "err", err)
	t.failures.Warn(tr.Name()+"/"+failurelog.ErrorKind(err),
		"tiered: storing in a tier failed; it keeps serving what it holds, but new objects are not stored there until this is fixed", attrs...)
}

// run performs one write-down, recovering from a tier's panic.
func (t *Tiered) run(i int, j *job) {
	defer t.pending.Add(-1)
	if j.body != nil {
		defer j.body.release()
	}
	defer func() {
		if p := recover(); p != nil {
			t.stats[i].errors.Add(1)
			t.log.Error("tiered: write-down panicked", "tier", t.tiers[i].Name(), "panic", p)
		}
	}()
	tr := t.tiers[i]
	if j.del {
		if err := tr.Delete(t.ctx, j.key); err == nil && j.untomb {
			t.untomb(j.key, i, time.Time{})
		}
		return
	}
	if t.cancelled(j) {
		return
	}
	if j.up {
		t.promoteUp(i, j)
		return
	}
	w, err := tr.Put(t.ctx, j.key, j.meta)
	if err != nil {
		if !errors.Is(err, tier.ErrNotAdmitted) && !errors.Is(err, tier.ErrTooLarge) {
			t.storeFailed(i, err)
		}
		return
	}
	if j.body != nil {
		_, _ = w.Write(j.body.b)
	} else {
		o, err := j.from.Get(t.ctx, j.key)
		if err != nil {
			w.Abort()
			return
		}
		_, cerr := io.Copy(w, o.Body)
		o.Body.Close()
		if cerr != nil {
			w.Abort()
			return
		}
	}
	if err := w.Commit(); err != nil {
		if !errors.Is(err, tier.ErrNotAdmitted) && !errors.Is(err, tier.ErrTooLarge) {
			t.storeFailed(i, err)
		}
		return
	}
	t.stats[i].writeDowns.Add(1)
	if j.untomb {
		t.untomb(j.key, i, time.Time{})
	}
	if t.cancelled(j) {
		// Deleted while it was being written: do not leave it behind.
		_ = tr.Delete(t.ctx, j.key)
	}
}

// promoteUp runs promotion job j of tier src: the object is read once from
// src, as it is now, and written into each tier above that does not hold
// the key. A tier that holds it already is skipped: another request
// promoted it meanwhile, or a newer response was stored there, which the
// older copy must not replace. A body shorter than its Meta.Size is not
// committed anywhere.
func (t *Tiered) promoteUp(src int, j *job) {
	o, err := j.from.Get(t.ctx, j.key)
	if err != nil {
		if !errors.Is(err, tier.ErrNotFound) {
			t.stats[src].errors.Add(1)
		}
		return
	}
	defer o.Body.Close()
	if t.hidden(j.key, src, o.Meta) {
		return // deleted while src was unreachable
	}
	var ws []tier.Writer
	var into []int
	for k := range src {
		tr := t.tiers[k]
		if k == 0 && !t.fitsFirst(o.Meta) {
			continue
		}
		if held, err := get(t.ctx, tr, j.key); err == nil {
			held.Body.Close()
			continue
		}
		w, err := tr.Put(t.ctx, j.key, o.Meta)
		if err != nil {
			if !errors.Is(err, tier.ErrNotAdmitted) && !errors.Is(err, tier.ErrTooLarge) {
				t.storeFailed(k, err)
			}
			continue
		}
		ws, into = append(ws, w), append(into, k)
	}
	if len(ws) == 0 {
		return
	}
	abort := func() {
		for _, w := range ws {
			w.Abort()
		}
	}
	buf := make([]byte, 32<<10)
	var copied int64
	for {
		n, err := o.Body.Read(buf)
		for _, w := range ws {
			_, _ = w.Write(buf[:n])
		}
		copied += int64(n)
		if err == io.EOF && (o.Meta.Size < 0 || copied == o.Meta.Size) {
			break
		}
		if err != nil {
			t.stats[src].errors.Add(1)
			abort()
			return
		}
	}
	if t.cancelled(j) {
		abort()
		return
	}
	for k, w := range ws {
		if err := w.Commit(); err != nil {
			if !errors.Is(err, tier.ErrNotAdmitted) && !errors.Is(err, tier.ErrTooLarge) {
				t.storeFailed(into[k], err)
			}
			continue
		}
		t.stats[into[k]].promotions.Add(1)
		if t.cancelled(j) {
			// Deleted while it was being written: do not leave it behind.
			_ = t.tiers[into[k]].Delete(t.ctx, j.key)
		}
	}
}

func (t *Tiered) cancelled(j *job) bool {
	t.delMu.Lock()
	defer t.delMu.Unlock()
	return j.seq < t.floor || t.deleted[j.key] > j.seq
}

func (t *Tiered) noteDelete(key string) {
	s := t.seq.Add(1)
	t.delMu.Lock()
	if len(t.deleted) >= 1<<16 {
		t.deleted = map[string]uint64{}
		t.floor = s
	}
	t.deleted[key] = s
	t.delMu.Unlock()
}

// Delete implements tier.Tier: the key is removed from every tier, and
// write-downs queued before it are cancelled. A tier where the delete fails
// (an unreachable L3) gets a tombstone: what it holds under the key from
// before the delete is not served, and the delete is retried in the
// background. So Delete succeeds as long as the local tiers do; it returns
// the first error of a tier that gets no tombstone (when too many are
// pending).
func (t *Tiered) Delete(ctx context.Context, key string) error {
	at := t.now()
	t.noteDelete(key)
	var failed, done uint64
	var errs []error
	for i, tr := range t.tiers {
		if err := tr.Delete(ctx, key); err != nil {
			t.stats[i].errors.Add(1)
			failed |= 1 << i
			errs = append(errs, fmt.Errorf("tiered: delete from %s: %w", tr.Name(), err))
		} else {
			done |= 1 << i
		}
	}
	if !t.tomb(key, at, failed, done) && len(errs) > 0 {
		return errs[0]
	}
	return nil
}

// tomb records failed deletes of key (bits of failed) and clears those that
// succeeded (bits of done). It reports false when the failures could not be
// recorded because too many are pending.
func (t *Tiered) tomb(key string, at time.Time, failed, done uint64) bool {
	t.tombMu.Lock()
	defer t.tombMu.Unlock()
	ts, ok := t.tombs[key]
	if !ok && failed == 0 {
		return true
	}
	if !ok && len(t.tombs) >= maxTombstones {
		t.log.Error("tiered: too many deletes pending in unreachable tiers; this one is not tracked", "key", key)
		return false
	}
	ts.tiers = (ts.tiers &^ done) | failed
	if failed != 0 && at.After(ts.at) {
		ts.at = at
	}
	if ts.tiers == 0 {
		delete(t.tombs, key)
	} else {
		t.tombs[key] = ts
	}
	t.ntombs.Store(int64(len(t.tombs)))
	return true
}

// untomb clears tier i's tombstone of key; with a non-zero stored time, only
// when that object was stored after the delete (it replaced the deleted one).
func (t *Tiered) untomb(key string, i int, stored time.Time) {
	t.tombMu.Lock()
	defer t.tombMu.Unlock()
	ts, ok := t.tombs[key]
	if !ok || (!stored.IsZero() && !stored.After(ts.at)) {
		return
	}
	ts.tiers &^= 1 << i
	if ts.tiers == 0 {
		delete(t.tombs, key)
	} else {
		t.tombs[key] = ts
	}
	t.ntombs.Store(int64(len(t.tombs)))
}

// hidden reports whether tier i's object m under key was deleted while that
// tier was unreachable.
func (t *Tiered) hidden(key string, i int, m *tier.Meta) bool {
	if t.ntombs.Load() == 0 {
		return false
	}
	t.tombMu.Lock()
	ts, ok := t.tombs[key]
	t.tombMu.Unlock()
	if !ok || ts.tiers&(1<<i) == 0 {
		return false
	}
	if m.ResponseTime.After(ts.at) {
		t.untomb(key, i, m.ResponseTime) // stored after the delete
		return false
	}
	return true
}

// retryLoop retries failed deletes until they succeed.
func (t *Tiered) retryLoop() {
	defer t.wg.Done()
	tk := time.NewTicker(t.retryEvery)
	defer tk.Stop()
	for {
		select {
		case <-t.ctx.Done():
			return
		case <-tk.C:
		}
		t.tombMu.Lock()
		keys := make(map[string]uint64, len(t.tombs))
		for k, ts := range t.tombs {
			keys[k] = ts.tiers
		}
		t.tombMu.Unlock()
		for k, mask := range keys {
			var done uint64
			for i, tr := range t.tiers {
				if mask&(1<<i) == 0 {
					continue
				}
				if err := tr.Delete(t.ctx, k); err == nil {
					done |= 1 << i
				}
			}
			if t.ctx.Err() != nil {
				return
			}
			if done != 0 {
				t.tomb(k, time.Time{}, 0, done)
			}
		}
	}
}

// UpdateMeta implements tier.MetaUpdater. Tiers that can update metadata in
// place do so now. A lower tier that cannot (L3) is rewritten in the
// background from the fastest tier holding the updated object, or, when none
// does, has its copy deleted in the background; meanwhile its old copy is
// not served. It returns tier.ErrNotFound when no tier could update the key.
func (t *Tiered) UpdateMeta(ctx context.Context, key string, meta *tier.Meta) error {
	at := t.now()
	found := -1
	var first error
	for i, tr := range t.tiers {
		mu, ok := tr.(tier.MetaUpdater)
		if ok {
			err := mu.UpdateMeta(ctx, key, meta)
			switch {
			case err == nil:
				if found < 0 {
					found = i
				}
			case errors.Is(err, tier.ErrNotFound):
			default:
				t.stats[i].errors.Add(1)
				if first == nil {
					first = fmt.Errorf("tiered: update meta in %s: %w", tr.Name(), err)
				}
			}
			continue
		}
		if i == 0 {
			if err := tr.Delete(ctx, key); err != nil && first == nil {
				first = fmt.Errorf("tiered: update meta in %s: %w", tr.Name(), err)
			}
			continue
		}
		if !t.tomb(key, at, 1<<i, 0) {
			continue
		}
		j := &job{key: key, seq: t.seq.Add(1), untomb: true, t: t}
		if found >= 0 {
			j.from, j.meta = t.tiers[found], meta.Clone()
		} else {
			j.del = true
		}
		t.enqueue(i, j) // if dropped, the tombstone's retry deletes the copy
	}
	if first != nil {
		return first
	}
	if found < 0 {
		return tier.ErrNotFound
	}
	return nil
}

// Scan implements tier.Scanner over every tier that can enumerate (except
// those named in Options.SkipScan), visiting each key once, with the
// metadata of the fastest tier holding it. A tier other than the first that
// fails to scan (L3 down) is logged, counted and skipped, so a purge still
// applies to the local tiers; the cache's purge check on read covers what
// that tier still holds. Only an error of the first tier or of ctx is
// returned.
func (t *Tiered) Scan(ctx context.Context, fn func(key string, meta *tier.Meta) bool) error {
	seen := map[string]struct{}{}
	for i, tr := range t.tiers {
		sc, ok := tr.(tier.Scanner)
		if !ok || t.skipScan[tr.Name()] {
			continue
		}
		stop := false
		err := sc.Scan(ctx, func(key string, m *tier.Meta) bool {
			if _, dup := seen[key]; dup {
				return true
			}
			seen[key] = struct{}{}
			if !fn(key, m) {
				stop = true
				return false
			}
			return true
		})
		if err != nil {
			if i == 0 || ctx.Err() != nil {
				return fmt.Errorf("tiered: scan %s: %w", tr.Name(), err)
			}
			t.stats[i].errors.Add(1)
			t.log.Warn("tiered: scan failed; skipping the tier", "tier", tr.Name(), "err", err)
			continue
		}
		if stop {
			return nil
		}
	}
	return nil
}

// Usage implements tier.Stats: the sum over tiers that report usage.
func (t *Tiered) Usage() (objects, bytes int64) {
	for _, tr := range t.tiers {
		if s, ok := tr.(tier.Stats); ok {
			o, b := s.Usage()
			objects += o
			bytes += b
		}
	}
	return objects, bytes
}

// Counters returns event counts since New.
func (t *Tiered) Counters() Counters {
	c := Counters{Hits: map[string]int64{}, Errors: map[string]int64{}, Promotions: map[string]int64{},
		WriteDowns: map[string]int64{}, Dropped: map[string]int64{}, Hidden: map[string]int64{}, Misses: t.misses.Load()}
	t.tombMu.Lock()
	c.PendingDeletes = len(t.tombs)
	t.tombMu.Unlock()
	for i, tr := range t.tiers {
		s := &t.stats[i]
		n := tr.Name()
		c.Hits[n] = s.hits.Load()
		c.Errors[n] = s.errors.Load()
		c.Promotions[n] = s.promotions.Load()
		c.WriteDowns[n] = s.writeDowns.Load()
		c.Dropped[n] = s.dropped.Load()
		c.Hidden[n] = s.hidden.Load()
	}
	return c
}

// Flush waits until every write-down queued so far has been attempted, or
// ctx ends. Tests and a graceful shutdown use it.
func (t *Tiered) Flush(ctx context.Context) error {
	for t.pending.Load() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
	return nil
}

// Close stops the write-down workers; queued write-downs are dropped. The
// tiers themselves stay open (their owner closes them).
func (t *Tiered) Close() error {
	if !t.closed.CompareAndSwap(false, true) {
		return nil
	}
	t.cancel()
	t.wg.Wait()
	return nil
}

// Section returns the part [off, off+n) of an object's body for a Range
// response. When the body seeks (every body GetFrom returns with L1, L2 and
// L3), only that part is read: from disk, just the 32 KiB blocks it touches;
// from L3, one ranged GET. Otherwise the first
// off bytes are read and discarded. Closing the result closes body. The
// caller checks the range against Meta.Size first (416 otherwise).
func Section(body io.ReadCloser, off, n int64) (io.ReadCloser, error) {
	if off > 0 {
		if s, ok := body.(io.Seeker); ok {
			if _, err := s.Seek(off, io.SeekStart); err != nil {
				return nil, fmt.Errorf("tiered: seek to %d: %w", off, err)
			}
		} else if _, err := io.CopyN(io.Discard, body, off); err != nil {
			return nil, fmt.Errorf("tiered: skip to %d: %w", off, err)
		}
	}
	return section{Reader: io.LimitReader(body, n), Closer: body}, nil
}

type section struct {
	io.Reader
	io.Closer
}
