package l1

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/meridian-edge/meridian/gateway/cache/tier"
)

// The threshold halves while only BigCache is full, doubles while only the
// pool is, balances demand per byte while both are, and stays within
// [LargeBodyMin, 2*LargeBody].
func TestSplitterAdjust(t *testing.T) {
	const mb = 1 << 20
	s := newSplitter(1024, 8192, 64*mb, 64*mb)
	if got := s.threshold.Load(); got != 16384 {
		t.Fatalf("initial threshold %d, want 2*LargeBody = 16384 (a fixed LargeBody)", got)
	}
	steps := []struct {
		name                           string
		inBC, inPool, fullBC, fullPool int64
		want                           int64
	}{
		{"nothing full", 1 * mb, 0, 0, 0, 16384},
		{"BigCache full", 1 * mb, 0, 5, 0, 8192},
		{"BigCache full", 1 * mb, 0, 5, 0, 4096},
		{"BigCache full", 1 * mb, 0, 5, 0, 2048},
		{"BigCache full", 1 * mb, 0, 5, 0, 1024},
		{"at the floor", 1 * mb, 0, 5, 0, 1024},
		{"both full, BigCache asked more", 2 * mb, 1 * mb, 5, 5, 1024}, // floor
		{"pool full", 1 * mb, 1 * mb, 0, 5, 2048},
		{"both full, pool asked more", 1 * mb, 2 * mb, 5, 5, 2048 + 2048/32 + 1},
		{"both full, balanced within 1/16", 1 * mb, 1*mb + mb/32, 5, 5, 2048 + 2048/32 + 1},
		{"both full, BigCache asked more", 2 * mb, 1 * mb, 5, 5, 2113 - 2113/32},
		{"pool full", 0, 1 * mb, 0, 5, 2 * 2047},
		{"pool full", 0, 1 * mb, 0, 5, 4 * 2047},
		{"pool full", 0, 1 * mb, 0, 5, 8 * 2047},
		{"pool full: capped", 0, 1 * mb, 0, 5, 16384},
	}
	for i, st := range steps {
		s.adjust(st.inBC, st.inPool, st.fullBC, st.fullPool)
		if got := s.threshold.Load(); got != st.want {
			t.Fatalf("step %d (%s): threshold %d, want %d", i, st.name, got, st.want)
		}
	}
	// Demand is per byte of capacity: a pool a quarter of BigCache's size
	// asked a third as much is the busier one.
	s = newSplitter(1024, 8192, 64*mb, 16*mb)
	s.threshold.Store(4096)
	s.adjust(3*mb, 1*mb, 1, 1)
	if got := s.threshold.Load(); got <= 4096 {
		t.Fatalf("pool asked more per byte, threshold went from 4096 to %d, want up", got)
	}
}

// Objects of LargeBody and more always go to the pool, below LargeBodyMin
// never; in between, the share of keys going grows as the threshold falls,
// and a key always goes the same way.
func TestSplitterRoutes(t *testing.T) {
	s := newSplitter(1024, 8192, 1<<30, 1<<30)
	keys := make([]string, 4000)
	for i := range keys {
		keys[i] = fmt.Sprintf("http://example.com/asset/%d.css", i)
	}
	share := func(size int64) float64 {
		n := 0
		for _, k := range keys {
			if s.toPool(k, size) {
				n++
			}
		}
		return float64(n) / float64(len(keys))
	}
	for _, th := range []int64{16384, 4096, 1024} {
		s.threshold.Store(th)
		if got := share(8192); got != 1 {
			t.Fatalf("threshold %d: %.2f of LargeBody-sized objects go to the pool, want all", th, got)
		}
		if got := share(1000); got != 0 {
			t.Fatalf("threshold %d: %.2f of objects below LargeBodyMin go to the pool, want none", th, got)
		}
	}
	s.threshold.Store(16384)
	if got := share(8191); got != 0 {
		t.Fatalf("threshold at 2*LargeBody: %.2f of smaller objects go to the pool, want none", got)
	}
	s.threshold.Store(4096)
	// Size s of threshold th goes for keys with factor (1+u)/2 <= s/th:
	// a share of 2s/th-1.
	for _, tc := range []struct {
		size int64
		want float64
	}{{2048, 0}, {3072, 0.5}, {3584, 0.75}, {4096, 1}} {
		if got := share(tc.size); got < tc.want-0.04 || got > tc.want+0.04 {
			t.Errorf("threshold 4096, size %d: %.3f of keys go to the pool, want about %.2f", tc.size, got, tc.want)
		}
	}
	for _, k := range keys[:50] {
		if a, b := s.toPool(k, 3072), s.toPool(k, 3072); a != b {
			t.Fatalf("key %s routed both ways", k)
		}
	}
}

