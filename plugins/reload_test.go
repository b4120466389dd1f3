package plugins_test

import (
	"context"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"

	"github.com/meridian-edge/meridian/plugins"
	"github.com/meridian-edge/meridian/plugins/abi"
)

// withCustomSection returns a different but equivalent module (new hash).
func withCustomSection(b []byte, name string) []byte {
	sec := append(append([]byte{byte(len(name))}, name...), 0x01) // one payload byte
	return append(append(append([]byte(nil), b...), 0x00, byte(len(sec))), sec...)
}

// rssBytes reads the resident set size, which includes wazero's mmapped
// machine code (outside the Go heap).
func rssBytes(t *testing.T) uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	pages, _ := strconv.ParseUint(f[1], 10, 64)
	return pages * uint64(os.Getpagesize())
}

func heapAndRSS(t *testing.T) (uint64, uint64) {
	debug.FreeOSMemory() // GC and return freed pages, so RSS shows what is still held
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse, rssBytes(t)
}

// TestReloadHasBoundedMemory swaps a plugin's version 200 times (a WAT
// plugin) and 30 times (the 2.7 MB Go headers plugin, ~10 MB of machine code
// per version) with a request in flight across each swap, and shows that
// memory stays bounded: each old version (wazero runtime, compiled code,
// instances, pool, metric series) is freed.
func TestReloadHasBoundedMemory(t *testing.T) {
	for _, c := range []struct {
		name    string
		v1, v2  []byte
		reloads int
	}{
		{"wat", wasm["wat/continue"], withCustomSection(wasm["wat/continue"], "v2"), 200},
		{"go", wasm["headers"], withCustomSection(wasm["headers"], "v2"), 30},
	} {
		t.Run(c.name, func(t *testing.T) { reload(t, c.v1, c.v2, c.reloads) })
	}
}

func reload(t *testing.T, v1, v2 []byte, reloads int) {
	h, reg := newHost(t, nil)
	ctx := context.Background()
	a, err := h.Add(ctx, "s", "p", v1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := h.Add(ctx, "s", "p", v2)
	if err != nil || b.Version != 2 {
		t.Fatalf("second version: %+v %v", b, err)
	}
	chain := &plugins.Chain{Site: "s", Entries: []plugins.Entry{{Plugin: "p"}}}
	var baseHeap, baseRSS uint64
	base := min(19, reloads/3) // measure from here, after caches and pools settled
	var act abi.Actions
	for i := range reloads {
		x := h.Begin(chain, plugins.GeoInfo{}) // in flight across the swap
		if i > 0 {
			if err := x.Request(ctx, 0, req(), &act); err != nil {
				t.Fatalf("reload %d: request before swap: %v", i, err)
			}
		}
		v := a.Version
		if i%2 == 1 {
			v = b.Version
		}
		if err := h.Activate(ctx, "s", "p", v); err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
		y := h.Begin(chain, plugins.GeoInfo{})
		if err := y.Request(ctx, 0, req(), &act); err != nil {
			t.Fatalf("reload %d: request after swap: %v", i, err)
		}
		y.Close()
		x.Close()
		if i == base {
			baseHeap, baseRSS = heapAndRSS(t)
		}
	}
	heap, rss := heapAndRSS(t)
	t.Logf("after %d reloads: heap %d KiB, rss %d KiB; after %d: heap %d KiB, rss %d KiB",
		base+1, baseHeap>>10, baseRSS>>10, reloads, heap>>10, rss>>10)
	// reloads-base more versions were compiled, instantiated and retired; a
	// leak of one wazero runtime or one compiled module per version would
	// exceed these bounds.
	if heap > baseHeap+8<<20 {
		t.Errorf("Go heap grew from %d to %d KiB over %d reloads", baseHeap>>10, heap>>10, reloads-base)
	}
	// RSS catches what the Go heap does not hold: wazero's compiled code
	// and linear memories are mapped outside it (not under -race: see
	// raceEnabled).
	if !raceEnabled && rss > baseRSS+48<<20 {
		t.Errorf("RSS grew from %d to %d KiB over %d reloads", baseRSS>>10, rss>>10, reloads-base)
	}
	if n := counter(t, reg, "meridian_plugin_instances", map[string]string{"state": "live"}); n > 2 {
		t.Errorf("only the active version may hold instances, %v live", n)
	}
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "meridian_plugin_calls_total" && len(mf.GetMetric()) > 2 {
			t.Errorf("retired versions' series must be deleted: %d series", len(mf.GetMetric()))
		}
	}
}
