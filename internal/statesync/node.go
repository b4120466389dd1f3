// Package statesync replicates Meridian's shared state (purges, plugin
// deployments, plugin KV and counters, config version announcements) between
// PoPs and DNS servers over NATS, on top of the CRDTs in internal/crdt.
//
// Every write is a CRDT delta. It goes out once, as a JetStream publish on
// meridian.sync.delta.<node>: core subscribers on that subject get it at once
// (the fast path) and the stream stores it (the durable central log). A node
// reads the log only to catch up (at start, after a reconnect, when a
// sender's delta numbers skip, and every minute by default), from the sequence
// after the last one it applied, so a node that was down or cut off replays
// what it missed while a connected one receives each delta once. Every
// AntiEntropyInterval each node publishes a digest of its state; a node that
// sees a different digest answers with the differing buckets, which catches
// anything core NATS dropped. While NATS is unreachable a node keeps serving
// from its local state and queues its own deltas on disk (bounded), flushing
// them when NATS returns. Plugin KV keys and counters may carry a TTL: they
// read as absent after it and compaction drops them, so state written per
// client and time window stays bounded. PROTOCOL.md documents subjects and
// messages.
//
// The package owns the replication and the typed records; it must not act on
// them (dropping cached objects, loading plugins): callers subscribe and act.
package statesync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-edge/meridian/internal/crdt"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Options configures a Node. Zero values take the documented defaults.
type Options struct {
	// NodeID names this node in clocks and subjects: letters, digits, '-'
	// and '_', at most 64 bytes, unique in the fleet and stable across
	// restarts (a PoP id). Required.
	NodeID string
	// Conn is the NATS connection (embedded or external); the caller owns it
	// and should allow endless reconnects. Required.
	Conn *nats.Conn
	// DataDir holds the state snapshot and the degraded-mode queue. Required.
	DataDir string
	// Stream is the JetStream stream holding the durable log. Default "MERIDIAN_SYNC".
	Stream string
	// StreamReplicas is the stream's replica count on a NATS cluster. Default 1.
	StreamReplicas int
	// StreamMaxAge bounds how long the log keeps deltas. Default 72h; it must
	// be below TombstoneTTL.
	StreamMaxAge time.Duration
	// AntiEntropyInterval is how often a digest is published and the log's
	// reachability checked; every 12 intervals the node also catches up with
	// the log. Default 5s.
	AntiEntropyInterval time.Duration
	// TombstoneTTL is how long deletions are remembered before compaction,
	// and the longest a node may be away before its snapshot is discarded.
	// Default 7 days.
	TombstoneTTL time.Duration
	// ExpiryGrace is how long an expired plugin KV key or counter stays in
	// memory after its expiry (by this node's clock) before compaction
	// drops it. Expiry times are absolute, in the writer's clock, and every
	// node stops returning a key at its expiry by its own clock; the grace
	// is the clock skew between nodes the merge tolerates: until it has
	// passed, late updates of the key (from a node whose clock is behind,
	// or a delta still in flight) are merged, after it they are refused.
	// Default 1 minute; keep clocks in sync (NTP) well within it.
	ExpiryGrace time.Duration
	// PurgeRetention is how long purge records live. Objects stored before
	// now-PurgeRetention are reported purged, so the cache must not keep
	// objects longer than this. Default 30 days.
	PurgeRetention time.Duration
	// QueueMaxItems and QueueMaxBytes bound the degraded-mode queue.
	// Defaults 100000 deltas and 64 MiB.
	QueueMaxItems int
	QueueMaxBytes int64
	// PublishTimeout bounds one JetStream publish. Default 2s.
	PublishTimeout time.Duration
	// CounterFlushInterval coalesces counter increments. Default 50ms.
	CounterFlushInterval time.Duration
	// ReplayTimeout bounds how long Open waits to catch up with the log
	// before it returns and goes on catching up in the background. Default 10s.
	ReplayTimeout time.Duration
	// Now is the wall clock; nil means time.Now. Tests inject it.
	Now func() time.Time
	// Logger receives the node's logs; nil discards them.
	Logger *slog.Logger
	// Registerer receives the node's metrics; nil registers nothing.
	Registerer prometheus.Registerer
}

