package crdt

import "sort"

// Dot names one add operation: the Seq-th event of Node.
type Dot struct {
	Node string
	Seq  uint64
}

// Context is a causal context: the set of dots a replica has seen, stored as a
// vector clock for the contiguous prefix of each node plus a cloud of dots
// seen out of order. Removed elements leave only their dots here, so an OR-set
// needs no tombstones: a dot in the context but not in the entries was removed
// and can never come back, and the context compacts into the vector clock as
// gaps fill.
type Context struct {
	VC    VClock
	Cloud map[Dot]struct{}
}

// Has reports whether d has been seen.
func (c Context) Has(d Dot) bool {
	if d.Seq <= c.VC[d.Node] {
		return true
	}
	_, ok := c.Cloud[d]
	return ok
}

func (c *Context) add(d Dot) {
	if c.Has(d) {
		return
	}
	if c.VC == nil {
		c.VC = VClock{}
	}
	if c.Cloud == nil {
		c.Cloud = map[Dot]struct{}{}
	}
	c.Cloud[d] = struct{}{}
	c.compact()
}

// compact folds cloud dots that extend a node's contiguous prefix into VC.
func (c *Context) compact() {
	for moved := true; moved; {
		moved = false
		for d := range c.Cloud {
			switch {
			case d.Seq <= c.VC[d.Node]:
				delete(c.Cloud, d)
			case d.Seq == c.VC[d.Node]+1:
				c.VC[d.Node] = d.Seq
				delete(c.Cloud, d)
				moved = true
			}
		}
	}
}

func (c *Context) merge(o Context) {
	if c.VC == nil {
		c.VC = VClock{}
	}
	if c.Cloud == nil {
		c.Cloud = map[Dot]struct{}{}
	}
	for n, s := range o.VC {
		if s > c.VC[n] {
			c.VC[n] = s
		}
	}
	for d := range o.Cloud {
		c.Cloud[d] = struct{}{}
	}
	c.compact()
}

// ORSet is an add-wins observed-remove set of strings. A remove cancels only
// the adds it has seen, so an add concurrent with a remove survives. Its delta
// form is itself: Add and Remove return small ORSets to ship.
type ORSet struct {
	entries map[Dot]string
	ctx     Context
}

// NewORSet returns an empty set.
func NewORSet() *ORSet { return &ORSet{entries: map[Dot]string{}} }

// Contains reports whether e is in the set.
func (s *ORSet) Contains(e string) bool {
	for _, v := range s.entries {
		if v == e {
			return true
		}
	}
	return false
}

// Elements returns the elements in sorted order.
func (s *ORSet) Elements() []string {
	seen := map[string]bool{}
	var out []string
	for _, v := range s.entries {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	sort.Strings(out)
	return out
}

func (s *ORSet) dotsOf(e string) []Dot {
	var ds []Dot
	for d, v := range s.entries {
		if v == e {
			ds = append(ds, d)
		}
	}
	return ds
}

// Add adds e as node and returns the delta. node must not reuse dots, so a
// node must hold all of its own earlier adds (its state) before adding.
func (s *ORSet) Add(node, e string) *ORSet {
	d := Dot{Node: node, Seq: s.ctx.VC[node] + 1}
	delta := NewORSet()
	for _, old := range s.dotsOf(e) {
		delta.ctx.add(old)
	}
	delta.entries[d] = e
	delta.ctx.add(d)
	s.Merge(delta)
	return delta
}

// Remove removes e (the adds of e this replica has seen) and returns the delta.
func (s *ORSet) Remove(e string) *ORSet {
	delta := NewORSet()
	for _, old := range s.dotsOf(e) {
		delta.ctx.add(old)
	}
	s.Merge(delta)
	return delta
}

// Merge joins o into s: an entry survives if the other side also has it or
// has never seen its dot.
func (s *ORSet) Merge(o *ORSet) {
	for d := range s.entries {
		if _, both := o.entries[d]; !both && o.ctx.Has(d) {
			delete(s.entries, d)
		}
	}
	for d, e := range o.entries {
		if _, have := s.entries[d]; !have && !s.ctx.Has(d) {
			s.entries[d] = e
		}
	}
	s.ctx.merge(o.ctx)
}

// Equal reports whether s and o hold the same state (entries and context).
func (s *ORSet) Equal(o *ORSet) bool {
	if len(s.entries) != len(o.entries) || len(s.ctx.Cloud) != len(o.ctx.Cloud) ||
		s.ctx.VC.Compare(o.ctx.VC) != Equal {
		return false
	}
	for d, e := range s.entries {
		if oe, ok := o.entries[d]; !ok || oe != e {
			return false
		}
	}
	for d := range s.ctx.Cloud {
		if _, ok := o.ctx.Cloud[d]; !ok {
			return false
		}
	}
	return true
}

// Clone returns a deep copy of s.
func (s *ORSet) Clone() *ORSet {
	c := NewORSet()
	for d, e := range s.entries {
		c.entries[d] = e
	}
	c.ctx.merge(s.ctx)
	return c
}
