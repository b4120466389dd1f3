package crdt

import (
	"fmt"
	"testing"

	"pgregory.net/rapid"
)

var nodes = []string{"ams", "fra", "sin"}

// op is one write a replica performs.
type op struct {
	node    int
	key     string
	del     bool
	val     string
	wall    int64
	expires int64
}

func genOps(t *rapid.T) []op {
	return rapid.SliceOfN(rapid.Custom(func(t *rapid.T) op {
		return op{
			node: rapid.IntRange(0, len(nodes)-1).Draw(t, "node"),
			key:  rapid.SampledFrom([]string{"a", "b", "c"}).Draw(t, "key"),
			del:  rapid.Bool().Draw(t, "del"),
			val:  rapid.StringMatching(`[xyz]{0,2}`).Draw(t, "val"),
			// Few distinct wall times so that ties are common.
			wall: rapid.Int64Range(1, 4).Draw(t, "wall"),
		}
	}), 0, 30).Draw(t, "ops")
}

// runMap applies ops on three replicas that only see their own writes (no
// delivery) and returns the replicas and every delta produced.
func runMap(ops []op) ([]*Map, []*Map) {
	reps := []*Map{NewMap(), NewMap(), NewMap()}
	var deltas []*Map
	for _, o := range ops {
		r := reps[o.node]
		if o.del {
			deltas = append(deltas, r.Delete(nodes[o.node], o.key, o.wall))
		} else {
			deltas = append(deltas, r.Set(nodes[o.node], o.key, []byte(o.val), o.wall, o.expires))
		}
	}
	return reps, deltas
}

func merged(ms ...*Map) *Map {
	out := NewMap()
	for _, m := range ms {
		out.Merge(m.Clone())
	}
	return out
}

func TestMapMergeIsCommutativeAssociativeIdempotent(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		reps, _ := runMap(genOps(t))
		a, b, c := reps[0], reps[1], reps[2]
		if !merged(a, b).Equal(merged(b, a)) {
			t.Fatalf("merge not commutative")
		}
		if !merged(merged(a, b), c).Equal(merged(a, merged(b, c))) {
			t.Fatalf("merge not associative")
		}
		if !merged(a, a).Equal(merged(a)) {
			t.Fatalf("merge not idempotent")
		}
		// Horizons participate too.
		h := rapid.Int64Range(0, 5).Draw(t, "horizon")
		b.Compact(h)
		if !merged(a, b).Equal(merged(b, a)) {
			t.Fatalf("merge with horizon not commutative")
		}
	})
}

// TestMapAnyDeliveryConverges: every replica writes, deltas are delivered to
// each replica in any order, duplicated or lost; one round of anti-entropy
// (exchanging full state) afterwards leaves every replica with the same state.
func TestMapAnyDeliveryConverges(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ops := genOps(t)
		// Writers interleave with delivery: replay the ops, delivering each
		// produced delta to a random subset of replicas, possibly twice.
		reps := []*Map{NewMap(), NewMap(), NewMap()}
		var pending [3][]*Map
		for i, o := range ops {
			r := reps[o.node]
			var d *Map
			if o.del {
				d = r.Delete(nodes[o.node], o.key, o.wall)
			} else {
				d = r.Set(nodes[o.node], o.key, []byte(o.val), o.wall, 0)
			}
			for j := range reps {
				copies := rapid.IntRange(0, 2).Draw(t, fmt.Sprintf("copies%d_%d", i, j))
				for range copies {
					pending[j] = append(pending[j], d.Clone())
				}
			}
			// Deliver some pending deltas in a random order.
			for j := range reps {
				for len(pending[j]) > 0 && rapid.Bool().Draw(t, fmt.Sprintf("deliver%d_%d", i, j)) {
					k := rapid.IntRange(0, len(pending[j])-1).Draw(t, "pick")
					reps[j].Merge(pending[j][k])
					pending[j] = append(pending[j][:k], pending[j][k+1:]...)
				}
			}
		}
		// Anti-entropy: every replica sends its state to every other.
		for i := range reps {
			for j := range reps {
				if i != j {
					reps[j].Merge(reps[i].Clone())
				}
			}
		}
		for j := 1; j < len(reps); j++ {
			if !reps[0].Equal(reps[j]) {
				t.Fatalf("replica %d diverged: %+v vs %+v", j, reps[0].Regs, reps[j].Regs)
			}
		}
	})
}