func (o *Options) setDefaults() {
	if o.Stream == "" {
		o.Stream = "MERIDIAN_SYNC"
	}
	if o.StreamReplicas == 0 {
		o.StreamReplicas = 1
	}
	if o.StreamMaxAge == 0 {
		o.StreamMaxAge = 72 * time.Hour
	}
	if o.AntiEntropyInterval == 0 {
		o.AntiEntropyInterval = 5 * time.Second
	}
	if o.TombstoneTTL == 0 {
		o.TombstoneTTL = 7 * 24 * time.Hour
	}
	if o.ExpiryGrace == 0 {
		o.ExpiryGrace = time.Minute
	}
	if o.PurgeRetention == 0 {
		o.PurgeRetention = 30 * 24 * time.Hour
	}
	if o.QueueMaxItems == 0 {
		o.QueueMaxItems = 100000
	}
	if o.QueueMaxBytes == 0 {
		o.QueueMaxBytes = 64 << 20
	}
	if o.PublishTimeout == 0 {
		o.PublishTimeout = 2 * time.Second
	}
	if o.CounterFlushInterval == 0 {
		o.CounterFlushInterval = 50 * time.Millisecond
	}
	if o.ReplayTimeout == 0 {
		o.ReplayTimeout = 10 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

func (o *Options) validate() error {
	if !validID(o.NodeID) {
		return fmt.Errorf("statesync: node id %q: want 1-64 letters, digits, '-' or '_'", o.NodeID)
	}
	if o.Conn == nil {
		return errors.New("statesync: no NATS connection: set Options.Conn")
	}
	if o.DataDir == "" {
		return errors.New("statesync: no data directory: set Options.DataDir")
	}
	if o.ExpiryGrace < 0 || o.ExpiryGrace >= o.TombstoneTTL {
		return fmt.Errorf("statesync: expiry grace %v must be positive and below the tombstone TTL %v", o.ExpiryGrace, o.TombstoneTTL)
	}
	if o.StreamMaxAge >= o.TombstoneTTL {
		return fmt.Errorf("statesync: stream max age %v must be below the tombstone TTL %v, or a replay could resurrect deleted keys", o.StreamMaxAge, o.TombstoneTTL)
	}
	return nil
}

// Node is one replica of the shared state. Its methods are safe for
// concurrent use.
type Node struct {
	opts Options
	log  *slog.Logger
	m    *metrics
	js   jetstream.JetStream
	q    *queue

	mu       sync.RWMutex // guards the state below; reads (cache, plugins) share it
	regs     *crdt.Map
	ctrs     crdt.Counters
	lastSeq  uint64
	dirty    bool // state changed since the last snapshot
	dirtyCtr map[string]bool
	history  map[string][]historyEntry
	purges   *purgeIndex
	watchers watchers
	purgeSeq atomic.Uint64     // makes purge ids unique within this node
	idPrefix string            // "<node>.<start time>." : unique per process
	pubSeq   atomic.Uint64     // numbers own deltas after idPrefix
	seen     *recentIDs        // ids of deltas recently applied
	ids      *idTable          // interned node ids of received messages
	regMaps  sync.Pool         // empty map[string]crdt.Register for decodeIDs (receive)
	hashes   map[string]uint64 // per-key hash behind the digest
	sums     []uint64          // digest: per-bucket sum of key hashes
	peerMu   sync.Mutex
	peerDiff map[string]uint32 // per peer: buckets that differed in its last digest (peerMu)

	lastHealthy atomic.Int64  // Unix ns (opts.Now) when the log was last reachable
	logEpoch    uint64        // bumped when lastSeq is reset; a catch-up of an older epoch stops moving it (mu)
	catchUpCh   chan struct{} // asks logLoop for a catch-up (gap seen, rebuild)
	senders     *senderSeqs   // last delta number seen per sender process: finds gaps
	streamWarn  atomic.Value  // string: the last stream config difference warned about

	subs      []*nats.Subscription
	flushCh   chan struct{}
	counterCh chan struct{} // a counter changed: flush within CounterFlushInterval
	caught    chan struct{} // closed once the log replay has caught up
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closed    sync.Once
	isClosed  atomic.Bool
}

type snapshot struct {
	SavedMs  int64         `json:"saved_ms"`
	LastSeq  uint64        `json:"last_seq"`
	Regs     *crdt.Map     `json:"regs"`
	Counters crdt.Counters `json:"counters"`
}

// Open starts a node: it loads the local snapshot, catches up with the
// durable log from the last applied sequence, subscribes to the fast path and
// the anti-entropy subjects, and waits (up to ReplayTimeout or ctx) until the
// log replay has caught up. When NATS is unreachable Open still succeeds: the
// node serves its local state in degraded mode and catches up later.
func Open(ctx context.Context, opts Options) (*Node, error) {
	opts.setDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("statesync: create data directory %s: %w", opts.DataDir, err)
	}
	q, err := openQueue(filepath.Join(opts.DataDir, "queue"), opts.QueueMaxItems, opts.QueueMaxBytes)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(opts.Conn)
	if err != nil {
		return nil, fmt.Errorf("statesync: JetStream context: %w", err)
	}
	n := &Node{
		opts: opts, log: opts.Logger.With("component", "statesync", "node", opts.NodeID),
		m: newMetrics(opts.Registerer), js: js, q: q,
		regs: crdt.NewMap(), ctrs: crdt.Counters{}, dirtyCtr: map[string]bool{},
		history: map[string][]historyEntry{}, purges: newPurgeIndex(),
		hashes: map[string]uint64{}, sums: make([]uint64, DigestBuckets), peerDiff: map[string]uint32{},
		idPrefix: opts.NodeID + "." + strconv.FormatInt(time.Now().UnixNano(), 36) + ".",
		seen:     newRecentIDs(65536), senders: newSenderSeqs(), ids: newIDTable(),
		flushCh: make(chan struct{}, 1), counterCh: make(chan struct{}, 1), caught: make(chan struct{}), catchUpCh: make(chan struct{}, 1),
	}
	n.lastHealthy.Store(opts.Now().UnixNano())
	if err := n.loadSnapshot(); err != nil {
		return nil, err
	}
	n.m.queueDepth.Set(float64(q.len()))

	nc := opts.Conn
	for subj, fn := range map[string]nats.MsgHandler{
		deltaSubject("*"):             func(m *nats.Msg) { n.receive(m.Subject, m.Data, "core", msgID(m.Header)) },
		digestSubject("*"):            func(m *nats.Msg) { n.receive(m.Subject, m.Data, "digest", "") },
		repairSubject(n.opts.NodeID):  func(m *nats.Msg) { n.receive(m.Subject, m.Data, "repair", "") },
		inspectSubject(n.opts.NodeID): n.serveInspect,
	} {
		sub, err := nc.Subscribe(subj, fn)
		if err != nil {
			n.unsubscribe()
			return nil, fmt.Errorf("statesync: subscribe %s: %w", subj, err)
		}
		n.subs = append(n.subs, sub)
	}

	runCtx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	n.wg.Add(3)
	go n.logLoop(runCtx)
	go n.flushLoop(runCtx)
	go n.antiEntropyLoop(runCtx)

	replayTimeout := opts.ReplayTimeout
	if !nc.IsConnected() {
		replayTimeout = 0 // nothing to wait for: start degraded at once
	}
	wait, stop := context.WithTimeout(ctx, replayTimeout)
	defer stop()
	select {
	case <-n.caught:
		n.log.Info("state sync started", "last_seq", n.LastSeq(), "keys", n.keyCount())
	case <-wait.Done():
		if ctx.Err() != nil {
			n.Close()
			return nil, fmt.Errorf("statesync: open: %w", ctx.Err())
		}
		n.log.Warn("state sync started before catching up with the log (NATS unreachable?); serving local state and catching up in the background", "last_seq", n.LastSeq())
	}
	return n, nil
}

// Close stops the node's goroutines, flushes pending counter increments (to
// the queue if NATS is down) and saves a snapshot. The NATS connection stays
// open; the caller owns it.
func (n *Node) Close() error {
	var err error
	n.closed.Do(func() {
		n.unsubscribe()
		n.isClosed.Store(true)
		n.cancel()
		n.wg.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), n.opts.PublishTimeout)
		n.flushCounters(ctx, true)
		cancel()
		err = n.saveSnapshot()
	})
	return err
}

