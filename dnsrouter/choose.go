package dnsrouter

import (
	"slices"
	"sync"

	"github.com/meridian-edge/meridian/dnsrouter/geo"
	"github.com/meridian-edge/meridian/dnsrouter/health"
	"github.com/meridian-edge/meridian/dnsrouter/region"
)

// maxAnswers bounds Options.Answers so that a choice fits a fixed array.
const maxAnswers = 16

// maxRankings bounds the lazily filled ranking cache (one entry per
// distinct client location, e.g. per mmdb record).
const maxRankings = 1 << 20

// ranking is the precomputed, distance-ordered list of PoPs for one client
// location. It is immutable once built; the hot path only reads it.
type ranking struct {
	order []uint16  // PoP indices, nearest first
	dist  []float64 // km, parallel to order
}

// rankings caches one ranking per client location. Locations known up
// front (the CIDR table's rows, the default location) are computed when the
// view is built; others (mmdb records) on first sight.
type rankings struct {
	pops []geo.Location
	mu   sync.RWMutex
	m    map[geo.Location]*ranking
}

func newRankings(pops []geo.Location, known []geo.Location) *rankings {
	r := &rankings{pops: pops, m: make(map[geo.Location]*ranking, len(known))}
	for _, l := range known {
		r.m[l] = rankFor(pops, l)
	}
	return r
}

// lookup returns the ranking for l, computing and caching it on a miss.
func (r *rankings) lookup(l geo.Location) *ranking {
	r.mu.RLock()
	rk := r.m[l]
	r.mu.RUnlock()
	if rk != nil {
		return rk
	}
	rk = rankFor(r.pops, l)
	r.mu.Lock()
	if len(r.m) < maxRankings {
		r.m[l] = rk
	}
	r.mu.Unlock()
	return rk
}

func rankFor(pops []geo.Location, l geo.Location) *ranking {
	rk := &ranking{order: make([]uint16, len(pops)), dist: make([]float64, len(pops))}
	d := make([]float64, len(pops))
	for i, p := range pops {
		rk.order[i] = uint16(i)
		d[i] = region.Distance(l.Lat, l.Lon, p.Lat, p.Lon)
	}
	// Stable: equal distances keep configuration order, so ties are
	// deterministic and ops can express a preference by order.
	slices.SortStableFunc(rk.order, func(a, b uint16) int {
		switch {
		case d[a] < d[b]:
			return -1
		case d[a] > d[b]:
			return 1
		}
		return 0
	})
	for i, idx := range rk.order {
		rk.dist[i] = d[idx]
	}
	return rk
}

// choice is the outcome of choose; a value type so that choosing never
// allocates.
type choice struct {
	pops     [maxAnswers]uint16
	n        int
	failOpen bool   // no PoP was served; the nearest were answered anyway
	spilled  bool   // the nearest served PoP shed this query
	shedder  uint16 // which PoP shed it, when spilled
}

// choose picks up to n PoPs for a client whose ranking is rk, given the
// health snapshot, among the PoPs allowed marks (nil: all; see
// Zone.PoPs). ids are the view's PoP ids, used to make sure the snapshot
// matches the view during a reload. rnd drives the capacity spill-over.
// It does not allocate.
func choose(rk *ranking, ids []string, snap *health.Snapshot, allowed []bool, n int, rnd uint64) choice {
	var c choice
	if n > maxAnswers {
		n = maxAnswers
	}
	if n > len(rk.order) {
		n = len(rk.order)
	}
	out := func(i uint16) bool { return allowed != nil && !allowed[i] }
	st := func(i uint16) *health.State {
		if snap == nil || int(i) >= len(snap.PoPs) || snap.PoPs[i].ID != ids[i] {
			return nil // reload in flight: treat as served, unknown load
		}
		return &snap.PoPs[i]
	}
	served := func(i uint16) bool {
		s := st(i)
		return s == nil || s.Served
	}
	// The first answer: the nearest served PoP, unless it is over its
	// capacity threshold and this query falls into the share it sheds; then
	// the next one, with the same rule.
	first := -1
	firstServed := -1
	for k, i := range rk.order {
		if out(i) || !served(i) {
			continue
		}
		if firstServed < 0 {
			firstServed = k
		}
		keep := 1.0
		if s := st(i); s != nil {
			keep = s.Keep
		}
		if keep >= 1 || unit(rnd, k) < keep {
			first = k
			break
		}
		if !c.spilled {
			c.spilled, c.shedder = true, i
		}
	}
	if first < 0 {
		first = firstServed // every served PoP is full: the nearest of them
		c.spilled = false
	}
	if first < 0 {
		// Fail open: nothing is served, so answer by distance alone rather
		// than SERVFAIL; a possibly-down PoP beats no answer.
		c.failOpen = true
		for _, i := range rk.order {
			if c.n >= n {
				break
			}
			if !out(i) {
				c.pops[c.n] = i
				c.n++
			}
		}
		return c
	}
	c.pops[0] = rk.order[first]
	c.n = 1
	for k, i := range rk.order {
		if c.n >= n {
			break
		}
		if k == first || out(i) || !served(i) {
			continue
		}
		c.pops[c.n] = i
		c.n++
	}
	return c
}

// unit derives a uniform number in [0,1) from rnd for candidate k
// (splitmix64), so one random draw per query serves every candidate.
func unit(rnd uint64, k int) float64 {
	z := rnd + uint64(k+1)*0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	z ^= z >> 31
	return float64(z>>11) / (1 << 53)
}
