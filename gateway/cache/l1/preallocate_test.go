package l1_test

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"testing"

	"github.com/meridian-edge/meridian/gateway/cache/l1"
	"github.com/meridian-edge/meridian/gateway/cache/tier"
)

// heapAlloc is the live heap after a collection.
func heapAlloc() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestPreallocatedTierServes runs a tier with Options.Preallocate as a PoP
// does (not only in a benchmark): the reservation it documents is made at
// New, and the tier then stores, replaces, updates, deletes, scans and
// evicts as any tier must, past its budget several times over, with every
// hit returning its own key's bytes.
func TestPreallocatedTierServes(t *testing.T) {
	const budget = 64 << 20 // BigCache gets half, the large-body pool half
	before := heapAlloc()
	c, err := l1.New(l1.Options{Bytes: budget, Preallocate: true, Admission: l1.AdmitAlways})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// BigCache's queues are reserved at their full size: its half of the
	// budget is live heap from the start (see Options.Preallocate).
	if grew := heapAlloc() - before; grew < budget/2*3/4 {
		t.Errorf("New with Preallocate reserved %d KiB; want BigCache's %d KiB up front", grew>>10, budget/2>>10)
	}
	runtime.KeepAlive(c)

	ctx := t.Context()
	sizes := []int{10, 700, 5000, 20 << 10, 200 << 10} // inline and large bodies
	key := func(round, i int) string { return fmt.Sprintf("r%d-k%d", round, i) }
	check := func(k string, size int) {
		t.Helper()
		m, b, err := c.GetBytes(k)
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		if !bytes.Equal(b, pattern(k, size)) || m.URL != "http://x/"+k {
			t.Fatalf("%s: got another object's bytes or metadata (%d bytes, URL %s)", k, len(b), m.URL)
		}
	}
	for i, size := range sizes {
		if err := putSized(t, c, key(0, i), pattern(key(0, i), size), int64(size)); err != nil {
			t.Fatalf("put %d bytes: %v", size, err)
		}
		check(key(0, i), size)
	}
	// Replace, update the metadata of, and delete objects.
	k := key(0, 1)
	if err := putSized(t, c, k, pattern(k, 900), 900); err != nil {
		t.Fatal(err)
	}
	check(k, 900)
	m, _, _ := c.GetBytes(k)
	m2 := m.Clone()
	m2.Invalidated = true
	if err := c.UpdateMeta(ctx, k, m2); err != nil {
		t.Fatal(err)
	}
	if m, b, err := c.GetBytes(k); err != nil || !m.Invalidated || !bytes.Equal(b, pattern(k, 900)) {
		t.Fatalf("after UpdateMeta: err %v", err)
	}
	if err := c.Delete(ctx, key(0, 3)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.GetBytes(key(0, 3)); !errors.Is(err, tier.ErrNotFound) {
		t.Fatalf("deleted object: %v", err)
	}
	n := 0
	if err := c.Scan(ctx, func(string, *tier.Meta) bool { n++; return true }); err != nil || n != len(sizes)-1 {
		t.Fatalf("Scan saw %d objects (err %v), want %d", n, err, len(sizes)-1)
	}

	// Three budgets' worth of objects: eviction within the reserved queues.
	written := 0
	round := 1
	for ; written < 3*budget; round++ {
		for i, size := range sizes {
			if err := putSized(t, c, key(round, i), pattern(key(round, i), size), int64(size)); err != nil {
				t.Fatalf("round %d put %d bytes: %v", round, size, err)
			}
			written += size
		}
	}
	if _, used := c.Usage(); used > budget {
		t.Errorf("usage %d bytes over the %d budget", used, budget)
	}
	for i, size := range sizes { // the newest round is all there
		check(key(round-1, i), size)
	}
	found := 0
	for r := 0; r < round; r++ {
		for i, size := range sizes {
			k := key(r, i)
			if _, b, err := c.GetBytes(k); err == nil {
				found++
				if !bytes.Equal(b, pattern(k, size)) && !(r == 0 && i == 1 && bytes.Equal(b, pattern(k, 900))) {
					t.Fatalf("%s: another object's bytes after eviction", k)
				}
			}
		}
	}
	if found < len(sizes) || found == round*len(sizes) {
		t.Errorf("%d of %d objects readable after writing %d MiB into %d MiB", found, round*len(sizes), written>>20, budget>>20)
	}
}
