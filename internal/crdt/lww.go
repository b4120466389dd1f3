package crdt

import (
	"bytes"
	"slices"
	"sort"
)

// Version is one write of a register: a value (or a deletion) stamped with the
// vector clock the writer had after the write.
type Version struct {
	// Value is the written bytes; nil for a deletion.
	Value []byte `json:"val,omitempty"`
	// Deleted marks a tombstone: the key was deleted by this write.
	Deleted bool `json:"del,omitempty"`
	// Clock is the causal history of this write for this key.
	Clock VClock `json:"vc"`
	// Node is the writer; it breaks ties between concurrent writes.
	Node string `json:"node"`
	// Wall is the writer's wall clock in Unix nanoseconds. It breaks ties
	// between concurrent writes (later wins) and dates tombstones for
	// compaction; it never overrides causality.
	Wall int64 `json:"wall"`
	// Expires, when not 0, is the Unix nanosecond time after which the
	// version is dead everywhere (purge records, plugin KV keys written with
	// a TTL). Versions that expired before the compaction horizon are
	// dropped by compaction and refused by Merge, so they cannot come back.
	Expires int64 `json:"exp,omitempty"`
	// TTL marks a version written with a TTL (SetTTL): readers treat it as
	// absent from Expires on (ValueAt), and once the map's expiry horizon
	// (Map.Expired) passes Expires it turns into a tombstone of the same
	// write, or is dropped outright if Fresh. Versions with Expires but
	// without TTL (purge records) keep their value until the compaction
	// horizon passes Expires, as before TTLs existed.
	TTL bool `json:"ttl,omitempty"`
	// Fresh marks a TTL version that supersedes nothing that could
	// outlive it: when it was written, its writer's register held only
	// fresh versions expiring no later than it (or nothing). Such a version
	// can be forgotten at its expiry without a tombstone, since no older
	// value is left for it to hide. A version that is not fresh becomes a
	// tombstone at its expiry instead, so that a replica still holding an
	// older value it superseded cannot bring that value back.
	Fresh bool `json:"fresh,omitempty"`
}

// wins reports whether a beats b in the deterministic tie-break used between
// concurrent versions: later wall clock, then greater node id, then a live
// value over a tombstone, then greater value bytes. Every replica that holds
// the same versions therefore picks the same winner.
func (a Version) wins(b Version) bool {
	if a.Wall != b.Wall {
		return a.Wall > b.Wall
	}
	if a.Node != b.Node {
		return a.Node > b.Node
	}
	if a.Deleted != b.Deleted {
		return !a.Deleted
	}
	if c := bytes.Compare(a.Value, b.Value); c != 0 {
		return c > 0
	}
	if a.Expires != b.Expires {
		return a.Expires > b.Expires
	}
	if a.TTL != b.TTL {
		return a.TTL
	}
	return a.Fresh && !b.Fresh
}

// dead reports whether v must be dropped at compaction horizon h (for
// tombstones and long-expired versions) and expiry horizon eh (for fresh
// expired versions, which need no tombstone).
func (v Version) dead(h, eh int64) bool {
	if v.Expires != 0 && v.Expires < h {
		return true
	}
	if v.Fresh && v.TTL && !v.Deleted && v.Expires != 0 && v.Expires < eh {
		return true
	}
	return v.Deleted && v.Wall < h
}

// LiveAt reports whether v is a value (not a tombstone) whose TTL, if it
// has one, has not run out at now (Unix ns).
func (v Version) LiveAt(now int64) bool {
	return !v.Deleted && (!v.TTL || v.Expires > now)
}

// expire turns a live version that is not fresh and expired before the
// expiry horizon eh into a tombstone dated at its expiry (same writer,
// clock and wall, so that every replica makes the same tombstone and it
// still supersedes what the version did). Fresh versions are left for dead
// to drop. Versions are never changed in place: a tombstone is a new value.
func (v Version) expire(eh int64) Version {
	if !v.expires(eh) {
		return v
	}
	return Version{Deleted: true, Clock: v.Clock, Node: v.Node, Wall: v.Wall, Expires: v.Expires}
}

// expires reports whether expire(eh) changes v.
func (v Version) expires(eh int64) bool {
	return v.TTL && !v.Deleted && !v.Fresh && v.Expires != 0 && v.Expires < eh
}

// Register is a multi-value register resolved last-writer-wins: it keeps
// every write that no other write it knows has seen (an antichain under the
// vector clock order). Versions[0] is the winner; the rest are the concurrent
// losers, kept observable until a later write that has seen them supersedes
// them.
type Register struct {
	Versions []Version `json:"versions"`
}

// Winner returns the winning version; ok is false for an empty register.
func (r Register) Winner() (v Version, ok bool) {
	if len(r.Versions) == 0 {
		return Version{}, false
	}
	return r.Versions[0], true
}

// Clock is the join of all versions' clocks: what a new write must have seen.
func (r Register) Clock() VClock {
	var c VClock
	for _, v := range r.Versions {
		c = c.Merge(v.Clock)
	}
	return c
}

