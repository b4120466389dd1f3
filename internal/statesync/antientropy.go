package statesync

import (
	"context"
	"encoding/binary"
	"hash/fnv"
	"sort"
	"strconv"
	"time"

	"github.com/meridian-edge/meridian/internal/crdt"
)

func bucketOf(key string) int {
	h := fnv.New32a()
	h.Write([]byte(key))
	return int(h.Sum32() % DigestBuckets)
}

// hashRegister hashes a key and its versions canonically.
func hashRegister(key string, r crdt.Register) uint64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	var buf [8]byte
	for _, v := range r.Versions { // already in deterministic winner-first order
		h.Write([]byte{0})
		h.Write([]byte(v.Node))
		h.Write([]byte(v.Clock.String()))
		binary.LittleEndian.PutUint64(buf[:], uint64(v.Wall))
		h.Write(buf[:])
		binary.LittleEndian.PutUint64(buf[:], uint64(v.Expires))
		h.Write(buf[:])
		if v.Deleted {
			h.Write([]byte{1})
		}
		h.Write(v.Value)
	}
	return h.Sum64()
}

func hashCounter(key string, c crdt.PNCounter) uint64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	nodes := make([]string, 0, len(c))
	for n := range c {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	for _, n := range nodes {
		p := c[n]
		h.Write([]byte(n + ":" + strconv.FormatUint(p.P, 10) + ":" + strconv.FormatUint(p.N, 10) + ";"))
	}
	return h.Sum64()
}

// digestLocked returns the per-bucket digest: the sum of the hashes of the
// keys in each bucket (order-independent). Callers hold n.mu.
func (n *Node) digestLocked() []uint64 {
	d := make([]uint64, DigestBuckets)
	for k, r := range n.regs.Regs {
		d[bucketOf(k)] += hashRegister(k, r)
	}
	for k, c := range n.ctrs {
		d[bucketOf(k)] += hashCounter(k, c)
	}
	return d
}

// Digest returns this node's anti-entropy digest (for the CLI and tests:
// equal digests mean equal state).
func (n *Node) Digest() []uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.digestLocked()
}

// antiEntropyLoop publishes the digest, compacts and saves snapshots.
func (n *Node) antiEntropyLoop(ctx context.Context) {
	defer n.wg.Done()
	t := time.NewTicker(n.opts.AntiEntropyInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n.compact()
			n.publishDigest()
			if err := n.saveSnapshot(); err != nil {
				n.log.Error("saving state snapshot failed", "err", err)
			}
		}
	}
}

// SyncNow publishes this node's digest at once instead of waiting for the
// next anti-entropy tick (used after a reconnect and by tests).
func (n *Node) SyncNow() { n.publishDigest() }

func (n *Node) publishDigest() {
	if !n.opts.Conn.IsConnected() {
		return
	}
	n.mu.Lock()
	e := envelope{Kind: kindDigest, From: n.opts.NodeID, SentMs: n.opts.Now().UnixMilli(), Horizon: n.regs.Horizon, Digest: n.digestLocked()}
	n.mu.Unlock()
	data, err := encode(e)
	if err != nil {
		n.log.Error("encoding digest failed", "err", err)
		return
	}
	if err := n.opts.Conn.Publish(digestSubject(n.opts.NodeID), data); err != nil {
		n.log.Debug("publishing digest failed", "err", err)
		return
	}
	n.m.published.WithLabelValues(kindDigest).Inc()
}

// answerDigest sends the peer every bucket whose digest differs from ours.
// The peer does the same on our digest, so both converge.
func (n *Node) answerDigest(peer envelope) {
	n.mu.Lock()
	mine := n.digestLocked()
	var diff []bool
	any := false
	for i := range mine {
		d := mine[i] != peer.Digest[i]
		diff = append(diff, d)
		any = any || d
	}
	if !any {
		n.mu.Unlock()
		return
	}
	// Split into messages below the size limit; keys are independent, so
	// any split is a valid delta.
	var msgs []envelope
	cur := envelope{Regs: map[string]crdt.Register{}, Counters: crdt.Counters{}}
	size := 0
	flush := func() {
		if len(cur.Regs)+len(cur.Counters) > 0 {
			msgs = append(msgs, cur)
		}
		cur = envelope{Regs: map[string]crdt.Register{}, Counters: crdt.Counters{}}
		size = 0
	}
	for k, r := range n.regs.Regs {
		if !diff[bucketOf(k)] {
			continue
		}
		s := len(k) + 200
		for _, v := range r.Versions {
			s += len(v.Value)*4/3 + 64*len(v.Clock) + 128
		}
		if size+s > MaxMessageSize/2 {
			flush()
		}
		cur.Regs[k] = r
		size += s
	}
	for k, c := range n.ctrs {
		if !diff[bucketOf(k)] {
			continue
		}
		s := len(k) + 80*len(c)
		if size+s > MaxMessageSize/2 {
			flush()
		}
		cur.Counters[k] = c
		size += s
	}
	flush()
	horizon := n.regs.Horizon
	// Encode under the lock: the registers are shared with the live state.
	var out [][]byte
	for _, m := range msgs {
		m.Kind, m.From, m.SentMs, m.Horizon = kindRepair, n.opts.NodeID, n.opts.Now().UnixMilli(), horizon
		data, err := encode(m)
		if err != nil {
			n.log.Error("encoding repair failed", "err", err)
			continue
		}
		out = append(out, data)
	}
	n.mu.Unlock()
	for _, data := range out {
		if err := n.opts.Conn.Publish(repairSubject(peer.From), data); err != nil {
			n.log.Debug("publishing repair failed", "err", err)
			return
		}
		n.m.published.WithLabelValues(kindRepair).Inc()
	}
}

// compact drops tombstones older than TombstoneTTL and expired purges.
func (n *Node) compact() {
	h := n.opts.Now().Add(-n.opts.TombstoneTTL).UnixNano()
	n.mu.Lock()
	dropped := n.regs.Compact(h)
	if len(dropped) > 0 {
		n.dirty = true
		for _, k := range dropped {
			delete(n.history, k)
		}
		n.purges = newPurgeIndex()
		for _, k := range n.regs.Keys() {
			n.indexKey(k)
		}
	}
	n.mu.Unlock()
	if len(dropped) > 0 {
		n.log.Debug("compacted state", "dropped", len(dropped))
	}
}
