package crdt

import (
	"math"
	"sort"
)

// PNPair is one node's share of a PN-counter: everything it ever added (P) and
// subtracted (N). Both only grow, so merging takes the maximum of each.
//
// A share written with a TTL also carries Birth and Exp (Unix ns, writer's
// clock). Exp is when the share stops keeping the counter alive; Birth names
// the incarnation of the counter the share belongs to: a counter that expired
// and is added to again starts a new incarnation, and shares of an older one
// no longer count. One node's successive shares are ordered by (Birth, Exp)
// and then by P and N, so merging keeps the newest. A share without a TTL
// has Exp 0, which never expires; old records (no Birth, no Exp) are such
// shares, so counters written before TTLs existed behave as before.
type PNPair struct {
	P     uint64 `json:"p,omitempty"`
	N     uint64 `json:"n,omitempty"`
	Birth int64  `json:"b,omitempty"`
	Exp   int64  `json:"e,omitempty"`
}

// expKey orders expiries with 0 (never) above every time.
func expKey(e int64) int64 {
	if e == 0 {
		return math.MaxInt64
	}
	return e
}

// compareLife orders two shares of one node by (Birth, Exp): -1, 0 or 1.
func compareLife(p, q PNPair) int {
	switch {
	case p.Birth != q.Birth:
		if p.Birth < q.Birth {
			return -1
		}
		return 1
	case expKey(p.Exp) != expKey(q.Exp):
		if expKey(p.Exp) < expKey(q.Exp) {
			return -1
		}
		return 1
	}
	return 0
}

// Expiring reports whether p was written with a TTL (or after one: a share
// that carries life-cycle fields must be sent with them).
func (p PNPair) Expiring() bool { return p.Birth != 0 || p.Exp != 0 }

// PNCounter is a counter that can go up and down. Each node only changes its
// own pair; the value is the sum of P minus the sum of N over the pairs that
// count. The delta of an Add is the writer's own pair.
//
// With TTLs: the counter lives while any pair's Exp is ahead (a pair without
// Exp keeps it alive for good), so its expiry is the maximum of the expiries
// seen and a later add with a TTL extends it. A pair counts unless it expired
// no later than the birth of the newest incarnation (Exp <= max Birth): such
// a pair belongs to an incarnation that was dead when the newest began, so
// Merge drops it, and it can never count again.
type PNCounter map[string]PNPair

// maxBirth is the birth of the newest incarnation among c's pairs.
func (c PNCounter) maxBirth() int64 {
	var b int64
	for _, p := range c {
		b = max(b, p.Birth)
	}
	return b
}

// scan reads c in one pass (on a rate limiter's path: a pass per question
// was half its cost): the newest birth, the expiry (0: never or empty), and
// the sum of all pairs, which is the value when mb is 0 (no incarnation
// has retired anything).
func (c PNCounter) scan() (mb, exp, sum int64) {
	permanent := false
	for _, p := range c {
		mb = max(mb, p.Birth)
		if p.Exp == 0 {
			permanent = true
		}
		exp = max(exp, p.Exp)
		sum += int64(p.P) - int64(p.N)
	}
	if permanent {
		exp = 0
	}
	return mb, exp, sum
}

// counts reports whether p counts in a counter whose newest birth is mb.
func counts(p PNPair, mb int64) bool { return p.Exp == 0 || p.Exp > mb }

// expiring reports whether a pair of c has a life.
func (c PNCounter) expiring() bool {
	for _, p := range c {
		if p.Expiring() {
			return true
		}
	}
	return false
}

// Expires returns the counter's expiry (Unix ns): the latest Exp of its
// pairs, or 0 if it never expires (no TTL, or a pair without one). An empty
// counter returns 0.
func (c PNCounter) Expires() int64 {
	var e int64
	for _, p := range c {
		if p.Exp == 0 {
			return 0
		}
		e = max(e, p.Exp)
	}
	return e
}

// LiveAt reports whether c exists at now (Unix ns): it has a pair and has
// not expired.
func (c PNCounter) LiveAt(now int64) bool {
	if len(c) == 0 {
		return false
	}
	e := c.Expires()
	return e == 0 || e > now
}