func (n *Node) unsubscribe() {
	for _, s := range n.subs {
		_ = s.Unsubscribe()
	}
	n.subs = nil
}

func (n *Node) snapshotPath() string { return filepath.Join(n.opts.DataDir, "state.json") }

func (n *Node) loadSnapshot() error {
	data, err := os.ReadFile(n.snapshotPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("statesync: read snapshot: %w", err)
	}
	var s snapshot
	if err := json.Unmarshal(data, &s); err != nil || s.Regs == nil || s.Regs.Regs == nil {
		// A damaged snapshot costs a full replay, not the node.
		n.log.Error("state snapshot is unreadable; rebuilding from the log", "path", n.snapshotPath(), "err", err)
		return nil
	}
	age := n.opts.Now().Sub(time.UnixMilli(s.SavedMs))
	if age > n.opts.TombstoneTTL {
		// Deletions older than the TTL may have been compacted elsewhere;
		// merging this state could bring them back.
		n.log.Warn("state snapshot is older than the tombstone TTL; discarding it and rebuilding from the log", "age", age)
		return nil
	}
	n.regs, n.lastSeq = s.Regs, s.LastSeq
	n.lastHealthy.Store(s.SavedMs * int64(time.Millisecond))
	if s.Counters != nil {
		n.ctrs = s.Counters
	}
	for _, k := range n.regs.Keys() {
		n.indexKey(k)
		n.rehash(k)
	}
	for k := range n.ctrs {
		n.rehash(k)
	}
	return nil
}