// mergeRegister joins two registers: union, turn versions expired before
// eh into tombstones, drop every version another one causally dominates,
// dedupe equal clocks by the tie-break, drop versions dead at horizons h and
// eh, order winner first.
func mergeRegister(a, b []Version, h, eh int64) []Version {
	if len(a)+len(b) == 1 { // a new key, or compaction of a single version
		// The input slice itself is the result: versions are never changed
		// in place, and the capacity limit makes an append copy. This is the
		// merge of every new key on every replica; a copy per merge was a
		// good share of what a receiving node allocates.
		v := a
		if len(b) == 1 {
			v = b
		}
		if v[0].dead(h, eh) {
			return nil
		}
		if v[0].expires(eh) {
			if t := v[0].expire(eh); !t.dead(h, eh) {
				return []Version{t}
			}
			return nil
		}
		return v[:1:1]
	}
	all := make([]Version, 0, len(a)+len(b))
	all = append(all, a...)
	all = append(all, b...)
	// Expiry first: a replica that converted a version and one that did
	// not yet must dedupe the two copies to the same tombstone.
	for i, v := range all {
		all[i] = v.expire(eh)
	}
	keep := make([]Version, 0, len(all))
	for i, v := range all {
		drop := false
		for j, w := range all {
			if i == j {
				continue
			}
			switch v.Clock.Compare(w.Clock) {
			case Before:
				drop = true
			case Equal:
				// The same write seen twice, or (after a lost state) two
				// writes with one clock: keep one, chosen deterministically.
				if w.wins(v) || (!v.wins(w) && j < i) {
					drop = true
				}
			}
			if drop {
				break
			}
		}
		if !drop {
			keep = append(keep, v)
		}
	}
	// Dominance is decided before dropping dead versions so that a compacted
	// tombstone still removes what it superseded in the same merge.
	out := keep[:0]
	for _, v := range keep {
		if !v.dead(h, eh) {
			out = append(out, v)
		}
	}
	// slices.SortFunc: sort.Slice allocates, and this runs on every merge.
	slices.SortFunc(out, func(x, y Version) int {
		switch {
		case x.wins(y):
			return -1
		case y.wins(x):
			return 1
		}
		return 0
	})
	return out
}

func sameVersions(a, b []Version) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.Node != y.Node || x.Wall != y.Wall || x.Deleted != y.Deleted || x.Expires != y.Expires || x.Fresh != y.Fresh || x.TTL != y.TTL ||
			!bytes.Equal(x.Value, y.Value) || x.Clock.Compare(y.Clock) != Equal {
			return false
		}
	}
	return true
}

// Map is a map of registers plus a compaction horizon. Its zero value is not
// usable; call NewMap. A Map is also the delta form: a write returns a Map
// holding only the written key, and merging it anywhere has the same effect as
// merging the whole state it came from.
type Map struct {
	// Horizon is the compaction horizon (Unix ns): tombstones written before
	// it and versions that expired before it are dropped and refused. It only
	// moves forward, and merges take the maximum.
	Horizon int64 `json:"horizon,omitempty"`
	// Expired is the expiry horizon (Unix ns): live versions that expired
	// before it are turned into tombstones (or dropped, if Fresh) and
	// refused as such. It trails the clock only by the skew tolerated
	// between writers and readers, so expired keys leave memory soon after
	// their expiry. It only moves forward, and merges take the maximum.
	Expired int64 `json:"expired,omitempty"`
	// Regs holds the registers by key.
	Regs map[string]Register `json:"regs"`
}

// NewMap returns an empty map.
func NewMap() *Map { return &Map{Regs: map[string]Register{}} }

// Get returns the register of key (with its winner and conflicts).
func (m *Map) Get(key string) (Register, bool) {
	r, ok := m.Regs[key]
	return r, ok
}

// Value returns the winning live value of key; ok is false when the key is
// absent or its winner is a tombstone.
func (m *Map) Value(key string) ([]byte, bool) {
	w, ok := m.Regs[key].Winner()
	if !ok || w.Deleted {
		return nil, false
	}
	return w.Value, true
}

// ValueAt is Value as seen at now (Unix ns): a winner that has expired by
// then is absent.
func (m *Map) ValueAt(key string, now int64) ([]byte, bool) {
	w, ok := m.Regs[key].Winner()
	if !ok || !w.LiveAt(now) {
		return nil, false
	}
	return w.Value, true
}

// Set writes value under key as node at wall time wall and returns the delta.
// expires (Unix ns, 0 = never) makes the version die at that time; at the
// expiry horizon it turns into a tombstone (see SetTTL for keys that need
// none).
func (m *Map) Set(node, key string, value []byte, wall, expires int64) *Map {
	return m.write(node, key, Version{Value: value, Wall: wall, Expires: expires})
}

