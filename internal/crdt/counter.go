package crdt

import "sort"

// PNPair is one node's share of a PN-counter: everything it ever added (P) and
// subtracted (N). Both only grow, so merging takes the maximum of each.
type PNPair struct {
	P uint64 `json:"p,omitempty"`
	N uint64 `json:"n,omitempty"`
}

// PNCounter is a counter that can go up and down. Each node only changes its
// own pair; the value is the sum of P minus the sum of N over all nodes. The
// delta of an Add is the writer's own pair.
type PNCounter map[string]PNPair

// Value returns the counter's current value.
func (c PNCounter) Value() int64 {
	var v int64
	for _, p := range c {
		v += int64(p.P) - int64(p.N)
	}
	return v
}

// Add adds delta (which may be negative) as node and returns the delta form:
// node's whole pair, which is idempotent to merge.
func (c PNCounter) Add(node string, delta int64) PNCounter {
	p := c[node]
	if delta >= 0 {
		p.P += uint64(delta)
	} else {
		p.N += uint64(-delta)
	}
	c[node] = p
	return PNCounter{node: p}
}

// Merge joins o into c (pointwise maximum) and reports whether c changed.
func (c PNCounter) Merge(o PNCounter) bool {
	changed := false
	for n, q := range o {
		if q == (PNPair{}) {
			continue
		}
		p := c[n]
		if q.P > p.P {
			p.P, changed = q.P, true
		}
		if q.N > p.N {
			p.N, changed = q.N, true
		}
		c[n] = p
	}
	return changed
}

// Equal reports whether c and o hold the same state.
func (c PNCounter) Equal(o PNCounter) bool {
	if len(c) != len(o) {
		return false
	}
	for n, p := range c {
		if o[n] != p {
			return false
		}
	}
	return true
}

// Counters is a map of PN-counters by key; it is its own delta form.
type Counters map[string]PNCounter

// Add adds delta to key as node and returns the new value and the delta.
func (cs Counters) Add(node, key string, delta int64) (int64, Counters) {
	if delta == 0 {
		return cs.Value(key), Counters{}
	}
	c := cs[key]
	if c == nil {
		c = PNCounter{}
		cs[key] = c
	}
	d := c.Add(node, delta)
	return c.Value(), Counters{key: d}
}

// Value returns the value of key's counter (0 if absent).
func (cs Counters) Value(key string) int64 { return cs[key].Value() }

// Merge joins o into cs and returns the changed keys, sorted.
func (cs Counters) Merge(o Counters) []string {
	var changed []string
	for k, oc := range o {
		if oc.Value() == 0 && len(oc) == 0 {
			continue
		}
		c := cs[k]
		if c == nil {
			c = PNCounter{}
			cs[k] = c
		}
		if c.Merge(oc) {
			changed = append(changed, k)
		}
	}
	sort.Strings(changed)
	return changed
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
