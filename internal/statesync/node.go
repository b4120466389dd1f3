// Package statesync replicates Meridian's shared state (purges, plugin
// deployments, plugin KV and counters, config version announcements) between
// PoPs and DNS servers over NATS, on top of the CRDTs in internal/crdt.
//
// Every write is a CRDT delta. It goes out once, as a JetStream publish on
// meridian.sync.delta.<node>: core subscribers on that subject get it at once
// (the fast path) and the stream stores it (the durable central log). Each
// node follows the stream with an ordered consumer from the last sequence it
// applied, so a node that was down or cut off replays what it missed. Every
// AntiEntropyInterval each node publishes a digest of its state; a node that
// sees a different digest answers with the differing buckets, which catches
// anything core NATS dropped. While NATS is unreachable a node keeps serving
// from its local state and queues its own deltas on disk (bounded), flushing
// them when NATS returns. PROTOCOL.md documents subjects and messages.
//
// The package owns the replication and the typed records; it must not act on
// them (dropping cached objects, loading plugins): callers subscribe and act.
package statesync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	// AntiEntropyInterval is how often a digest is published. Default 5s.
	AntiEntropyInterval time.Duration
	// TombstoneTTL is how long deletions are remembered before compaction,
	// and the longest a node may be away before its snapshot is discarded.
	// Default 7 days.
	TombstoneTTL time.Duration
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
	history  map[string][]HistoryEntry
	purges   *purgeIndex
	watchers watchers
	purgeSeq atomic.Uint64     // makes purge ids unique within this node
	idPrefix string            // "<node>.<start time>." : unique per process
	pubSeq   atomic.Uint64     // numbers own deltas after idPrefix
	seen     *recentIDs        // ids of deltas recently applied
	hashes   map[string]uint64 // per-key hash behind the digest
	sums     []uint64          // digest: per-bucket sum of key hashes
	peerMu   sync.Mutex
	peerDiff map[string]uint32 // per peer: buckets that differed in its last digest (peerMu)

	logUp       atomic.Bool   // the log consumer is running
	lastHealthy atomic.Int64  // Unix ns when the log was last reachable
	resetLog    chan struct{} // restarts the log consumer (after a rebuild)

	subs     []*nats.Subscription
	flushCh  chan struct{}
	caught   chan struct{} // closed once the log replay has caught up
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	closed   sync.Once
	isClosed atomic.Bool
}

type snapshot struct {
	SavedMs  int64         `json:"saved_ms"`
	LastSeq  uint64        `json:"last_seq"`
	Regs     *crdt.Map     `json:"regs"`
	Counters crdt.Counters `json:"counters"`
}

// Open starts a node: it loads the local snapshot, starts following the
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
		history: map[string][]HistoryEntry{}, purges: newPurgeIndex(),
		hashes: map[string]uint64{}, sums: make([]uint64, DigestBuckets), peerDiff: map[string]uint32{},
		idPrefix: opts.NodeID + "." + strconv.FormatInt(time.Now().UnixNano(), 36) + ".",
		seen:     newRecentIDs(8192),
		flushCh:  make(chan struct{}, 1), caught: make(chan struct{}), resetLog: make(chan struct{}, 1),
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
	go n.followLog(runCtx)
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
			n.m.received.WithLabelValues(kindDelta, via+"-seen").Inc()
			return
		}
	}
	e, err := decode(data)
	if err == nil {
		err = checkSubject(subject, e)
	}
	if err != nil {
		reason := rejectReason(err)
		n.m.dropped.WithLabelValues(reason).Inc()
		n.log.Warn("dropped sync message", "via", via, "reason", reason, "err", err, "bytes", len(data))
		return
	}
	n.m.received.WithLabelValues(e.Kind, via).Inc()
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
	}
}

// msgID is the delta id a message carries in its Nats-Msg-Id header.
func msgID(h nats.Header) string {
	if h == nil {
		return ""
	}
	return h.Get(jetstream.MsgIDHeader)
}