// Value returns the counter's current value, ignoring expiry (see ValueAt).
func (c PNCounter) Value() int64 {
	mb, _, sum := c.scan()
	return c.value(mb, sum)
}

// value is Value given scan's mb and sum.
func (c PNCounter) value(mb, sum int64) int64 {
	if mb == 0 {
		return sum
	}
	var v int64
	for _, p := range c {
		if counts(p, mb) {
			v += int64(p.P) - int64(p.N)
		}
	}
	return v
}

// ValueAt returns the value at now (Unix ns): 0 once the counter expired.
func (c PNCounter) ValueAt(now int64) int64 {
	if len(c) == 0 {
		return 0
	}
	mb, exp, sum := c.scan()
	if exp != 0 && exp <= now {
		return 0
	}
	return c.value(mb, sum)
}

// Add adds delta (which may be negative) as node and returns the delta form:
// node's whole pair, which is idempotent to merge. The pair does not expire.
func (c PNCounter) Add(node string, delta int64) PNCounter {
	return c.AddAt(node, delta, 0, 0)
}

// AddAt is Add at wall time now (Unix ns) with a TTL: exp is the Unix ns
// time the pair stops keeping the counter alive (0: never, which makes the
// counter permanent). Adding to a counter that has expired at now starts a
// new incarnation at delta; adding to a live one joins its newest
// incarnation and extends the pair's expiry to at least exp.
func (c PNCounter) AddAt(node string, delta, now, exp int64) PNCounter {
	d, _ := c.add(node, delta, now, exp)
	return d
}

// add is AddAt that also returns the value at now after the add.
func (c PNCounter) add(node string, delta, now, exp int64) (PNCounter, int64) {
	reborn := false
	mb, cexp, sum := c.scan()
	if len(c) > 0 && cexp != 0 && cexp <= now {
		clear(c) // dead: what it held no longer counts anywhere
		reborn = true
		mb, sum = 0, 0
	}
	p, had := c[node]
	fresh := false
	switch {
	case len(c) == 0:
		// A new incarnation. Its birth is this moment, after the expiry of
		// everything an old one held, so their pairs stop counting. A
		// counter that never had a TTL keeps birth 0: the old format.
		p, fresh = PNPair{}, true
		if exp != 0 || reborn {
			p.Birth = now
		}
	case !had || !counts(p, mb):
		// Joining the live incarnation (or rejoining after this node's own
		// pair stopped counting): a fresh pair born with it.
		p, fresh = PNPair{Birth: mb}, true
	}
	if delta >= 0 {
		p.P += uint64(delta)
	} else {
		p.N += uint64(-delta)
	}
	switch {
	case exp == 0:
		p.Exp = 0 // never: the counter is permanent from now on
	case fresh || p.Exp != 0:
		// Exp only moves forward and stays after Birth, so that this node's
		// successive pairs are ordered by (Birth, Exp). A pair that is
		// already permanent stays so.
		p.Exp = max(p.Exp, exp, p.Birth+1)
	}
	c[node] = p
	if mb == 0 && p.Birth == 0 && (p.Exp == 0 || !reborn) {
		// No incarnation retired anything before or by this add.
		return PNCounter{node: p}, sum + delta
	}
	return PNCounter{node: p}, c.ValueAt(now)
}

// mergePair joins two shares of one node: the later life wins whole; the
// same life takes the maximum of each total.
func mergePair(p, q PNPair) PNPair {
	switch compareLife(p, q) {
	case -1:
		return q
	case 1:
		return p
	}
	p.P, p.N = max(p.P, q.P), max(p.N, q.N)
	return p
}

// Merge joins o into c (per node, the newer share; within one share the
// maximum of each total), drops pairs that no longer count, and reports
// whether c changed.
//
// Pairs that do not count are dropped (and never added): everything such a
// pair superseded expired even earlier, so it is refused too when it
// arrives, and dropping never lets an older share back in.
func (c PNCounter) Merge(o PNCounter) bool {
	// Pairs without a life (counters without TTL, old records) always
	// count and retire nothing: merging only those needs neither birth
	// scan nor the counts check, as before TTLs (a rate limiter's path).
	lives := o.expiring()
	var old, mb int64 // the newest birth before and after the join
	if lives {
		old = c.maxBirth()
		mb = max(old, o.maxBirth())
	}
	changed := false
	for n, q := range o {
		if q == (PNPair{}) {
			continue
		}
		p, had := c[n]
		m := q // an absent pair is below every pair, a permanent one too
		if had {
			m = mergePair(p, q)
		}
		switch {
		case lives && !counts(m, mb):
			if had {
				delete(c, n)
				changed = true
			}
		case !had || m != p:
			c[n] = m
			changed = true
		}
	}
	if mb > old { // pairs already held counted at old; only a newer birth retires some
		for n, p := range c {
			if !counts(p, mb) {
				delete(c, n)
				changed = true
			}
		}
	}
	return changed
}