// SetTTL is Set with a required expiry that marks the version Fresh when it
// hides nothing that would outlive it, so that it leaves no tombstone behind.
func (m *Map) SetTTL(node, key string, value []byte, wall, expires int64) *Map {
	v := Version{Value: value, Wall: wall, Expires: expires, TTL: expires != 0}
	if expires != 0 {
		v.Fresh = true
		for _, o := range m.Regs[key].Versions {
			if o.Deleted || !o.Fresh || o.Expires == 0 || o.Expires > expires {
				v.Fresh = false // it hides something that would outlive it
				break
			}
		}
	}
	return m.write(node, key, v)
}

// Delete writes a tombstone for key as node and returns the delta. The
// tombstone wins over every version this node has seen and is kept until the
// horizon passes its wall time (see Compact).
func (m *Map) Delete(node, key string, wall int64) *Map {
	return m.write(node, key, Version{Deleted: true, Wall: wall})
}

func (m *Map) write(node, key string, v Version) *Map {
	v.Node = node
	// The writer's own entry is max(previous+1, wall milliseconds): still
	// strictly increasing per node, and a node that lost its state (new disk)
	// still writes versions newer than the ones it wrote before, instead of
	// versions its own old writes dominate.
	c := m.Regs[key].Clock().Tick(node)
	if ms := uint64(max(v.Wall, 0) / 1e6); ms > c[node] {
		c[node] = ms
	}
	v.Clock = c
	d := NewMap()
	d.Regs[key] = Register{Versions: []Version{v}}
	m.Merge(d)
	return d
}

// Merge joins o into m and returns the keys whose register changed. m may
// keep o's version slices (not copied: this is every replica's hot path), so
// neither may change a Version in place afterwards; nothing does.
func (m *Map) Merge(o *Map) []string {
	if o == nil {
		return nil
	}
	var changed []string
	if o.Horizon > m.Horizon || o.Expired > m.Expired {
		// A later horizon applies to what m already holds too; without this
		// merge would not be commutative.
		changed, _ = m.CompactAt(o.Horizon, o.Expired)
	}
	for k, r := range o.Regs {
		cur := m.Regs[k]
		merged := mergeRegister(cur.Versions, r.Versions, m.Horizon, m.Expired)
		if sameVersions(cur.Versions, merged) {
			continue
		}
		if len(merged) == 0 {
			delete(m.Regs, k)
		} else {
			m.Regs[k] = Register{Versions: merged}
		}
		changed = append(changed, k)
	}
	sort.Strings(changed)
	return dedupSorted(changed)
}

func dedupSorted(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// Compact moves the horizon to h (if later) and drops every tombstone written
// before it and every version expired before it. It returns the keys whose
// register changed (emptied registers are removed from the map).
//
// Compaction never resurrects a deleted value as long as every replica has
// received the tombstone before the horizon passes it: the owner of the Map
// guarantees that by choosing h well behind the longest time a replica may be
// cut off (statesync discards a local snapshot older than that and rebuilds
// from the log). Expired versions (Expires) are refused by Merge outright, so
// they can never come back.
func (m *Map) Compact(h int64) []string {
	changed, _ := m.CompactAt(h, 0)
	return changed
}

// CompactAt is Compact that also moves the expiry horizon to eh (if later):
// live versions expired before eh become tombstones dated at their expiry,
// fresh ones are dropped. It returns the changed keys and, among them, those
// whose winning value expired (the key is gone or now a tombstone).
func (m *Map) CompactAt(h, eh int64) (changed, expired []string) {
	if h > m.Horizon {
		m.Horizon = h
	}
	if eh > m.Expired {
		m.Expired = eh
	}
	for k, r := range m.Regs {
		merged := mergeRegister(r.Versions, nil, m.Horizon, m.Expired)
		if sameVersions(r.Versions, merged) {
			continue
		}
		if len(merged) == 0 {
			delete(m.Regs, k)
		} else {
			m.Regs[k] = Register{Versions: merged}
		}
		changed = append(changed, k)
		if w, ok := r.Winner(); ok && w.TTL && !w.Deleted && w.Expires < m.Expired {
			expired = append(expired, k)
		}
	}
	sort.Strings(changed)
	sort.Strings(expired)
	return changed, expired
}

// Keys returns the keys in sorted order, tombstoned ones included.
func (m *Map) Keys() []string {
	keys := make([]string, 0, len(m.Regs))
	for k := range m.Regs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Clone returns a deep copy of m.
func (m *Map) Clone() *Map {
	c := &Map{Horizon: m.Horizon, Expired: m.Expired, Regs: make(map[string]Register, len(m.Regs))}
	for k, r := range m.Regs {
		vs := make([]Version, len(r.Versions))
		for i, v := range r.Versions {
			v.Clock = v.Clock.Clone()
			v.Value = bytes.Clone(v.Value)
			vs[i] = v
		}
		c.Regs[k] = Register{Versions: vs}
	}
	return c
}

// Equal reports whether m and o hold the same state.
func (m *Map) Equal(o *Map) bool {
	if m.Horizon != o.Horizon || m.Expired != o.Expired || len(m.Regs) != len(o.Regs) {
		return false
	}
	for k, r := range m.Regs {
		if !sameVersions(r.Versions, o.Regs[k].Versions) {
			return false
		}
	}
	return true
}