// recentIDs remembers the ids of the last deltas applied, so that the second
// copy of each (every delta arrives by the fast path and by the log) costs no
// decode.
type recentIDs struct {
	mu   sync.Mutex
	ring []string
	pos  int
	set  map[string]struct{}
}

func newRecentIDs(size int) *recentIDs {
	return &recentIDs{ring: make([]string, size), set: make(map[string]struct{}, size)}
}

func (r *recentIDs) add(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.set[id]; ok {
		return
	}
	delete(r.set, r.ring[r.pos])
	r.ring[r.pos] = id
	r.set[id] = struct{}{}
	r.pos = (r.pos + 1) % len(r.ring)
}

func (r *recentIDs) has(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.set[id]
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
	changed := n.regs.Merge(&crdt.Map{Horizon: n.regs.Horizon, Regs: e.Regs})
	changedCtr := n.ctrs.Merge(e.Counters)
	reindex := len(compacted) > 0
	for _, k := range changed {
		n.record(k, e.From, via, now)
		n.rehash(k)
		if _, live := n.regs.Regs[k]; !live {
			delete(n.history, k)
			reindex = true
		} else {
			n.indexKey(k)
		}
	}
	if reindex {
		n.reindexPurges()
	}
	for _, k := range changedCtr {
		n.rehash(k)
	}
	if len(changed)+len(changedCtr) > 0 {
		n.dirty = true
	}
	events := n.eventsFor(changed)
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
	n.indexKey(key)
	n.rehash(key)
	n.dirty = true
	events := n.eventsFor([]string{key})
	n.mu.Unlock()
	n.watchers.notify(events)
}