func TestConcurrentWritesDetectedAndSameWinnerEverywhere(t *testing.T) {
	ams, fra := NewMap(), NewMap()
	base := ams.Set("ams", "cfg", []byte("v0"), 1, 0)
	fra.Merge(base)
	// Both write without seeing each other.
	da := ams.Set("ams", "cfg", []byte("from-ams"), 10, 0)
	df := fra.Set("fra", "cfg", []byte("from-fra"), 10, 0)
	va, _ := da.Regs["cfg"].Winner()
	vf, _ := df.Regs["cfg"].Winner()
	if got := va.Clock.Compare(vf.Clock); got != Concurrent {
		t.Fatalf("clocks %v and %v compare %v, want concurrent", va.Clock, vf.Clock, got)
	}
	ams.Merge(df)
	fra.Merge(da)
	for name, m := range map[string]*Map{"ams": ams, "fra": fra} {
		r, _ := m.Get("cfg")
		if len(r.Versions) != 2 {
			t.Fatalf("%s: %d versions, want winner and loser kept", name, len(r.Versions))
		}
		// Equal wall time: the greater node id wins, on every replica.
		if got := string(r.Versions[0].Value); got != "from-fra" {
			t.Fatalf("%s: winner %q, want from-fra", name, got)
		}
		if got := string(r.Versions[1].Value); got != "from-ams" {
			t.Fatalf("%s: loser %q, want from-ams", name, got)
		}
	}
	// A later write that has seen both resolves the conflict.
	d := ams.Set("ams", "cfg", []byte("resolved"), 11, 0)
	fra.Merge(d)
	r, _ := fra.Get("cfg")
	if len(r.Versions) != 1 || string(r.Versions[0].Value) != "resolved" {
		t.Fatalf("after resolving write: %+v", r.Versions)
	}
}

func TestCausalityBeatsWallClock(t *testing.T) {
	a, b := NewMap(), NewMap()
	// b's clock is behind: its later write has an earlier wall time, but it
	// saw a's write, so it wins.
	b.Merge(a.Set("ams", "k", []byte("first"), 100, 0))
	a.Merge(b.Set("fra", "k", []byte("second"), 50, 0))
	if v, _ := a.Value("k"); string(v) != "second" {
		t.Fatalf("value %q, want second", v)
	}
}

func TestCompactionDropsTombstonesAndExpired(t *testing.T) {
	a, b := NewMap(), NewMap()
	set := a.Set("ams", "k", []byte("v"), 10, 0)
	b.Merge(set)
	del := a.Delete("ams", "k", 20)
	b.Merge(del)
	purge := a.Set("ams", "purge/1", []byte("p"), 10, 30)
	b.Merge(purge)
	for _, m := range []*Map{a, b} {
		m.Compact(40)
		if len(m.Regs) != 0 {
			t.Fatalf("after compaction: %v", m.Keys())
		}
	}
	// A redelivered expired version is refused.
	b.Merge(purge)
	if _, ok := b.Get("purge/1"); ok {
		t.Fatal("expired purge came back after redelivery")
	}
	// Redelivering the tombstone changes nothing; a state merge between
	// compacted replicas changes nothing.
	if ch := b.Merge(del); len(ch) != 0 {
		t.Fatalf("redelivered tombstone changed %v", ch)
	}
	if ch := b.Merge(a.Clone()); len(ch) != 0 {
		t.Fatalf("merge of compacted replicas changed %v", ch)
	}
	// A replica that never compacted learns the horizon and drops too.
	c := NewMap()
	c.Merge(set)
	c.Merge(del)
	c.Merge(&Map{Horizon: a.Horizon, Regs: map[string]Register{}})
	if len(c.Regs) != 0 {
		t.Fatalf("horizon from merge did not compact: %v", c.Keys())
	}
}

func TestPNCounterProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		reps := []Counters{{}, {}, {}}
		var deltas []Counters
		want := int64(0)
		n := rapid.IntRange(0, 30).Draw(t, "n")
		for i := range n {
			r := rapid.IntRange(0, 2).Draw(t, fmt.Sprintf("r%d", i))
			v := rapid.Int64Range(-5, 5).Draw(t, fmt.Sprintf("v%d", i))
			key := rapid.SampledFrom([]string{"x", "y"}).Draw(t, fmt.Sprintf("k%d", i))
			_, d := reps[r].Add(nodes[r], key, v)
			deltas = append(deltas, d)
			if key == "x" {
				want += v
			}
		}
		m := func(cs ...Counters) Counters {
			out := Counters{}
			for _, c := range cs {
				out.Merge(c.Clone())
			}
			return out
		}
		a, b, c := reps[0], reps[1], reps[2]
		if !m(a, b).Equal(m(b, a)) || !m(m(a, b), c).Equal(m(a, m(b, c))) || !m(a, a).Equal(m(a)) {
			t.Fatal("counter merge is not commutative, associative and idempotent")
		}
		// Deltas in a random order with duplicates give the exact total.
		got := Counters{}
		perm := rapid.Permutation(append(deltas, deltas...)).Draw(t, "order")
		for _, d := range perm {
			got.Merge(d)
		}
		if got.Value("x") != want {
			t.Fatalf("x = %d, want %d", got.Value("x"), want)
		}
		if !got.Equal(m(a, b, c)) {
			t.Fatal("deltas and states disagree")
		}
	})
}

func TestORSetProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		reps := []*ORSet{NewORSet(), NewORSet(), NewORSet()}
		var deltas []*ORSet
		n := rapid.IntRange(0, 30).Draw(t, "n")
		for i := range n {
			r := rapid.IntRange(0, 2).Draw(t, fmt.Sprintf("r%d", i))
			e := rapid.SampledFrom([]string{"a", "b", "c"}).Draw(t, fmt.Sprintf("e%d", i))
			if rapid.Bool().Draw(t, fmt.Sprintf("add%d", i)) {
				deltas = append(deltas, reps[r].Add(nodes[r], e))
			} else {
				deltas = append(deltas, reps[r].Remove(e))
			}
			// Random partial delivery of the new delta.
			for j := range reps {
				if j != r && rapid.Bool().Draw(t, fmt.Sprintf("d%d_%d", i, j)) {
					reps[j].Merge(deltas[len(deltas)-1].Clone())
				}
			}
		}
		m := func(ss ...*ORSet) *ORSet {
			out := NewORSet()
			for _, s := range ss {
				out.Merge(s.Clone())
			}
			return out
		}
		a, b, c := reps[0], reps[1], reps[2]
		if !m(a, b).Equal(m(b, a)) || !m(m(a, b), c).Equal(m(a, m(b, c))) || !m(a, a).Equal(m(a)) {
			t.Fatal("OR-set merge is not commutative, associative and idempotent")
		}
		// Any order and duplication of the deltas converges to the merged state.
		full := m(a, b, c)
		got := NewORSet()
		for _, d := range rapid.Permutation(append(deltas, deltas...)).Draw(t, "order") {
			got.Merge(d.Clone())
		}
		if !got.Equal(full) {
			t.Fatalf("deltas %v vs states %v", got.Elements(), full.Elements())
		}
	})
}

func TestORSetAddWinsAndRemoveNeverResurrects(t *testing.T) {
	a, b := NewORSet(), NewORSet()
	add := a.Add("ams", "x")
	b.Merge(add)
	rm := b.Remove("x")
	concurrent := a.Add("ams", "x") // a has not seen the remove
	a.Merge(rm)
	b.Merge(concurrent)
	if !a.Contains("x") || !b.Contains("x") {
		t.Fatal("concurrent add must win over remove")
	}
	// Remove everything, then redeliver the old adds: nothing comes back.
	a.Merge(b.Remove("x"))
	b.Merge(a)
	b.Merge(add)
	b.Merge(concurrent)
	if b.Contains("x") || a.Contains("x") {
		t.Fatal("removed element resurrected by redelivery")
	}
	if len(b.ctx.Cloud) != 0 {
		t.Fatalf("context did not compact: cloud %v", b.ctx.Cloud)
	}
}

func TestVClockCompare(t *testing.T) {
	cases := []struct {
		a, b VClock
		want Order
	}{
		{nil, nil, Equal},
		{VClock{"a": 1}, VClock{"a": 1}, Equal},
		{VClock{"a": 1}, VClock{"a": 2}, Before},
		{VClock{"a": 2, "b": 1}, VClock{"a": 2}, After},
		{VClock{"a": 1}, VClock{"b": 1}, Concurrent},
		{VClock{"a": 0}, nil, Equal},
	}
	for _, c := range cases {
		if got := c.a.Compare(c.b); got != c.want {
			t.Errorf("%v vs %v = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}

func TestWriterThatLostItsStateStillWritesNewerVersions(t *testing.T) {
	const sec = int64(1e9)
	old, other := NewMap(), NewMap()
	for i := range 5 {
		other.Merge(old.Set("ams", "k", []byte(fmt.Sprint(i)), 10*sec+int64(i), 0))
	}
	// ams restarts with an empty disk and writes again later.
	fresh := NewMap()
	d := fresh.Set("ams", "k", []byte("after-restart"), 20*sec, 0)
	other.Merge(d)
	r, _ := other.Get("k")
	if len(r.Versions) != 1 || string(r.Versions[0].Value) != "after-restart" {
		t.Fatalf("after restart: %+v", r.Versions)
	}
}
