package statesync

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// logCheckTicks: every this many anti-entropy intervals a node catches up
// with the log even when it saw no reason to. That moves the saved sequence
// forward (a restart then replays little) and picks up a trailing delta the
// fast path lost, should anti-entropy not have repaired it yet.
const logCheckTicks = 12

// errNotConnected: a catch-up waits for the connection.
var errNotConnected = errors.New("not connected to NATS")

// logLoop keeps this node caught up with the durable log without following
// it live. While a node is connected the fast path brings every delta, so
// reading each one again from the log would double the messages every node
// receives (and their wake-ups); the log is read only when something may
// have been missed: at start, after every reconnect, when a sender's delta
// numbers skip (a lost fast-path message), after a rebuild, and every
// logCheckTicks anti-entropy intervals. A catch-up replays from the sequence
// after the last one applied up to the stream's last sequence when it
// started, and stops.
func (n *Node) logLoop(ctx context.Context) {
	defer n.wg.Done()
	status := n.opts.Conn.StatusChanged(nats.CONNECTED)
	defer n.opts.Conn.RemoveStatusListener(status)
	periodic := time.NewTicker(n.opts.AntiEntropyInterval * logCheckTicks)
	defer periodic.Stop()
	var caughtOnce sync.Once
	pending, audit := true, false
	lastErr := ""
	var retry <-chan time.Time
	for {
		if pending && ctx.Err() == nil {
			err := n.catchUp(ctx, audit)
			switch {
			case err == nil:
				pending, audit, retry, lastErr = false, false, nil, ""
				caughtOnce.Do(func() { close(n.caught) })
			case ctx.Err() != nil:
				return
			default:
				if msg := err.Error(); msg != lastErr && !errors.Is(err, errNotConnected) {
					// Warn once per distinct failure (a stream config
					// conflict needs an operator); repeats go to debug.
					n.log.Warn("catching up with the durable log failed; retrying", "err", err)
					lastErr = msg
				} else {
					n.log.Debug("catching up with the durable log failed; retrying", "err", err)
				}
				retry = time.After(500 * time.Millisecond)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-status:
			pending, audit = true, false
		case <-n.catchUpCh:
			pending, audit = true, false
		case <-periodic.C:
			if !pending {
				pending, audit = true, true
			}
		case <-retry:
		}
	}
}

// requestCatchUp asks logLoop for a catch-up (coalesced).
func (n *Node) requestCatchUp() {
	select {
	case n.catchUpCh <- struct{}{}:
	default:
	}
}

// streamConfig is the stream this package creates when it is missing.
func (n *Node) streamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        n.opts.Stream,
		Description: "Meridian state sync: CRDT deltas (the durable central log)",
		Subjects:    []string{deltaSubject(">")},
		Storage:     jetstream.FileStorage,
		Replicas:    n.opts.StreamReplicas,
		MaxAge:      n.opts.StreamMaxAge,
		MaxMsgSize:  MaxMessageSize,
	}
}

// ensureStream looks the stream up and creates it only when it is absent,
// so that PoP credentials need no permission to edit streams. A stream that
// exists with another configuration is used as it is, with a warning (once
// per distinct difference): ops may have tuned it on purpose, and a rolling
// upgrade must not flap it between two versions' settings.
func (n *Node) ensureStream(ctx context.Context) (jetstream.Stream, *jetstream.StreamInfo, error) {
	want := n.streamConfig()
	s, err := n.js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = n.js.CreateStream(ctx, want)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			s, err = n.js.Stream(ctx, want.Name) // another node created it first
		} else if err == nil {
			n.log.Info("created the durable log stream", "stream", want.Name, "replicas", want.Replicas, "max_age", want.MaxAge)
		}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("look up or create stream %s: %w (PoP credentials need JetStream stream info, and create the first time)", want.Name, err)
	}
	info := s.CachedInfo()
	if diff := streamDiff(want, info.Config); diff != "" {
		if prev, _ := n.streamWarn.Load().(string); prev != diff {
			n.streamWarn.Store(diff)
			n.log.Warn("the durable log stream exists with another configuration than this node would create; using it as it is", "stream", want.Name, "differences", diff)
		}
	}
	return s, info, nil
}