// flushLoop drains the degraded-mode queue when NATS is back and ships
// coalesced counter increments.
func (n *Node) flushLoop(ctx context.Context) {
	defer n.wg.Done()
	tick := time.NewTicker(n.opts.CounterFlushInterval)
	defer tick.Stop()
	retry := time.NewTicker(250 * time.Millisecond)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			n.flushCounters(ctx, false)
		case <-retry.C:
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
		var head struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(data, &head)
		if err := n.publishLog(ctx, head.ID, data); err != nil {
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
	d := crdt.Counters{}
	for k := range n.dirtyCtr {
		// The delta of a counter is this node's own pair: idempotent, so
		// coalescing many increments into one message is exact.
		d[k] = crdt.PNCounter{n.opts.NodeID: n.ctrs[k][n.opts.NodeID]}
	}
	n.dirtyCtr = map[string]bool{}
	n.mu.Unlock()
	if err := n.publishOwn(ctx, envelope{Counters: d}, closing); err != nil {
		n.log.Warn("publishing counter increments failed", "err", err)
	}
}

// followLog keeps an ordered consumer on the durable log, starting after the
// last applied sequence; it recreates it whenever it fails (NATS restart,
// stream recreated).
func (n *Node) followLog(ctx context.Context) {
	defer n.wg.Done()
	var caughtOnce sync.Once
	lastErr := ""
	for ctx.Err() == nil {
		err := n.followOnce(ctx, func() { caughtOnce.Do(func() { close(n.caught) }) })
		if ctx.Err() != nil {
			return
		}
		if msg := fmt.Sprint(err); msg != lastErr {
			// Warn once per distinct failure (a stream config conflict
			// needs an operator); repeats while NATS is down go to debug.
			n.log.Warn("following the durable log failed; retrying", "err", err)
			lastErr = msg
		} else {
			n.log.Debug("following the durable log failed; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (n *Node) followOnce(ctx context.Context, caught func()) error {
	select {
	case <-n.resetLog: // this run starts from the reset sequence anyway
	default:
	}
	sctx, cancel := context.WithTimeout(ctx, n.opts.PublishTimeout)
	stream, err := n.js.CreateOrUpdateStream(sctx, jetstream.StreamConfig{
		Name:        n.opts.Stream,
		Description: "Meridian state sync: CRDT deltas (the durable central log)",
		Subjects:    []string{deltaSubject(">")},
		Storage:     jetstream.FileStorage,
		Replicas:    n.opts.StreamReplicas,
		MaxAge:      n.opts.StreamMaxAge,
		MaxMsgSize:  MaxMessageSize,
	})
	if err != nil {
		cancel()
		return fmt.Errorf("ensure stream %s: %w", n.opts.Stream, err)
	}
	info, err := stream.Info(sctx)
	cancel()
	if err != nil {
		return fmt.Errorf("stream info: %w", err)
	}
	target := info.State.LastSeq
	start := n.LastSeq() + 1
	if info.State.FirstSeq > start {
		// The log was trimmed (MaxAge) past what we have: anti-entropy
		// fills the gap from the other nodes.
		n.log.Warn("the log no longer holds every delta since our last sequence; relying on anti-entropy", "last_seq", start-1, "first_seq", info.State.FirstSeq)
		start = info.State.FirstSeq
	}
	if start > target+1 {
		// The stream is younger than our snapshot (recreated): start over.
		n.log.Warn("the log is behind our last sequence (stream recreated?); following it from its start", "last_seq", start-1, "stream_last_seq", target)
		start = 1
		n.mu.Lock()
		n.lastSeq = 0
		n.mu.Unlock()
	}
	if n.LastSeq() >= target {
		caught()
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{deltaSubject(">")},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    start,
	})
	if err != nil {
		return fmt.Errorf("create log consumer: %w", err)
	}
	failed := make(chan error, 1)
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		md, err := msg.Metadata()
		if err != nil {
			return
		}
		n.receive(msg.Subject(), msg.Data(), "log", msgID(msg.Headers()))
		n.mu.Lock()
		if md.Sequence.Stream > n.lastSeq {
			n.lastSeq = md.Sequence.Stream
			n.dirty = true
		}
		n.mu.Unlock()
		n.m.logSeq.Set(float64(md.Sequence.Stream))
		if md.Sequence.Stream >= target {
			caught()
		}
	}, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
			select {
			case failed <- err:
			default:
			}
		}
	}))
	if err != nil {
		return fmt.Errorf("consume log: %w", err)
	}
	defer cc.Stop()
	n.logUp.Store(true)
	defer n.logUp.Store(false)
	select {
	case <-ctx.Done():
		return nil
	case err := <-failed:
		return err
	case <-cc.Closed():
		return errors.New("log consumer closed")
	case <-n.resetLog:
		return errors.New("replaying the log from its start after a rebuild")
	}
}

// checkIsolation applies the rule that keeps compaction from resurrecting
// deleted plugin KV keys: a node that could not read the log for longer than
// TombstoneTTL may hold values whose deletions were compacted everywhere
// else, so it drops its plugin KV and replays the log from the start (the
// values that still exist come back from the log and by anti-entropy). Only
// kv/ keys can be deleted; purges expire by themselves, and deployments and
// config announcements are only ever overwritten, so they are kept.
func (n *Node) checkIsolation() {
	now := n.opts.Now()
	if n.logUp.Load() && n.opts.Conn.IsConnected() {
		n.lastHealthy.Store(now.UnixNano())
		return
	}
	away := now.Sub(time.Unix(0, n.lastHealthy.Load()))
	if away <= n.opts.TombstoneTTL {
		return
	}
	n.lastHealthy.Store(now.UnixNano())
	n.mu.Lock()
	dropped := 0
	for k := range n.regs.Regs {
		if strings.HasPrefix(k, prefixKV) {
			delete(n.regs.Regs, k)
			delete(n.history, k)
			n.rehash(k)
			dropped++
		}
	}
	n.lastSeq = 0
	n.dirty = true
	n.mu.Unlock()
	select {
	case n.resetLog <- struct{}{}:
	default:
	}
	n.log.Error("cut off from the durable log for longer than the tombstone TTL: dropped plugin KV (its deletions may be compacted elsewhere) and replaying the log from its start",
		"away", away, "dropped_keys", dropped)
}

// LastSeq is the last durable-log sequence applied on this node.
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