func (n *Node) saveSnapshot() error {
	n.mu.Lock()
	if !n.dirty {
		n.mu.Unlock()
		return nil
	}
	data, err := json.Marshal(snapshot{SavedMs: n.opts.Now().UnixMilli(), LastSeq: n.lastSeq, Regs: n.regs, Counters: n.ctrs})
	n.dirty = false
	n.mu.Unlock()
	if err != nil {
		return fmt.Errorf("statesync: encode snapshot: %w", err)
	}
	if err := writeFileAtomic(n.snapshotPath(), data); err != nil {
		n.mu.Lock()
		n.dirty = true
		n.mu.Unlock()
		return fmt.Errorf("statesync: save snapshot to %s: %w (check disk space and permissions)", n.snapshotPath(), err)
	}
	return nil
}

// receive decodes and applies one message from any path.
func (n *Node) receive(subject string, data []byte, via string, id string) {
	if id != "" {
		if strings.HasPrefix(id, n.idPrefix) {
			return // own delta: applied when written
		}
		if n.seen.has(id) {
			// The other copy (fast path or log, whichever came first) was
			// applied already: skip the decode.
			n.m.seenCounter(via).Inc()
			return
		}
	}
	// The decoded registers are merged into the state by value, so the map
	// holding them can serve the next message; a delta's small map was
	// about a tenth of what a receiving node allocated.
	regs, _ := n.regMaps.Get().(map[string]crdt.Register)
	if regs == nil {
		regs = make(map[string]crdt.Register, 1)
	}
	defer func() {
		clear(regs)
		n.regMaps.Put(regs)
	}()
	e, err := decodeIDs(data, n.ids, regs)
	if err == nil {
		err = checkSubject(subject, e)
	}
	if err != nil {
		reason := rejectReason(err)
		n.m.dropped.WithLabelValues(reason).Inc()
		n.log.Warn("dropped sync message", "via", via, "reason", reason, "err", err, "bytes", len(data))
		return
	}
	n.m.receivedCounter(e.Kind, via).Inc()
	switch e.Kind {
	case kindDigest:
		if e.From != n.opts.NodeID {
			n.answerDigest(e)
		}
		return
	case kindDelta:
		if via == "core" && e.SentMs > 0 {
			n.m.propagation.Observe(float64(n.opts.Now().UnixMilli()-e.SentMs) / 1000)
		}
	}
	n.apply(e, via)
	if id != "" && e.Kind == kindDelta {
		n.seen.add(id)
		if n.senders.note(id) && via == "core" {
			n.m.gaps.Inc()
			n.requestCatchUp()
		}
	}
}

