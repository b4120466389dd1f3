// Package crdt holds Meridian's conflict-free replicated data types: a vector
// clock, a map of multi-value registers resolved last-writer-wins (LWW) with a
// deterministic tie-break, an add-wins observed-remove set (OR-set) and a
// positive-negative counter (PN-counter), each with a state form and a delta
// form whose merge is commutative, associative and idempotent.
//
// The package is pure: no I/O, no clocks, no goroutines, no locks. Callers
// (internal/statesync) pass wall times in and serialise access. It must not
// know about NATS, files or the meaning of keys.
package crdt

import (
	"sort"
	"strconv"
	"strings"
)

// VClock is a vector clock: for each node id, how many writes of that node are
// in the causal past. A missing entry means 0. The zero value (nil) is the
// empty clock; methods that change a clock return a new one.
type VClock map[string]uint64

// Order is the causal relation between two clocks.
type Order int

const (
	// Equal clocks describe the same causal history.
	Equal Order = iota
	// Before means the receiver happened before the argument.
	Before
	// After means the receiver happened after the argument.
	After
	// Concurrent means neither saw the other: a conflict.
	Concurrent
)

// String names the order for logs and the inspection CLI.
func (o Order) String() string {
	switch o {
	case Equal:
		return "equal"
	case Before:
		return "before"
	case After:
		return "after"
	default:
		return "concurrent"
	}
}

// Compare returns the causal order of v relative to o.
func (v VClock) Compare(o VClock) Order {
	less, greater := false, false
	for k, a := range v {
		b := o[k]
		if a < b {
			less = true
		} else if a > b {
			greater = true
		}
	}
	for k, b := range o {
		if _, ok := v[k]; !ok && b > 0 {
			less = true
		}
	}
	switch {
	case less && greater:
		return Concurrent
	case less:
		return Before
	case greater:
		return After
	default:
		return Equal
	}
}

// Merge returns the pointwise maximum of v and o (the least clock that has
// seen both).
func (v VClock) Merge(o VClock) VClock {
	out := make(VClock, len(v)+len(o))
	for k, a := range v {
		if a > 0 {
			out[k] = a
		}
	}
	for k, b := range o {
		if b > out[k] {
			out[k] = b
		}
	}
	return out
}

// Tick returns a copy of v with node's entry incremented: the clock of a new
// write by node that has seen v.
func (v VClock) Tick(node string) VClock {
	out := v.Merge(nil)
	out[node]++
	return out
}

// Clone returns an independent copy of v.
func (v VClock) Clone() VClock { return v.Merge(nil) }

// String renders the clock deterministically as "a:1,b:3" (sorted by node).
func (v VClock) String() string {
	keys := make([]string, 0, len(v))
	for k, n := range v {
		if n > 0 {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k)
		b.WriteByte(':')
		b.WriteString(strconv.FormatUint(v[k], 10))
	}
	return b.String()
}
