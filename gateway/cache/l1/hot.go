package l1

import (
	"sync"
	"sync/atomic"

	"github.com/meridian-edge/meridian/gateway/cache/tier"
)

// hotOverhead approximates a decoded entry beside its bytes: the Meta, its
// header map and value slices.
const hotOverhead = 512

// hotEntries keeps the decoded form of the most requested objects, so that
// a hit on one skips BigCache's copy of the entry and the decoding of its
// metadata (about a fifth of the CPU of a 1 KiB hit, measured with pprof on
// bench/cacheproxy). It is a memo, not a store: small (Options-independent,
// a sixty-fourth of the budget, at most 16 MiB), and every removal of a key
// from BigCache (Delete, replacement, UpdateMeta, purge, eviction) drops the
// key here first, through the tier's removal callback.
//
// A lookup that decoded an entry may only add it if no removal happened
// since it read BigCache (removals counts them): otherwise a purge racing
// with the lookup could leave the purged version memoised.
type hotEntries struct {
	mu       sync.RWMutex
	m        map[string]hotEntry
	used     int64
	budget   int64
	removals atomic.Uint64
}

type hotEntry struct {
	meta *tier.Meta
	body []byte
	cost int64
}

func newHotEntries(budget int64) *hotEntries {
	return &hotEntries{m: map[string]hotEntry{}, budget: budget}
}

func (h *hotEntries) get(key string) (hotEntry, bool) {
	h.mu.RLock()
	e, ok := h.m[key]
	h.mu.RUnlock()
	return e, ok
}

// add memoises a decoded entry read while removals was seen at since.
func (h *hotEntries) add(key string, e hotEntry, since uint64) {
	if e.cost > h.budget/8 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.removals.Load() != since {
		return
	}
	if old, ok := h.m[key]; ok {
		h.used -= old.cost
	}
	for k, v := range h.m { // map order is random enough to pick victims
		if h.used+e.cost <= h.budget {
			break
		}
		delete(h.m, k)
		h.used -= v.cost
	}
	h.m[key] = e
	h.used += e.cost
}

// remove drops key; the tier calls it for every removal from BigCache.
func (h *hotEntries) remove(key string) {
	h.removals.Add(1)
	h.mu.Lock()
	if old, ok := h.m[key]; ok {
		delete(h.m, key)
		h.used -= old.cost
	}
	h.mu.Unlock()
}
