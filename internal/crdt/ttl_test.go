package crdt

import (
	"fmt"
	"testing"

	"pgregory.net/rapid"
)

// ctrOp is one counter add a replica performs at a time, with or without TTL.
type ctrOp struct {
	node       int
	delta, now int64
	ttl        int64 // 0: no TTL
}

// TestTTLCounterMergeIsALattice: whatever adds (with and without TTL, at
// any times, so counters expire and start over) the replicas make, merging
// their states is commutative, associative and idempotent, and merging every
// delta in any order with duplicates gives the same state as merging the
// states, also under an expiry horizon.
func TestTTLCounterMergeIsALattice(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ops := rapid.SliceOfN(rapid.Custom(func(t *rapid.T) ctrOp {
			return ctrOp{
				node:  rapid.IntRange(0, 2).Draw(t, "node"),
				delta: rapid.Int64Range(-3, 5).Draw(t, "delta"),
				now:   rapid.Int64Range(1, 40).Draw(t, "now"),
				ttl:   rapid.SampledFrom([]int64{0, 3, 10}).Draw(t, "ttl"),
			}
		}), 0, 30).Draw(t, "ops")
		reps := []Counters{{}, {}, {}}
		var deltas []Counters
		for i, o := range ops {
			var exp int64
			if o.ttl > 0 {
				exp = o.now + o.ttl
			}
			_, d := reps[o.node].AddAt(nodes[o.node], "k", o.delta, o.now, exp)
			deltas = append(deltas, d)
			// Some deltas reach the other replicas at once, so adds see
			// live, dead and reborn counters of others.
			for j := range reps {
				if j != o.node && rapid.Bool().Draw(t, fmt.Sprintf("deliver%d_%d", i, j)) {
					reps[j].Merge(d.Clone())
				}
			}
		}
		eh := rapid.Int64Range(0, 60).Draw(t, "eh")
		m := func(h int64, cs ...Counters) Counters {
			out := Counters{}
			for _, c := range cs {
				out.MergeAt(c.Clone(), h)
			}
			return out
		}
		a, b, c := reps[0], reps[1], reps[2]
		if !m(0, a, b).Equal(m(0, b, a)) || !m(0, m(0, a, b), c).Equal(m(0, a, m(0, b, c))) || !m(0, a, a).Equal(m(0, a)) {
			t.Fatal("merge is not commutative, associative and idempotent")
		}
		// Under an expiry horizon a share that is dead on its own is refused
		// until a live share of the same counter is there, so one pass may
		// depend on the order; two passes of anti-entropy (every state sent
		// again) always end in the join, less what is dead at the horizon.
		want := m(0, a, b, c)
		want.Expire(eh)
		got2 := m(eh, rapid.Permutation([]Counters{a, b, c, a, b, c}).Draw(t, "ae")...)
		got2.MergeAt(a.Clone(), eh)
		got2.MergeAt(b.Clone(), eh)
		got2.MergeAt(c.Clone(), eh)
		if !got2.Equal(want) {
			t.Fatalf("anti-entropy under horizon %d: %v, want %v", eh, got2, want)
		}
		got := Counters{}
		for _, d := range rapid.Permutation(append(deltas, deltas...)).Draw(t, "order") {
			got.Merge(d)
		}
		if !got.Equal(m(0, a, b, c)) {
			t.Fatalf("deltas and states disagree: %v vs %v", got, m(0, a, b, c))
		}
	})
}

func TestTTLCounterExpiresExtendsAndStartsOver(t *testing.T) {
	a, b := Counters{}, Counters{}
	_, d := a.AddAt("ams", "k", 5, 100, 110)
	b.Merge(d)
	if v := b.ValueAt("k", 105); v != 5 {
		t.Fatalf("before expiry: %d, want 5", v)
	}
	if v := b.ValueAt("k", 110); v != 0 {
		t.Fatalf("at expiry: %d, want 0", v)
	}
	// A later add on another node extends the counter: ams's share still
	// counts after its own expiry.
	_, d = b.AddAt("fra", "k", 2, 108, 118)
	a.Merge(d)
	for _, c := range []Counters{a, b} {
		if v := c.ValueAt("k", 115); v != 7 {
			t.Fatalf("extended counter at 115: %d, want 7", v)
		}
		if e := c["k"].Expires(); e != 118 {
			t.Fatalf("expiry %d, want the latest, 118", e)
		}
	}
	// After expiry an add starts over; the old shares no longer count
	// anywhere once the new one arrives.
	v, d := a.AddAt("ams", "k", 1, 200, 210)
	if v != 1 {
		t.Fatalf("add after expiry: %d, want 1", v)
	}
	b.Merge(d)
	if v := b.ValueAt("k", 201); v != 1 {
		t.Fatalf("reborn counter elsewhere: %d, want 1 (%v)", v, b["k"])
	}
	if len(b["k"]) != 1 {
		t.Fatalf("old incarnation's shares kept: %v", b["k"])
	}
	// A late copy of the expired incarnation cannot bring it back...
	old := Counters{"k": {"fra": {P: 2, Birth: 100, Exp: 118}}}
	if ch := b.Merge(old.Clone()); len(ch) != 0 || b.ValueAt("k", 201) != 1 {
		t.Fatalf("late share of the old incarnation changed %v: %v", ch, b["k"])
	}
	// ...nor, past the expiry horizon, recreate a dropped counter.
	if got := b.Expire(220); len(got) != 1 || len(b) != 0 {
		t.Fatalf("expire at 220 dropped %v, left %v", got, b)
	}
	if ch := b.MergeAt(d.Clone(), 220); len(ch) != 0 || len(b) != 0 {
		t.Fatalf("late delta resurrected an expired counter: %v %v", ch, b)
	}
}

