package statesync

import (
	"context"
	"encoding/binary"
	"hash/fnv"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/meridian-edge/meridian/internal/crdt"
)

// maxPeers bounds the per-peer anti-entropy memory.
const maxPeers = 4096

// FNV-1a, inline: hash/fnv allocates on every use, and rehash runs on every
// merge. The results are those of hash/fnv's New32a and New64a.
const (
	fnv32Offset = 2166136261
	fnv32Prime  = 16777619
	fnv64Offset = 14695981039346656037
	fnv64Prime  = 1099511628211
)

type fnv64 uint64

func (h *fnv64) str(s string) {
	for i := 0; i < len(s); i++ {
		*h = (*h ^ fnv64(s[i])) * fnv64Prime
	}
}

func (h *fnv64) bytes(b []byte) {
	for _, c := range b {
		*h = (*h ^ fnv64(c)) * fnv64Prime
	}
}

func (h *fnv64) u64(v uint64) {
	var buf [8]byte
	binary.LittleEndian.PutUint64(buf[:], v)
	h.bytes(buf[:])
}

// clock hashes c as the bytes of c.String() ("a:1,b:3", sorted, zero
// entries left out) without building the string.
func (h *fnv64) clock(c crdt.VClock) {
	var stack [8]string
	nodes := stack[:0]
	for n, v := range c {
		if v > 0 {
			nodes = append(nodes, n)
		}
	}
	slices.Sort(nodes)
	var num [20]byte
	for i, n := range nodes {
		if i > 0 {
			h.str(",")
		}
		h.str(n)
		h.str(":")
		h.bytes(strconv.AppendUint(num[:0], c[n], 10))
	}
}

func bucketOf(key string) int {
	h := uint32(fnv32Offset)
	for i := 0; i < len(key); i++ {
		h = (h ^ uint32(key[i])) * fnv32Prime
	}
	return int(h % DigestBuckets)
}

// hashRegister hashes a key and its versions canonically.
func hashRegister(key string, r crdt.Register) uint64 {
	h := fnv64(fnv64Offset)
	h.str(key)
	for _, v := range r.Versions { // already in deterministic winner-first order
		h.bytes([]byte{0})
		h.str(v.Node)
		h.clock(v.Clock)
		h.u64(uint64(v.Wall))
		h.u64(uint64(v.Expires))
		if v.Deleted {
			h.bytes([]byte{1})
		}
		if v.TTL {
			h.bytes([]byte{2})
		}
		if v.Fresh {
			h.bytes([]byte{4})
		}
		h.bytes(v.Value)
	}
	return uint64(h)
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
		if p.Expiring() {
			// Only then: counters without a TTL hash as they always did,
			// so digests match those of nodes from before expiry support.
			h.Write([]byte(n + ":" + strconv.FormatUint(p.P, 10) + ":" + strconv.FormatUint(p.N, 10) + "@" +
				strconv.FormatInt(p.Birth, 10) + "-" + strconv.FormatInt(p.Exp, 10) + ";"))
			continue
		}
		h.Write([]byte(n + ":" + strconv.FormatUint(p.P, 10) + ":" + strconv.FormatUint(p.N, 10) + ";"))
	}
	return h.Sum64()
}

// rehash updates the digest after key changed. The digest is the per-bucket
// sum of key hashes (order-independent), kept up to date on every change so
// that answering a digest costs O(buckets), not O(state). Callers hold n.mu.
func (n *Node) rehash(k string) {
	var h uint64
	if r, ok := n.regs.Regs[k]; ok {
		h = hashRegister(k, r)
	} else if c, ok := n.ctrs[k]; ok {
		h = hashCounter(k, c)
	}
	b := bucketOf(k)
	n.sums[b] += h - n.hashes[k]
	if h == 0 {
		delete(n.hashes, k)
	} else {
		n.hashes[k] = h
	}
}

// digestLocked returns a copy of the digest. Callers hold n.mu.
func (n *Node) digestLocked() []uint64 { return append([]uint64(nil), n.sums...) }

// horizon is the compaction horizon by the local clock.
func (n *Node) horizon(now time.Time) int64 { return now.Add(-n.opts.TombstoneTTL).UnixNano() }

// expiryHorizon is the local clock less the skew tolerated for expiring
// keys: what expired before it is dropped and refused.
func (n *Node) expiryHorizon(now time.Time) int64 { return now.Add(-n.opts.ExpiryGrace).UnixNano() }

