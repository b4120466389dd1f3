package statesync

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/internal/crdt"
	"github.com/meridian-edge/meridian/internal/testutil"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
)

type ttlNode struct {
	*Node
	reg *prometheus.Registry
}

func openClocked(t *testing.T, id, url string, clock *testutil.Clock) ttlNode {
	t.Helper()
	return openClockedIn(t, id, url, clock, t.TempDir())
}

func openClockedIn(t *testing.T, id, url string, clock *testutil.Clock, dir string) ttlNode {
	t.Helper()
	reg := prometheus.NewRegistry()
	n, err := Open(context.Background(), Options{NodeID: id, Conn: connect(t, url), DataDir: dir,
		Now: clock.Now, AntiEntropyInterval: 100 * time.Millisecond, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return ttlNode{n, reg}
}

// inMemory reports whether the node holds key (register or counter),
// whatever its value.
func inMemory(n *Node, key string) bool {
	n.mu.RLock()
	defer n.mu.RUnlock()
	_, r := n.regs.Regs[key]
	_, c := n.ctrs[key]
	return r || c
}

// inSnapshot reports whether the snapshot the node last saved (its
// anti-entropy loop saves after each compaction) holds key; ok is false
// while there is no readable snapshot.
func inSnapshot(n *Node, key string) (has, ok bool) {
	data, err := os.ReadFile(n.snapshotPath())
	if err != nil {
		return false, false
	}
	var s snapshot
	if json.Unmarshal(data, &s) != nil || s.Regs == nil {
		return false, false
	}
	_, r := s.Regs.Regs[key]
	_, c := s.Counters[key]
	return r || c, true
}

// gone reports whether key has left the node's memory and snapshot.
func gone(n *Node, key string) bool {
	has, ok := inSnapshot(n, key)
	return ok && !has && !inMemory(n, key)
}

// kept reports whether key is in the node's memory and snapshot.
func kept(n *Node, key string) bool {
	has, ok := inSnapshot(n, key)
	return ok && has && inMemory(n, key)
}

// TestCounterTTLExpiresEverywhereAndIsCompacted: a counter added with a TTL
// reads 0 on every node once the TTL has passed, and once the expiry grace
// has passed too it is gone from every node's memory and snapshot, counted
// in the expired-keys metric; a permanent counter beside it stays.
func TestCounterTTLExpiresEverywhereAndIsCompacted(t *testing.T) {
	srv := testutil.StartNATS(t)
	clock := &testutil.Clock{}
	nodes := []ttlNode{openClocked(t, "ams", srv.ClientURL(), clock), openClocked(t, "fra", srv.ClientURL(), clock),
		openClocked(t, "sin", srv.ClientURL(), clock)}
	ctx := context.Background()
	a := nodes[0]
	if v, err := a.CounterAddTTL(ctx, "s", "rl:1", 5, time.Minute); err != nil || v != 5 {
		t.Fatalf("add: %d %v", v, err)
	}
	if _, err := a.CounterAdd(ctx, "s", "forever", 3); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		eventually(t, n.opts.NodeID+" sees the counters", func() bool {
			return n.Counter("s", "rl:1") == 5 && n.Counter("s", "forever") == 3
		})
	}
	clock.Advance(61 * time.Second) // past the TTL, within the grace
	for _, n := range nodes {
		if v := n.Counter("s", "rl:1"); v != 0 {
			t.Fatalf("%s: expired counter reads %d, want 0", n.opts.NodeID, v)
		}
		if keys := n.Keys("ctr/s/"); len(keys) != 1 || keys[0] != "ctr/s/forever" {
			t.Fatalf("%s: keys %v, want only ctr/s/forever", n.opts.NodeID, keys)
		}
	}
	clock.Advance(2 * time.Minute) // past the grace: compaction drops it
	for _, n := range nodes {
		eventually(t, n.opts.NodeID+" drops the expired counter from memory and snapshot", func() bool { return gone(n.Node, "ctr/s/rl:1") })
		if !kept(n.Node, "ctr/s/forever") || n.Counter("s", "forever") != 3 {
			t.Fatalf("%s: permanent counter lost", n.opts.NodeID)
		}
		if got := promtest.ToFloat64(n.m.expired.WithLabelValues("counter")); got != 1 {
			t.Fatalf("%s: expired counters metric %v, want 1", n.opts.NodeID, got)
		}
	}
	// Every node converged on the same state (digests include counters).
	eventually(t, "same digests", func() bool {
		return sameDigest(nodes[0].Node, nodes[1].Node) && sameDigest(nodes[1].Node, nodes[2].Node)
	})
}

// TestCounterTTLExtendedByLaterAdd: a later add with a TTL, made on another
// node, extends the counter: after the first add's expiry both adds still
// count everywhere, until the later expiry.
func TestCounterTTLExtendedByLaterAdd(t *testing.T) {
	srv := testutil.StartNATS(t)
	clock := &testutil.Clock{}
	a, b := openClocked(t, "ams", srv.ClientURL(), clock), openClocked(t, "fra", srv.ClientURL(), clock)
	ctx := context.Background()
	if _, err := a.CounterAddTTL(ctx, "s", "c", 1, time.Minute); err != nil {
		t.Fatal(err)
	}
	eventually(t, "fra sees the first add", func() bool { return b.Counter("s", "c") == 1 })
	clock.Advance(50 * time.Second)
	if _, err := b.CounterAddTTL(ctx, "s", "c", 2, time.Minute); err != nil {
		t.Fatal(err)
	}
	eventually(t, "ams sees the second add", func() bool { return a.Counter("s", "c") == 3 })
	clock.Advance(40 * time.Second) // 90 s: past the first expiry, not the second
	for _, n := range []ttlNode{a, b} {
		if v := n.Counter("s", "c"); v != 3 {
			t.Fatalf("%s: extended counter reads %d, want 3", n.opts.NodeID, v)
		}
		info, ok := n.Inspect("ctr/s/c")
		if !ok || info.CounterExpires == nil || info.CounterExpires.Before(clock.Now()) {
			t.Fatalf("%s: inspect %+v: want an expiry ahead", n.opts.NodeID, info)
		}
	}
	clock.Advance(21 * time.Second) // 111 s: past both
	for _, n := range []ttlNode{a, b} {
		if v := n.Counter("s", "c"); v != 0 {
			t.Fatalf("%s: counter reads %d after the last expiry, want 0", n.opts.NodeID, v)
		}
	}
	// An add now starts the counter over, on every node.
	if v, err := a.CounterAddTTL(ctx, "s", "c", 1, time.Minute); err != nil || v != 1 {
		t.Fatalf("add after expiry: %d %v, want 1", v, err)
	}
	eventually(t, "fra sees the counter start over", func() bool { return b.Counter("s", "c") == 1 })
}

// TestKVTTLExpiresEverywhereAndIsCompacted: a KV key set with a TTL is read
// as absent on every node after its expiry and is then dropped from memory
// and snapshots; a key without TTL stays.
func TestKVTTLExpiresEverywhereAndIsCompacted(t *testing.T) {
	srv := testutil.StartNATS(t)
	clock := &testutil.Clock{}
	a, b := openClocked(t, "ams", srv.ClientURL(), clock), openClocked(t, "fra", srv.ClientURL(), clock)
	ctx := context.Background()
	if err := a.KVSetTTL(ctx, "s", "session", []byte("v1"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := a.KVSet(ctx, "s", "kept", []byte("k")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "fra sees the keys", func() bool {
		v, ok := b.KVGet("s", "session")
		_, ok2 := b.KVGet("s", "kept")
		return ok && ok2 && string(v) == "v1"
	})
	clock.Advance(61 * time.Second)
	for _, n := range []ttlNode{a, b} {
		if v, ok := n.KVGet("s", "session"); ok {
			t.Fatalf("%s: expired key reads %q", n.opts.NodeID, v)
		}
		if keys := n.Keys("kv/s/"); len(keys) != 1 || keys[0] != "kv/s/kept" {
			t.Fatalf("%s: keys %v, want only kv/s/kept", n.opts.NodeID, keys)
		}
	}
	clock.Advance(2 * time.Minute)
	for _, n := range []ttlNode{a, b} {
		eventually(t, n.opts.NodeID+" drops the expired key from memory and snapshot", func() bool { return gone(n.Node, "kv/s/session") })
		if !kept(n.Node, "kv/s/kept") {
			t.Fatalf("%s: key without TTL not in memory and snapshot", n.opts.NodeID)
		}
		if _, ok := n.KVGet("s", "kept"); !ok {
			t.Fatalf("%s: key without TTL lost", n.opts.NodeID)
		}
		if got := promtest.ToFloat64(n.m.expired.WithLabelValues("kv")); got != 1 {
			t.Fatalf("%s: expired kv metric %v, want 1", n.opts.NodeID, got)
		}
	}
}

// TestKVTTLOverOlderValueDoesNotBringItBack: a TTL write over a permanent
// value hides it for good: after the expiry the key is absent, also on a
// node that missed the TTL write and still holds the old value.
func TestKVTTLOverOlderValueDoesNotBringItBack(t *testing.T) {
	srv := testutil.StartNATS(t)
	clock := &testutil.Clock{}
	a, b := openClocked(t, "ams", srv.ClientURL(), clock), openClocked(t, "fra", srv.ClientURL(), clock)
	ctx := context.Background()
	if err := a.KVSet(ctx, "s", "k", []byte("old")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "fra has the old value", func() bool { _, ok := b.KVGet("s", "k"); return ok })
	// The old value as a node that missed what follows would hold it.
	b.mu.RLock()
	stale := envelope{Kind: kindRepair, From: "sin", Regs: map[string]crdt.Register{"kv/s/k": b.regs.Regs["kv/s/k"]}}
	b.mu.RUnlock()
	data, err := encode(stale)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.KVSetTTL(ctx, "s", "k", []byte("new"), time.Minute); err != nil {
		t.Fatal(err)
	}
	eventually(t, "fra has the new value", func() bool { v, _ := b.KVGet("s", "k"); return string(v) == "new" })
	clock.Advance(3 * time.Minute)
	for _, n := range []ttlNode{a, b} {
		eventually(t, n.opts.NodeID+" turns the expired value into a tombstone", func() bool {
			info, ok := n.Inspect("kv/s/k")
			return ok && info.Winner.Deleted && info.Winner.Value == ""
		})
	}
	// The stale node hands the old value to everyone.
	for _, n := range []ttlNode{a, b} {
		// Twice: one subscription handles its messages in order, so once
		// the second is counted the first has been applied.
		before := promtest.ToFloat64(n.m.received.WithLabelValues(kindRepair, "repair"))
		for range 2 {
			if err := n.opts.Conn.Publish(repairSubject(n.opts.NodeID), data); err != nil {
				t.Fatal(err)
			}
		}
		eventually(t, n.opts.NodeID+" applied the stale repair", func() bool {
			return promtest.ToFloat64(n.m.received.WithLabelValues(kindRepair, "repair")) >= before+2
		})
		if v, ok := n.KVGet("s", "k"); ok {
			t.Fatalf("%s: old value %q came back", n.opts.NodeID, v)
		}
	}
}

// TestLateDeltaDoesNotResurrectExpiredKeys: after compaction, the deltas of
// an expired counter and KV key arriving again (a late fast-path copy, and
// the durable log replayed by a node that joins later) bring nothing back.
func TestLateDeltaDoesNotResurrectExpiredKeys(t *testing.T) {
	srv := testutil.StartNATS(t)
	clock := &testutil.Clock{}
	a, b := openClocked(t, "ams", srv.ClientURL(), clock), openClocked(t, "fra", srv.ClientURL(), clock)
	ctx := context.Background()
	if _, err := a.CounterAddTTL(ctx, "s", "rl:x", 7, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := a.KVSetTTL(ctx, "s", "tok", []byte("t"), time.Minute); err != nil {
		t.Fatal(err)
	}
	eventually(t, "fra has both", func() bool { _, ok := b.KVGet("s", "tok"); return ok && b.Counter("s", "rl:x") == 7 })
	// The deltas as ams sent them, kept for a late copy.
	a.mu.RLock()
	late := envelope{Kind: kindDelta, From: "ams", ID: "ams.late.1",
		Regs:     map[string]crdt.Register{"kv/s/tok": a.regs.Regs["kv/s/tok"]},
		Counters: crdt.Counters{"ctr/s/rl:x": {"ams": a.ctrs["ctr/s/rl:x"]["ams"]}}}
	a.mu.RUnlock()
	data, err := encode(late)
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(3 * time.Minute)
	for _, n := range []ttlNode{a, b} {
		eventually(t, n.opts.NodeID+" compacts", func() bool { return gone(n.Node, "kv/s/tok") && gone(n.Node, "ctr/s/rl:x") })
	}
	msg := &nats.Msg{Subject: deltaSubject("ams"), Data: data, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, late.ID)
	if err := a.opts.Conn.PublishMsg(msg); err != nil { // core only: a late fast-path copy
		t.Fatal(err)
	}
	// A delta's id is remembered once it has been applied.
	eventually(t, "fra applied the late delta", func() bool { return b.seen.has("ams.late.1") })
	c := openClocked(t, "sin", srv.ClientURL(), clock) // replays the whole log
	for _, n := range []ttlNode{b, c} {
		for _, k := range []string{"kv/s/tok", "ctr/s/rl:x"} {
			if inMemory(n.Node, k) {
				t.Fatalf("%s: %s came back from a late delta", n.opts.NodeID, k)
			}
		}
		if n.Counter("s", "rl:x") != 0 {
			t.Fatalf("%s: counter came back", n.opts.NodeID)
		}
	}
}

// TestTTLValidation: TTLs out of range are refused with the range in the
// message, and nothing is written.
func TestTTLValidation(t *testing.T) {
	srv := testutil.StartNATS(t)
	n := openClocked(t, "ams", srv.ClientURL(), &testutil.Clock{})
	ctx := context.Background()
	for _, ttl := range []time.Duration{0, -time.Second, MaxTTL + time.Millisecond} {
		if err := n.KVSetTTL(ctx, "s", "k", []byte("v"), ttl); err == nil || !strings.Contains(err.Error(), "at most 720h0m0s") {
			t.Fatalf("KVSetTTL ttl %v: %v", ttl, err)
		}
		if _, err := n.CounterAddTTL(ctx, "s", "c", 1, ttl); err == nil || !strings.Contains(err.Error(), "more than 0") {
			t.Fatalf("CounterAddTTL ttl %v: %v", ttl, err)
		}
	}
	if keys := n.Keys(""); len(keys) != 0 {
		t.Fatalf("refused writes left keys %v", keys)
	}
}

// TestTTLSurvivesRestart: a restarted node reads the expiry of its counters
// and keys back from its snapshot: they still expire on time, and the
// permanent ones still do not.
func TestTTLSurvivesRestart(t *testing.T) {
	srv := testutil.StartNATS(t)
	clock := &testutil.Clock{}
	dir := t.TempDir()
	a := openClockedIn(t, "ams", srv.ClientURL(), clock, dir)
	ctx := context.Background()
	if _, err := a.CounterAddTTL(ctx, "s", "rl", 4, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := a.CounterAdd(ctx, "s", "total", 4); err != nil {
		t.Fatal(err)
	}
	if err := a.KVSetTTL(ctx, "s", "tok", []byte("t"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	b := openClockedIn(t, "ams", srv.ClientURL(), clock, dir)
	if v, _ := b.KVGet("s", "tok"); b.Counter("s", "rl") != 4 || string(v) != "t" {
		t.Fatalf("after restart: counter %d, key %q", b.Counter("s", "rl"), v)
	}
	clock.Advance(61 * time.Second)
	if _, ok := b.KVGet("s", "tok"); ok || b.Counter("s", "rl") != 0 || b.Counter("s", "total") != 4 {
		t.Fatalf("after expiry: key %v, counter %d (want 0), permanent %d (want 4)", ok, b.Counter("s", "rl"), b.Counter("s", "total"))
	}
}