// msgID is the delta id a message carries in its Nats-Msg-Id header.
func msgID(h nats.Header) string {
	if h == nil {
		return ""
	}
	return h.Get(jetstream.MsgIDHeader)
}

// recentIDs remembers the ids of the last deltas applied, so that a copy a
// catch-up replays from the log costs no decode. It keeps 64-bit hashes,
// not strings: pointer-free memory the garbage collector does not scan (50
// nodes in one process kept 100 MB of id strings it had to), and a false
// match (odds about 2^-64 per pair) only means a replayed copy is skipped,
// which anti-entropy would repair.
type recentIDs struct {
	mu   sync.Mutex
	seed maphash.Seed
	ring []uint64 // grows to size, then overwrites the oldest
	size int
	pos  int
	set  map[uint64]struct{}
}

func newRecentIDs(size int) *recentIDs {
	return &recentIDs{seed: maphash.MakeSeed(), size: size, set: map[uint64]struct{}{}}
}

func (r *recentIDs) add(id string) {
	h := maphash.String(r.seed, id)
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.set[h]; ok {
		return
	}
	if len(r.ring) < r.size {
		r.ring = append(r.ring, h)
	} else {
		delete(r.set, r.ring[r.pos])
		r.ring[r.pos] = h
		r.pos = (r.pos + 1) % r.size
	}
	r.set[h] = struct{}{}
}

func (r *recentIDs) has(id string) bool {
	h := maphash.String(r.seed, id)
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.set[h]
	return ok
}

// apply merges an envelope's data into the state and notifies watchers.
func (n *Node) apply(e envelope, via string) {
	now := n.opts.Now()
	n.mu.Lock()
	// Compaction follows this node's own clock only: a peer whose clock runs
	// ahead must not make us forget deletions early, so the sender's horizon
	// is not used. Catching up here (rarely: when the horizon lags by more
	// than a minute) makes Merge refuse versions that expired meanwhile.
	compacted := n.compactLocked(now, time.Minute)
	changed := n.regs.Merge(&crdt.Map{Horizon: n.regs.Horizon, Expired: n.regs.Expired, Regs: e.Regs})
	// Counters expire by this node's clock at once (not with the lagging
	// map horizon): a late copy of an expired counter is refused here.
	changedCtr := n.ctrs.MergeAt(e.Counters, n.expiryHorizon(now))
	reindex := len(compacted) > 0
	var purges []PurgeRecord // decoded once, for the index and the events
	for _, k := range changed {
		n.record(k, e.From, via, now)
		n.rehash(k)
		if _, live := n.regs.Regs[k]; !live {
			delete(n.history, k)
			reindex = true
		} else if p, ok := n.indexKey(k); ok {
			purges = append(purges, p)
		}
	}
	if reindex {
		n.reindexPurges()
	}
	for _, k := range changedCtr {
		n.rehash(k)
		if _, live := n.ctrs[k]; !live {
			delete(n.dirtyCtr, k)
		}
	}
	if len(changed)+len(changedCtr) > 0 {
		n.dirty = true
	}
	events := n.eventsFor(changed, purges)
	n.mu.Unlock()
	n.m.applied.Add(float64(len(changed) + len(changedCtr)))
	n.watchers.notify(events)
}

// publish sends an own delta: JetStream publish when connected (fast path and
// log at once), else the on-disk queue.
func (n *Node) publish(ctx context.Context, e envelope) error {
	return n.publishOwn(ctx, e, false)
}