// A small object stored in the pool behaves like any other: readable, its
// metadata updated in place (304, soft purge) without losing the body,
// seen by Scan (purges), and freed by Delete.
func TestSmallBodyInPool(t *testing.T) {
	c, err := New(Options{Bytes: 64 << 20, Admission: AdmitAlways})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.split.threshold.Store(c.split.floor) // as after BigCache filled up
	ctx := context.Background()
	body := bytes.Repeat([]byte("s"), 1500)
	w, err := c.Put(ctx, "small", &tier.Meta{Status: 200, URL: "http://x/small", Size: int64(len(body))})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(body)
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if sp := c.Split(); sp.PoolBodies != 1 {
		t.Fatalf("pool holds %d bodies, want the small one", sp.PoolBodies)
	}
	m, got, err := c.GetBytes("small")
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("get: %v, %d bytes", err, len(got))
	}
	m2 := m.Clone()
	m2.Invalidated = true
	if err := c.UpdateMeta(ctx, "small", m2); err != nil {
		t.Fatal(err)
	}
	if m3, b, err := c.GetBytes("small"); err != nil || !m3.Invalidated || !bytes.Equal(b, body) {
		t.Fatalf("after UpdateMeta: %v invalidated=%v %d bytes", err, m3 != nil && m3.Invalidated, len(b))
	}
	if sp := c.Split(); sp.PoolBodies != 1 {
		t.Fatalf("UpdateMeta left %d bodies in the pool, want 1", sp.PoolBodies)
	}
	seen := 0
	c.Scan(ctx, func(k string, m *tier.Meta) bool {
		if k == "small" && m.URL == "http://x/small" {
			seen++
		}
		return true
	})
	if seen != 1 {
		t.Fatalf("Scan saw the small pooled object %d times", seen)
	}
	if err := c.Delete(ctx, "small"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.GetBytes("small"); !errors.Is(err, tier.ErrNotFound) {
		t.Fatalf("after Delete: %v", err)
	}
	if sp := c.Split(); sp.PoolBodies != 0 || sp.PoolBytes != 0 {
		t.Fatalf("after Delete the pool holds %d bodies, %d bytes", sp.PoolBodies, sp.PoolBytes)
	}
	if n, by := c.Usage(); n != 0 || by != 0 {
		t.Fatalf("usage after Delete: %d objects %d bytes", n, by)
	}
}

// TinyLFU's bar is the frequency of recent victims. When it is above every
// newcomer (say, set by a burst of popular objects that has passed), nothing
// is admitted, so nothing is evicted and the bar never moved: the tier
// stayed at nine tenths of its budget for good. A run of refusals now
// lowers it until newcomers asked for a few times get in again.
func TestAdmissionBarDecays(t *testing.T) {
	c, err := New(Options{Bytes: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	body := bytes.Repeat([]byte("x"), 1000)
	offer := func(k string, asks int) error {
		for range asks {
			c.GetBytes(k)
		}
		w, err := c.Put(ctx, k, &tier.Meta{Status: 200, Size: int64(len(body))})
		if err != nil {
			return err
		}
		w.Write(body)
		return w.Commit()
	}
	// Fill to nine tenths: admitted without a look at the bar; the first
	// object past the mark meets the bar (one request: refused).
	for i := 0; ; i++ {
		err := offer(fmt.Sprint("fill", i), 1)
		if errors.Is(err, tier.ErrNotAdmitted) && c.live.Load()+1100 > c.budget*9/10 {
			break
		}
		if err != nil {
			t.Fatalf("filling to 90%%: %v", err)
		}
	}
	c.victimFreq.Store(15 * 16) // the highest estimate there is
	admitted := 0
	for i := 0; i < 2000 && admitted == 0; i++ {
		switch err := offer(fmt.Sprint("new", i), 3); {
		case err == nil:
			admitted = i + 1
		case !errors.Is(err, tier.ErrNotAdmitted):
			t.Fatal(err)
		}
	}
	if admitted == 0 {
		t.Fatalf("2000 newcomers asked for three times refused; bar still %d/16", c.victimFreq.Load())
	}
	// It took a run of refusals, not the first try: the bar still filters.
	if admitted < staleBar {
		t.Fatalf("newcomer admitted after %d tries, before the bar went stale (%d)", admitted, staleBar)
	}
	t.Logf("first newcomer admitted after %d refusals", admitted-1)
}