// Equal reports whether c and o hold the same state.
func (c PNCounter) Equal(o PNCounter) bool {
	if len(c) != len(o) {
		return false
	}
	for n, p := range c {
		if q, ok := o[n]; !ok || q != p {
			return false
		}
	}
	return true
}

// Counters is a map of PN-counters by key; it is its own delta form.
type Counters map[string]PNCounter

// Add adds delta to key as node and returns the new value and the delta.
// The counter does not expire.
func (cs Counters) Add(node, key string, delta int64) (int64, Counters) {
	return cs.AddAt(node, key, delta, 0, 0)
}

// AddAt adds delta to key as node at wall time now with expiry exp (Unix ns,
// 0: never; see PNCounter.AddAt) and returns the value at now and the delta.
// Adding 0 with a TTL still extends the expiry.
func (cs Counters) AddAt(node, key string, delta, now, exp int64) (int64, Counters) {
	if delta == 0 && exp == 0 {
		return cs.ValueAt(key, now), Counters{}
	}
	c := cs[key]
	if c == nil {
		c = PNCounter{}
		cs[key] = c
	}
	d, v := c.add(node, delta, now, exp)
	return v, Counters{key: d}
}

// Value returns the value of key's counter (0 if absent), ignoring expiry.
func (cs Counters) Value(key string) int64 { return cs[key].Value() }

// ValueAt returns the value of key's counter at now (0 if absent or expired).
func (cs Counters) ValueAt(key string, now int64) int64 { return cs[key].ValueAt(now) }

// Merge joins o into cs and returns the changed keys, sorted.
func (cs Counters) Merge(o Counters) []string {
	return cs.MergeAt(o, 0)
}

// MergeAt is Merge with an expiry horizon eh (Unix ns): a counter whose
// expiry is before eh after the merge is dead and is dropped (and not
// added if it was absent), so a late copy of an expired counter cannot
// bring it back.
func (cs Counters) MergeAt(o Counters, eh int64) []string {
	var changed []string
	for k, oc := range o {
		if len(oc) == 0 {
			continue
		}
		c, had := cs[k]
		if !had {
			c = PNCounter{}
		}
		ch := c.Merge(oc)
		if c.deadAt(eh) {
			if had {
				delete(cs, k)
				changed = append(changed, k)
			}
			continue
		}
		if !had {
			cs[k] = c
		}
		if ch {
			changed = append(changed, k)
		}
	}
	sort.Strings(changed)
	return changed
}

// deadAt reports whether c is gone at expiry horizon eh: empty, or expired
// before it.
func (c PNCounter) deadAt(eh int64) bool {
	e := c.Expires()
	return len(c) == 0 || (e != 0 && e < eh)
}

// Expire drops the counters whose expiry is before eh (Unix ns) and returns
// their keys, sorted.
func (cs Counters) Expire(eh int64) []string {
	var dropped []string
	for k, c := range cs {
		if c.deadAt(eh) {
			delete(cs, k)
			dropped = append(dropped, k)
		}
	}
	sort.Strings(dropped)
	return dropped
}

// Clone returns a deep copy of cs.
func (cs Counters) Clone() Counters {
	out := make(Counters, len(cs))
	for k, c := range cs {
		cc := make(PNCounter, len(c))
		for n, p := range c {
			cc[n] = p
		}
		out[k] = cc
	}
	return out
}

// Equal reports whether cs and o hold the same state.
func (cs Counters) Equal(o Counters) bool {
	if len(cs) != len(o) {
		return false
	}
	for k, c := range cs {
		if !c.Equal(o[k]) {
			return false
		}
	}
	return true
}
