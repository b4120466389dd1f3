package cache

import "sync/atomic"

// purgeClock tells a fill whether what it is fetching was purged or
// invalidated since it began: such a fill neither stores its result (a
// purged object must never come back from a fetch in flight) nor takes new
// readers (a request after the purge must not get the purged body).
//
// It counts per site (purges are per site) and per key (an invalidation
// by a write names one key) rather than once for the cache, because the
// cache is shared by every site of a PoP: with one counter, each POST to
// any site's API made every fill of every other site in flight at that
// moment unstorable and unjoinable, so a busy site's writes cost the
// others their collapsing and their stores. Sites and keys share slots
// (FNV-1a): a collision only makes a fill skip its store as if purged,
// the safe side.
type purgeClock struct {
	sites [purgeSiteSlots]atomic.Uint64
	keys  [purgeKeySlots]atomic.Uint64
}

const (
	purgeSiteSlots = 256
	purgeKeySlots  = 4096
)

// at is the clock of key (a primary key of site) now. Each counter only
// grows, so their sum changes exactly when either does.
func (pc *purgeClock) at(site, key string) uint64 {
	return pc.sites[fnv32(site)%purgeSiteSlots].Load() + pc.keys[fnv32(key)%purgeKeySlots].Load()
}

// purgeSite moves the clock of every key of site.
func (pc *purgeClock) purgeSite(site string) { pc.sites[fnv32(site)%purgeSiteSlots].Add(1) }

// invalidate moves the clock of key.
func (pc *purgeClock) invalidate(key string) { pc.keys[fnv32(key)%purgeKeySlots].Add(1) }

// fnv32 is the FNV-1a hash of s, for spreading keys over slots. Clients
// can aim collisions (keys hold URLs), but a collision costs at most a
// lookup or a store, never a wrong answer.
func fnv32(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}