// streamDiff lists the settings in which have differs from want.
func streamDiff(want, have jetstream.StreamConfig) string {
	var d []string
	if !slices.Equal(want.Subjects, have.Subjects) {
		d = append(d, fmt.Sprintf("subjects %v (want %v)", have.Subjects, want.Subjects))
	}
	if want.Storage != have.Storage {
		d = append(d, fmt.Sprintf("storage %v (want %v)", have.Storage, want.Storage))
	}
	if want.Replicas != have.Replicas {
		d = append(d, fmt.Sprintf("replicas %d (want %d)", have.Replicas, want.Replicas))
	}
	if want.MaxAge != have.MaxAge {
		d = append(d, fmt.Sprintf("max age %v (want %v)", have.MaxAge, want.MaxAge))
	}
	if want.MaxMsgSize != have.MaxMsgSize {
		d = append(d, fmt.Sprintf("max message size %d (want %d)", have.MaxMsgSize, want.MaxMsgSize))
	}
	return strings.Join(d, "; ")
}

// probeLog checks that the log is reachable (one stream info request) and
// records when it was.
func (n *Node) probeLog(ctx context.Context) error {
	if !n.opts.Conn.IsConnected() {
		return errNotConnected
	}
	sctx, cancel := context.WithTimeout(ctx, n.opts.PublishTimeout)
	defer cancel()
	if _, _, err := n.ensureStream(sctx); err != nil {
		return err
	}
	n.lastHealthy.Store(n.opts.Now().UnixNano())
	return nil
}

// catchUp replays the log from the sequence after the last applied one up
// to the stream's last sequence at the start, then stops.
//
// An audit (the periodic catch-up) first reads only the messages' headers:
// each delta id this node has applied (from the fast path) moves the
// sequence forward without its payload crossing the network; at the first
// one it has not applied, the catch-up goes on as a full replay from there.
func (n *Node) catchUp(ctx context.Context, audit bool) error {
	if audit {
		missing, err := n.replay(ctx, true)
		if err != nil || !missing {
			return err
		}
		n.m.auditMisses.Inc()
	}
	_, err := n.replay(ctx, false)
	return err
}

