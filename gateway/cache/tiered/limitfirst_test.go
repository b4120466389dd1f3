package tiered_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway/cache/l1"
	"github.com/meridian-edge/meridian/gateway/cache/l2"
	"github.com/meridian-edge/meridian/gateway/cache/tier"
	"github.com/meridian-edge/meridian/gateway/cache/tiered"
)

// TestLimitFirstKeepsLargeObjectsInTheLowerTiers: a site's first-tier limit
// sends its larger objects, of known or unknown length, to the lower tiers
// only (a body of unknown length leaves L1 when it outgrows the limit, and
// still completes in L2), leaves other sites alone, and stops promotions
// of such objects into L1. MaxObject is the largest any tier takes.
func TestLimitFirstKeepsLargeObjectsInTheLowerTiers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	t1, err := l1.New(l1.Options{Bytes: 8 << 20, MaxObject: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer t1.Close()
	t2, err := l2.Open(l2.Options{Dir: t.TempDir(), Bytes: 64 << 20, MaxObject: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer t2.Close()
	all, err := tiered.New(tiered.Options{Tiers: []tier.Tier{t1, t2}, PromoteAfter: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer all.Close()
	if got := all.MaxObject(); got != 4<<20 {
		t.Errorf("MaxObject %d, want L2's %d", got, 4<<20)
	}
	all.LimitFirst("s1", 10_000)

	store := func(site, key string, size int, known bool) []byte {
		t.Helper()
		m := meta(key)
		m.Site = site
		if known {
			m.Size = int64(size)
		}
		w, err := all.Put(ctx, key, m)
		if err != nil {
			t.Fatalf("%s: Put: %v", key, err)
		}
		b := body(key, size)
		for p := b; len(p) > 0; { // in pieces, as a fill writes
			n := min(len(p), 4096)
			w.Write(p[:n])
			p = p[n:]
		}
		if err := w.Commit(); err != nil {
			t.Fatalf("%s: Commit: %v", key, err)
		}
		if err := all.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		return b
	}
	inL1 := func(key string) bool {
		_, _, err := t1.GetBytes(key)
		return err == nil
	}
	for _, tc := range []struct {
		site, key string
		size      int
		known     bool
		wantL1    bool
	}{
		{"s1", "small", 5_000, true, true},
		{"s1", "known", 50_000, true, false},
		{"s1", "unknown", 50_000, false, false},
		{"s2", "other-site", 50_000, true, true}, // no limit for s2
	} {
		b := store(tc.site, tc.key, tc.size, tc.known)
		if got := inL1(tc.key); got != tc.wantL1 {
			t.Errorf("%s: in L1 %v, want %v", tc.key, got, tc.wantL1)
		}
		o, err := t2.Get(ctx, tc.key)
		if err != nil {
			t.Fatalf("%s: not in L2: %v", tc.key, err)
		}
		got, _ := io.ReadAll(o.Body)
		o.Body.Close()
		if !bytes.Equal(got, b) {
			t.Fatalf("%s: L2 holds %d bytes, want the %d stored", tc.key, len(got), len(b))
		}
		// Read through the composition twice: an L2 hit is promoted
		// (PromoteAfter 1) unless the limit forbids it.
		for range 2 {
			o, from, err := all.GetFrom(ctx, tc.key)
			if err != nil {
				t.Fatal(err)
			}
			io.ReadAll(o.Body)
			o.Body.Close()
			if from == "l1" && !tc.wantL1 {
				t.Errorf("%s: answered from L1 despite the limit", tc.key)
			}
		}
		if err := all.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if got := inL1(tc.key); got != tc.wantL1 {
			t.Errorf("%s after reads: in L1 %v, want %v", tc.key, got, tc.wantL1)
		}
	}

	// With the memory tier alone, over the limit is too large.
	one, err := tiered.New(tiered.Options{Tiers: []tier.Tier{t1}})
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	one.LimitFirst("s1", 10_000)
	m := meta("alone")
	m.Size = 50_000
	if _, err := one.Put(ctx, "alone", m); !errors.Is(err, tier.ErrTooLarge) {
		t.Errorf("Put over the limit in a memory-only composition: %v, want ErrTooLarge", err)
	}
	m.Size = -1
	w, err := one.Put(ctx, "alone", m)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(body("alone", 50_000))
	if err := w.Commit(); !errors.Is(err, tier.ErrTooLarge) {
		t.Errorf("Commit of a body that outgrew the limit: %v, want ErrTooLarge", err)
	}
}