func TestCounterWithoutTTLUnchanged(t *testing.T) {
	c := Counters{}
	_, d := c.Add("ams", "k", 3)
	c.Merge(Counters{"k": {"fra": {P: 4, N: 1}}})
	if v := c.ValueAt("k", 1<<62); v != 6 {
		t.Fatalf("value %d, want 6 at any time", v)
	}
	if p := d["k"]["ams"]; p != (PNPair{P: 3}) {
		t.Fatalf("delta %+v carries life fields", p)
	}
	if got := c.Expire(1 << 62); len(got) != 0 {
		t.Fatalf("expired a counter without TTL: %v", got)
	}
	// An add without TTL to a counter with one makes it permanent.
	c.AddAt("sin", "t", 1, 10, 20)
	c.AddAt("sin", "t", 1, 11, 0)
	if c["t"].Expires() != 0 || c.ValueAt("t", 1000) != 2 {
		t.Fatalf("counter %v: want permanent with value 2", c["t"])
	}
}

func TestMapTTLExpiresAndLeavesNoTombstoneWhenFresh(t *testing.T) {
	a, b := NewMap(), NewMap()
	d := a.SetTTL("ams", "kv/s/k", []byte("v"), 100, 110)
	b.Merge(d)
	if w, _ := b.Regs["kv/s/k"].Winner(); !w.Fresh {
		t.Fatal("first TTL write of a key is not fresh")
	}
	if _, ok := b.ValueAt("kv/s/k", 109); !ok {
		t.Fatal("value missing before expiry")
	}
	if _, ok := b.ValueAt("kv/s/k", 110); ok {
		t.Fatal("value present at expiry")
	}
	changed, expired := b.CompactAt(0, 111)
	if len(changed) != 1 || len(expired) != 1 || len(b.Regs) != 0 {
		t.Fatalf("compaction: changed %v expired %v left %v", changed, expired, b.Keys())
	}
	if ch := b.Merge(d.Clone()); len(ch) != 0 || len(b.Regs) != 0 {
		t.Fatalf("late delta came back: %v", b.Keys())
	}
	// Refreshing a TTL key keeps it fresh.
	c := NewMap()
	c.SetTTL("ams", "k", []byte("1"), 100, 110)
	c.SetTTL("ams", "k", []byte("2"), 105, 115)
	if w, _ := c.Regs["k"].Winner(); !w.Fresh {
		t.Fatal("refresh of a fresh key is not fresh")
	}
}

// TestMapTTLOverOlderValueNeverResurrectsIt: a TTL write that replaced a
// permanent value becomes a tombstone at its expiry, so a replica that
// missed the TTL write cannot hand the old value back.
func TestMapTTLOverOlderValueNeverResurrectsIt(t *testing.T) {
	a, stale := NewMap(), NewMap()
	old := a.Set("ams", "k", []byte("old"), 100, 0)
	stale.Merge(old)
	a.SetTTL("ams", "k", []byte("new"), 101, 110)
	if w, _ := a.Regs["k"].Winner(); w.Fresh {
		t.Fatal("TTL write over a permanent value marked fresh")
	}
	a.CompactAt(0, 120)
	if _, ok := a.ValueAt("k", 120); ok {
		t.Fatal("expired value readable")
	}
	a.Merge(stale.Clone())
	if v, ok := a.ValueAt("k", 120); ok {
		t.Fatalf("old value %q came back", v)
	}
	// The tombstone lives until the tombstone horizon passes its expiry.
	a.CompactAt(111, 120)
	if len(a.Regs) != 0 {
		t.Fatalf("tombstone kept past the horizon: %v", a.Regs)
	}
}

// TestMapWithTTLMergeIsALattice: with TTL writes and replicas at different
// expiry horizons, merges stay commutative, associative and idempotent, and
// a replica that converted an expired version agrees with one that did not.
func TestMapWithTTLMergeIsALattice(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		reps := []*Map{NewMap(), NewMap(), NewMap()}
		n := rapid.IntRange(0, 25).Draw(t, "n")
		for i := range n {
			r := rapid.IntRange(0, 2).Draw(t, fmt.Sprintf("r%d", i))
			key := rapid.SampledFrom([]string{"a", "b"}).Draw(t, fmt.Sprintf("k%d", i))
			wall := rapid.Int64Range(1, 20).Draw(t, fmt.Sprintf("w%d", i))
			var d *Map
			switch rapid.IntRange(0, 2).Draw(t, fmt.Sprintf("kind%d", i)) {
			case 0:
				d = reps[r].Set(nodes[r], key, []byte("v"), wall, 0)
			case 1:
				d = reps[r].SetTTL(nodes[r], key, []byte("t"), wall, wall+rapid.Int64Range(1, 10).Draw(t, fmt.Sprintf("ttl%d", i)))
			default:
				d = reps[r].Delete(nodes[r], key, wall)
			}
			for j := range reps {
				if j != r && rapid.Bool().Draw(t, fmt.Sprintf("deliver%d_%d", i, j)) {
					reps[j].Merge(d.Clone())
				}
			}
		}
		reps[1].CompactAt(0, rapid.Int64Range(0, 30).Draw(t, "eh"))
		a, b, c := reps[0], reps[1], reps[2]
		if !merged(a, b).Equal(merged(b, a)) || !merged(merged(a, b), c).Equal(merged(a, merged(b, c))) || !merged(a, a).Equal(merged(a)) {
			t.Fatal("merge with expiry is not commutative, associative and idempotent")
		}
	})
}