// ErrClosed is returned by writes on a closed Node.
var ErrClosed = errors.New("statesync: node is closed")

func (n *Node) publishOwn(ctx context.Context, e envelope, closing bool) error {
	if n.isClosed.Load() && !closing {
		return ErrClosed
	}
	e.Kind, e.From, e.SentMs = kindDelta, n.opts.NodeID, n.opts.Now().UnixMilli()
	e.ID = n.idPrefix + strconv.FormatUint(n.pubSeq.Add(1), 36)
	data, err := encode(e)
	if err != nil {
		return err
	}
	if n.q.len() == 0 && n.opts.Conn.IsConnected() {
		err := n.publishLog(ctx, e.ID, data)
		if err == nil {
			n.m.published.WithLabelValues(kindDelta).Inc()
			return nil
		}
		n.m.publishErrors.Inc()
		n.log.Warn("publishing delta failed; queueing it on disk", "err", err)
	}
	if err := n.q.push(data); err != nil {
		n.log.Error("degraded-mode queue refused a delta; it stays applied locally and spreads by anti-entropy", "err", err)
		return err
	}
	n.m.queued.Inc()
	n.m.queueDepth.Set(float64(n.q.len()))
	n.m.degraded.Set(1)
	select {
	case n.flushCh <- struct{}{}:
	default:
	}
	return nil
}

// write does the bookkeeping of an own write already merged into n.regs
// (history, indexes, digest, watchers), then publishes its delta.
func (n *Node) write(ctx context.Context, d *crdt.Map, key string) error {
	n.wrote(key)
	return n.publish(ctx, envelope{Regs: d.Regs})
}

func (n *Node) wrote(key string) {
	n.mu.Lock()
	n.record(key, n.opts.NodeID, "local", n.opts.Now())
	var purges []PurgeRecord
	if p, ok := n.indexKey(key); ok {
		purges = append(purges, p)
	}
	n.rehash(key)
	n.dirty = true
	events := n.eventsFor([]string{key}, purges)
	n.mu.Unlock()
	n.watchers.notify(events)
}

// flushLoop drains the degraded-mode queue when NATS is back and ships
// coalesced counter increments.
func (n *Node) flushLoop(ctx context.Context) {
	defer n.wg.Done()
	// Timers are armed only when there is something to do: an idle node
	// does not wake up (50 nodes in one benchmark process woke 1200 times a
	// second with fixed tickers).
	var counters, retry <-chan time.Time
	for {
		if retry == nil && n.q.len() > 0 {
			retry = time.After(250 * time.Millisecond)
		}
		select {
		case <-ctx.Done():
			return
		case <-n.counterCh:
			if counters == nil {
				counters = time.After(n.opts.CounterFlushInterval)
			}
		case <-counters:
			counters = nil
			n.flushCounters(ctx, false)
		case <-retry:
			retry = nil
			n.flushQueue(ctx)
		case <-n.flushCh:
			n.flushQueue(ctx)
		}
	}
}

func (n *Node) flushQueue(ctx context.Context) {
	for n.opts.Conn.IsConnected() {
		seq, data, ok, err := n.q.peek()
		if err != nil {
			n.log.Error("reading the degraded-mode queue failed", "err", err)
			return
		}
		if !ok {
			n.m.degraded.Set(0)
			return
		}
		id, data, err := queuedDelta(data)
		if err != nil {
			// Not something any node would apply: publishing it would
			// only make every receiver count a drop.
			n.log.Error("dropping an unreadable delta from the degraded-mode queue", "err", err)
			n.m.dropped.WithLabelValues(rejectReason(err)).Inc()
			if err := n.q.pop(seq); err != nil {
				n.log.Error("removing an unreadable queued delta failed", "err", err)
				return
			}
			continue
		}
		if err := n.publishLog(ctx, id, data); err != nil {
			n.m.publishErrors.Inc()
			n.log.Debug("flushing queued delta failed; will retry", "err", err)
			return
		}
		if err := n.q.pop(seq); err != nil {
			n.log.Error("removing a flushed delta failed; it will be sent again (harmless)", "err", err)
			return
		}
		n.m.published.WithLabelValues(kindDelta).Inc()
		n.m.queueDepth.Set(float64(n.q.len()))
		if n.q.len() == 0 {
			n.log.Info("degraded-mode queue flushed")
		}
	}
}

