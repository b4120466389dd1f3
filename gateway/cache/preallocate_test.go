package cache_test

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/meridian-edge/meridian/gateway/cache"
)

// TestPreallocatedL1Serves: a cache made with L1Preallocate, as a PoP
// makes it, reserves its L1 queues up front (the option reaches package
// l1) and answers misses, fast-path hits and net/http hits with each
// object's own body.
func TestPreallocatedL1Serves(t *testing.T) {
	const l1Bytes = 64 << 20 // BigCache's queues get half
	// Bytes allocated so far, not the heap in use: memory an earlier
	// test's leftovers (a pool's victims, a goroutine ending) free during
	// the measurement would hide part of the reservation from HeapAlloc
	// (CI saw 19 of 32 MiB once).
	allocated := func() uint64 {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.TotalAlloc
	}
	before := allocated()
	e := newEnv(t, fastOrigin, envOpt{opts: cache.Options{L1Bytes: l1Bytes, L1Preallocate: true}})
	if grew := allocated() - before; grew < l1Bytes/2*3/4 {
		t.Errorf("a cache with L1Preallocate reserved %d KiB; want L1's queues (%d KiB) up front", grew>>10, l1Bytes/2>>10)
	}
	paths := make([]string, 50)
	for i := range paths {
		paths[i] = fmt.Sprintf("/p%d", i)
		if r := e.get(paths[i]); r.body != "body of "+paths[i] || !strings.Contains(r.cs(), "fwd=uri-miss") {
			t.Fatalf("miss %s: %q %q", paths[i], r.body, r.cs())
		}
	}
	settle(t, e)
	for _, p := range paths {
		if r := e.get(p); r.body != "body of "+p || !strings.Contains(r.cs(), "hit") {
			t.Fatalf("hit %s: %q %q", p, r.body, r.cs())
		}
		// A Range request: a hit answered by net/http.
		if r := e.get(p, "Range", "bytes=0-3"); r.status != 206 || r.body != "body" || !strings.Contains(r.cs(), "hit") {
			t.Fatalf("ranged hit %s: %d %q %q", p, r.status, r.body, r.cs())
		}
	}
	if n := fastCount(e, "served"); n != len(paths) {
		t.Errorf("fast path served %d hits, want %d", n, len(paths))
	}
}
