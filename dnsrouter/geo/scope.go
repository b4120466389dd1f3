package geo

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
	"slices"
)

// Scope returns the ECS scope prefix length (RFC 7871 7.2.1) of an answer
// for a client in the network addr/source that src placed as m (the
// result of src.Lookup(addr); addr has no bits set past source). It is the
// length of the block that decided (the source prefix when src cannot
// tell), made long enough that the network it names holds no more
// specific block of src that places clients elsewhere: a resolver caches
// the answer for that network, and must not hand it to clients of such a
// block. When a more specific block lies inside the client's own network,
// the scope is longer than source (the length of the most specific such
// block): the client's prefix was not specific enough to decide.
//
// Only tables have blocks inside blocks; an mmdb's networks never nest, so
// its block length is already the answer.
func Scope(src Source, addr netip.Addr, source int, m Match) int {
	if addr.Is4In6() {
		// Located as IPv4 (Lookup unmaps), so scoped as IPv4 too.
		addr, source = addr.Unmap(), max(source-96, 0)
	}
	source = min(max(source, 0), addr.BitLen())
	scope := m.Bits
	if scope < 0 {
		scope = source
	}
	switch s := src.(type) {
	case *Table:
		scope = max(scope, s.nested(addr, source, scope))
	case chain:
		// Blocks of an earlier table may lie inside the block of a later
		// source that decided (which the chain reports as -1, so scope is
		// the source prefix here); those of later sources do not matter,
		// as the deciding source answers for all of its block.
		for _, c := range s {
			if t, ok := c.(*Table); ok {
				scope = max(scope, t.nested(addr, source, scope))
			}
		}
	}
	return scope
}

// span is a table entry as the first address of its block in the 128-bit
// space (IPv4 mapped) and its length there, for Scope.
type span struct {
	hi, lo uint64
	bits   int
}

func (a span) cmp(b span) int {
	switch {
	case a.hi != b.hi:
		return cmpU(a.hi, b.hi)
	case a.lo != b.lo:
		return cmpU(a.lo, b.lo)
	}
	return a.bits - b.bits // the wider block first
}

func cmpU(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// masked returns the first and last address of the /n block of (hi, lo).
func masked(hi, lo uint64, n int) (first, last span) {
	var mh, ml uint64 // the mask
	switch {
	case n >= 128:
		mh, ml = ^uint64(0), ^uint64(0)
	case n > 64:
		mh, ml = ^uint64(0), ^(^uint64(0) >> (n - 64))
	case n == 64:
		mh = ^uint64(0)
	case n > 0:
		mh = ^(^uint64(0) >> n)
	}
	return span{hi: hi & mh, lo: lo & ml}, span{hi: hi | ^mh, lo: lo | ^ml}
}

// common is the length of the common prefix of two addresses.
func common(a, b span) int {
	if x := a.hi ^ b.hi; x != 0 {
		return bits.LeadingZeros64(x)
	}
	return 64 + bits.LeadingZeros64(a.lo^b.lo)
}

// buildSpans indexes the entries for nested: sorted by address, with a
// sparse table of the longest block over every power-of-two run, so that
// "the most specific block inside a network" is two lookups.
func (t *Table) buildSpans() {
	for _, l := range t.byLen {
		for p := range l.m {
			a := p.Addr().As16()
			t.spans = append(t.spans, span{hi: binary.BigEndian.Uint64(a[:8]), lo: binary.BigEndian.Uint64(a[8:]), bits: p.Bits()})
		}
	}
	slices.SortFunc(t.spans, span.cmp)
	if len(t.spans) == 0 {
		return
	}
	lvl := make([]uint8, len(t.spans))
	for i, s := range t.spans {
		lvl[i] = uint8(s.bits)
	}
	t.longest = [][]uint8{lvl}
	for w := 1; 2*w <= len(t.spans); w *= 2 {
		prev := t.longest[len(t.longest)-1]
		next := make([]uint8, len(prev)-w)
		for i := range next {
			next[i] = max(prev[i], prev[i+w])
		}
		t.longest = append(t.longest, next)
	}
}

// longestIn returns the longest block length among spans[i:j] (j > i).
func (t *Table) longestIn(i, j int) int {
	k := bits.Len(uint(j-i)) - 1
	return int(max(t.longest[k][i], t.longest[k][j-(1<<k)]))
}

// nested returns the smallest scope (in addr's family) at least base for
// which the client's network holds no block of t more specific than the
// one that decided (base long), see Scope; -1 when no block is in the way.
func (t *Table) nested(addr netip.Addr, source, base int) int {
	if len(t.spans) == 0 {
		return -1
	}
	a := addr.Unmap()
	off := 0
	if a.Is4() {
		off = 96
	}
	a16 := a.As16()
	src, b := source+off, base+off
	first, last := masked(binary.BigEndian.Uint64(a16[:8]), binary.BigEndian.Uint64(a16[8:]), src)
	need := -1
	// Blocks inside the client's network: spans starting in it, past the
	// ones that start at its first address and contain it.
	i, _ := slices.BinarySearchFunc(t.spans, first, func(s, x span) int { return cmpU2(s, x) })
	j, _ := slices.BinarySearchFunc(t.spans, last, func(s, x span) int {
		if c := cmpU2(s, x); c != 0 {
			return c
		}
		return -1 // spans starting at last sort before "just after last"
	})
	in := i
	for in < j && t.spans[in].hi == first.hi && t.spans[in].lo == first.lo && t.spans[in].bits <= src {
		in++
	}
	if in < j {
		need = t.longestIn(in, j)
	}
	if b < src {
		// Blocks outside the client's network but inside the deciding
		// block: the scope must be long enough to leave them out. The
		// nearest such block on each side (in address order) shares the
		// longest prefix with the client.
		for k := i - 1; k >= 0; k-- {
			s := t.spans[k]
			cp := common(first, s)
			if cp < b {
				break
			}
			if s.bits <= b {
				continue // the deciding block, or one containing it
			}
			need = max(need, cp+1)
			break
		}
		if j < len(t.spans) {
			if cp := common(first, t.spans[j]); cp >= b {
				need = max(need, cp+1)
			}
		}
	}
	if need < 0 {
		return -1
	}
	return need - off
}

// cmpU2 orders spans by address only.
func cmpU2(s, x span) int {
	if s.hi != x.hi {
		return cmpU(s.hi, x.hi)
	}
	return cmpU(s.lo, x.lo)
}