// Digest returns this node's anti-entropy digest (for the CLI and tests:
// equal digests mean equal state).
func (n *Node) Digest() []uint64 {
	n.mu.RLock()
	defer n.mu.RUnlock()
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
			n.checkIsolation(ctx)
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
//
// A bucket is answered only when it also differed in the peer's previous
// digest: a difference that is just a delta still in flight is gone by the
// next digest, and answering it would make every node send the same bucket
// to the peer at once. A real gap is repaired one interval later.
func (n *Node) answerDigest(peer envelope) {
	// A read lock: building repairs must not stall the cache's purge checks.
	n.mu.RLock()
	defer n.mu.RUnlock()
	var mask uint32
	for i, h := range n.sums {
		if h != peer.Digest[i] {
			mask |= 1 << i
		}
	}
	n.peerMu.Lock()
	if len(n.peerDiff) >= maxPeers {
		n.peerDiff = map[string]uint32{} // bound memory against junk node ids
	}
	prev := n.peerDiff[peer.From]
	n.peerDiff[peer.From] = mask
	n.peerMu.Unlock()
	mask &= prev
	if mask == 0 {
		return
	}
	diff := make([]bool, DigestBuckets)
	for i := range diff {
		diff[i] = mask&(1<<i) != 0
	}
	// Split into messages below the size limit; keys are independent, so
	// any split is a valid delta.
	//
	// Keys that use expiry features (fresh versions, counters with a TTL)
	// go in messages of their own: a node from before expiry support drops
	// those messages and still gets the rest.
	var msgs []envelope
	var cur [2]envelope // [0] plain, [1] with expiry features
	var size [2]int
	reset := func(i int) {
		cur[i] = envelope{Regs: map[string]crdt.Register{}, Counters: crdt.Counters{}}
		size[i] = 0
	}
	flush := func(i int) {
		if len(cur[i].Regs)+len(cur[i].Counters) > 0 {
			msgs = append(msgs, cur[i])
		}
		reset(i)
	}
	reset(0)
	reset(1)
	for k, r := range n.regs.Regs {
		if !diff[bucketOf(k)] {
			continue
		}
		s, i := len(k)+200, 0
		for _, v := range r.Versions {
			s += len(v.Value)*4/3 + 64*len(v.Clock) + 128
			if v.TTL {
				i = 1
			}
		}
		if size[i]+s > MaxMessageSize/2 {
			flush(i)
		}
		cur[i].Regs[k] = r
		size[i] += s
	}
	for k, c := range n.ctrs {
		if !diff[bucketOf(k)] {
			continue
		}
		s, i := len(k)+100*len(c), 0
		for _, p := range c {
			if p.Expiring() {
				i = 1
			}
		}
		if size[i]+s > MaxMessageSize/2 {
			flush(i)
		}
		cur[i].Counters[k] = c
		size[i] += s
	}
	flush(0)
	flush(1)
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
	for _, data := range out {
		if err := n.opts.Conn.Publish(repairSubject(peer.From), data); err != nil {
			n.log.Debug("publishing repair failed", "err", err)
			return
		}
		n.m.published.WithLabelValues(kindRepair).Inc()
	}
}

// compact drops tombstones older than TombstoneTTL, expired purges, and
// plugin KV keys and counters expired for longer than ExpiryGrace.
func (n *Node) compact() {
	n.mu.Lock()
	changed := n.compactLocked(n.opts.Now(), 0)
	if len(changed) > 0 {
		n.reindexPurges()
	}
	n.mu.Unlock()
	if len(changed) > 0 {
		n.log.Debug("compacted state", "keys", len(changed))
	}
}

// compactLocked compacts if the horizon lags the local clock's by more than
// slack, and returns the changed keys. Callers hold n.mu and rebuild the
// purge index when keys changed.
func (n *Node) compactLocked(now time.Time, slack time.Duration) []string {
	h, eh := n.horizon(now), n.expiryHorizon(now)
	if h <= n.regs.Horizon+int64(slack) && eh <= n.regs.Expired+int64(slack) {
		return nil
	}
	changed, expired := n.regs.CompactAt(h, eh)
	for _, k := range changed {
		n.rehash(k)
		if _, live := n.regs.Regs[k]; !live {
			delete(n.history, k)
		}
	}
	// Counters have no tombstones: an expired one is simply gone, and
	// MergeAt refuses late copies of it.
	dropped := n.ctrs.Expire(eh)
	for _, k := range dropped {
		n.rehash(k)
		delete(n.dirtyCtr, k)
	}
	if len(expired) > 0 {
		n.m.expired.WithLabelValues("kv").Add(float64(len(expired)))
	}
	if len(dropped) > 0 {
		n.m.expired.WithLabelValues("counter").Add(float64(len(dropped)))
	}
	if len(changed)+len(dropped) > 0 {
		n.dirty = true
	}
	return changed
}