// queuedDelta returns a queued delta's id and the bytes to publish. A delta
// queued by an older version (wire version 1, JSON) is re-encoded in the
// current format, so writes made offline survive an upgrade.
func queuedDelta(data []byte) (string, []byte, error) {
	if len(data) > 0 && data[0] == '{' {
		e, err := decodeV1(data)
		if err != nil {
			return "", nil, err
		}
		if data, err = encode(e); err != nil {
			return "", nil, err
		}
		return e.ID, data, nil
	}
	e, err := decode(data)
	return e.ID, data, err
}

// publishLog publishes an own delta to the log subject and waits for the
// stream's ack. The id goes in Nats-Msg-Id, so a delta sent again after a
// lost ack is stored once (JetStream's duplicate window).
func (n *Node) publishLog(ctx context.Context, id string, data []byte) error {
	pctx, cancel := context.WithTimeout(ctx, n.opts.PublishTimeout)
	defer cancel()
	m := &nats.Msg{Subject: deltaSubject(n.opts.NodeID), Data: data, Header: nats.Header{}}
	if id != "" {
		m.Header.Set(jetstream.MsgIDHeader, id)
	}
	_, err := n.js.PublishMsg(pctx, m, jetstream.WithExpectStream(n.opts.Stream))
	return err
}

func (n *Node) flushCounters(ctx context.Context, closing bool) {
	n.mu.Lock()
	if len(n.dirtyCtr) == 0 {
		n.mu.Unlock()
		return
	}
	// Counters with a TTL go in a message of their own: a node from before
	// expiry support cannot read them and drops that message only.
	plain, expiring := crdt.Counters{}, crdt.Counters{}
	for k := range n.dirtyCtr {
		// The delta of a counter is this node's own pair: idempotent, so
		// coalescing many increments into one message is exact.
		p, ok := n.ctrs[k][n.opts.NodeID]
		switch {
		case !ok: // expired and dropped meanwhile: nothing left to say
		case p.Expiring():
			expiring[k] = crdt.PNCounter{n.opts.NodeID: p}
		default:
			plain[k] = crdt.PNCounter{n.opts.NodeID: p}
		}
	}
	n.dirtyCtr = map[string]bool{}
	n.mu.Unlock()
	for _, d := range []crdt.Counters{plain, expiring} {
		if len(d) == 0 {
			continue
		}
		if err := n.publishOwn(ctx, envelope{Counters: d}, closing); err != nil {
			n.log.Warn("publishing counter increments failed", "err", err)
		}
	}
}

// LastSeq is the durable-log sequence up to which this node has applied
// every delta (moved forward by each catch-up with the log; deltas from the
// fast path since then are applied but not counted here).
func (n *Node) LastSeq() uint64 {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.lastSeq
}

func (n *Node) keyCount() int {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return len(n.regs.Regs) + len(n.ctrs)
}

// Status is a summary for health checks and the CLI.
type Status struct {
	NodeID    string `json:"node"`
	Connected bool   `json:"connected"`
	// Degraded is true while own deltas wait in the on-disk queue.
	Degraded bool   `json:"degraded"`
	Queued   int    `json:"queued"`
	LastSeq  uint64 `json:"last_seq"`
	Keys     int    `json:"keys"`
}

// Status reports the node's replication state.
func (n *Node) Status() Status {
	q := n.q.len()
	return Status{NodeID: n.opts.NodeID, Connected: n.opts.Conn.IsConnected(), Degraded: q > 0 || !n.opts.Conn.IsConnected(),
		Queued: q, LastSeq: n.LastSeq(), Keys: n.keyCount()}
}