// replay is one pass of catchUp; with headersOnly it stops at the first
// delta not applied yet and reports it missing.
func (n *Node) replay(ctx context.Context, headersOnly bool) (missing bool, err error) {
	if !n.opts.Conn.IsConnected() {
		return false, errNotConnected
	}
	sctx, cancel := context.WithTimeout(ctx, n.opts.PublishTimeout)
	stream, info, err := n.ensureStream(sctx)
	cancel()
	if err != nil {
		return false, err
	}
	n.lastHealthy.Store(n.opts.Now().UnixNano())
	target := info.State.LastSeq
	n.mu.Lock()
	epoch := n.logEpoch
	start := n.lastSeq + 1
	if start > target+1 {
		// The stream is younger than our snapshot (recreated): start over.
		n.log.Warn("the log is behind our last sequence (stream recreated?); replaying it from its start", "last_seq", start-1, "stream_last_seq", target)
		n.logEpoch++
		epoch = n.logEpoch
		n.lastSeq, start, n.dirty = 0, 1, true
	}
	n.mu.Unlock()
	if start > target {
		return false, nil // nothing new in the log
	}
	if info.State.FirstSeq > start {
		// The log was trimmed (MaxAge) past what we have: anti-entropy
		// fills the gap from the other nodes.
		n.log.Warn("the log no longer holds every delta since our last sequence; relying on anti-entropy", "last_seq", start-1, "first_seq", info.State.FirstSeq)
		start = info.State.FirstSeq
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{deltaSubject(">")},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    start,
		HeadersOnly:    headersOnly,
	})
	if err != nil {
		return false, fmt.Errorf("create log consumer: %w", err)
	}
	var (
		progress = make(chan struct{}, 1)
		done     = make(chan struct{})
		doneOnce sync.Once
		failed   = make(chan error, 1)
		gap      atomic.Bool
	)
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		md, err := msg.Metadata()
		if err != nil {
			return
		}
		seq := md.Sequence.Stream
		if gap.Load() {
			return // an audit found a delta to fetch; nothing after it counts
		}
		id := msgID(msg.Headers())
		if headersOnly {
			if id == "" || !(strings.HasPrefix(id, n.idPrefix) || n.seen.has(id)) {
				gap.Store(true)
				doneOnce.Do(func() { close(done) })
				return
			}
		} else {
			n.receive(msg.Subject(), msg.Data(), "log", id)
		}
		n.mu.Lock()
		if n.logEpoch == epoch && seq > n.lastSeq {
			n.lastSeq = seq
			n.dirty = true
		}
		n.mu.Unlock()
		n.m.logSeq.Set(float64(seq))
		select {
		case progress <- struct{}{}:
		default:
		}
		if seq >= target {
			doneOnce.Do(func() { close(done) })
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
		return false, fmt.Errorf("consume log: %w", err)
	}
	defer cc.Stop()
	// A catch-up may be long (a node back after days), so there is no
	// overall deadline; but one that stops moving (connection lost, the
	// last messages deleted) is abandoned and retried.
	stall := 5 * n.opts.PublishTimeout
	idle := time.NewTimer(stall)
	defer idle.Stop()
	for {
		select {
		case <-done:
			return gap.Load(), nil
		case <-progress:
			idle.Reset(stall)
		case <-idle.C:
			return false, fmt.Errorf("log replay stalled for %v before sequence %d", stall, target)
		case <-ctx.Done():
			return false, ctx.Err()
		case err := <-failed:
			return false, err
		case <-cc.Closed():
			return false, errors.New("log consumer closed")
		}
	}
}

// checkIsolation applies the rule that keeps compaction from resurrecting
// deleted plugin KV keys: a node that could not read the log for longer than
// TombstoneTTL may hold values whose deletions were compacted everywhere
// else, so it drops its plugin KV and replays the log from the start (the
// values that still exist come back from the log and by anti-entropy). Only
// kv/ keys can be deleted; purges expire by themselves, and deployments and
// config announcements are only ever overwritten, so they are kept.
func (n *Node) checkIsolation(ctx context.Context) {
	if n.probeLog(ctx) == nil {
		return
	}
	now := n.opts.Now()
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
	n.logEpoch++
	n.lastSeq = 0
	n.dirty = true
	n.mu.Unlock()
	n.requestCatchUp()
	n.log.Error("cut off from the durable log for longer than the tombstone TTL: dropped plugin KV (its deletions may be compacted elsewhere) and replaying the log from its start",
		"away", away, "dropped_keys", dropped)
}

// senderSeqs remembers, per sender process (the delta id without its
// number), the highest delta number seen. A sender numbers its deltas
// 1, 2, 3... and publishes them in order (queued ones too), and NATS keeps
// one publisher's order, so a number that skips means the fast path lost a
// delta: time to catch up with the log.
type senderSeqs struct {
	mu   sync.Mutex
	last map[string]uint64
}

// maxSenders bounds the tracker against junk ids; forgetting only costs
// gap detection for one delta per sender.
const maxSenders = 4096

func newSenderSeqs() *senderSeqs { return &senderSeqs{last: map[string]uint64{}} }

// note records delta id and reports whether numbers were skipped before it.
func (s *senderSeqs) note(id string) (gap bool) {
	i := strings.LastIndexByte(id, '.')
	if i <= 0 {
		return false
	}
	num, err := strconv.ParseUint(id[i+1:], 36, 64)
	if err != nil {
		return false
	}
	prefix := id[:i]
	s.mu.Lock()
	defer s.mu.Unlock()
	last, known := s.last[prefix]
	if !known && len(s.last) >= maxSenders {
		clear(s.last)
	}
	if num > last {
		s.last[prefix] = num
	}
	return known && num > last+1
}
