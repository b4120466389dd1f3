//go:build wasip1

package kit

import "unsafe"

// The request path talks to the Extism kernel directly through the standard
// extism:host/env imports (the same ones go-pdk declares), so a kit plugin
// stays an ordinary Extism plugin. It differs from go-pdk only in how it
// uses them, because every import call leaves wasm for the host and that
// dominates a small plugin's time:
//
//   - bytes move 8 at a time, and the last partial word of a block of 8
//     bytes or more is moved as the overlapping word ending at the block's
//     end, instead of byte by byte (the kernel accepts any offset inside a
//     block for load_u64 and store_u64);
//   - the output block is rounded up to whole words and output_set names
//     the exact length;
//   - values come back as strings sharing one fresh buffer, never copied
//     twice.

//go:wasmimport extism:host/env input_length
func extismInputLength() uint64

//go:wasmimport extism:host/env input_load_u64
func extismInputLoadU64(off uint64) uint64

//go:wasmimport extism:host/env input_load_u8
func extismInputLoadU8(off uint64) uint32

//go:wasmimport extism:host/env alloc
func extismAlloc(n uint64) uint64

//go:wasmimport extism:host/env free
func extismFree(off uint64)

//go:wasmimport extism:host/env length
func extismLength(off uint64) uint64

//go:wasmimport extism:host/env load_u64
func extismLoadU64(off uint64) uint64

//go:wasmimport extism:host/env load_u8
func extismLoadU8(off uint64) uint32

//go:wasmimport extism:host/env store_u64
func extismStoreU64(off, v uint64)

//go:wasmimport extism:host/env store_u8
func extismStoreU8(off uint64, v uint32)

//go:wasmimport extism:host/env output_set
func extismOutputSet(off, n uint64)

//go:wasmimport extism:host/env error_set
func extismErrorSet(off uint64)

//go:wasmimport extism:host/env config_get
func extismConfigGet(off uint64) uint64

// input returns the call's input as a string over fresh bytes that nothing
// writes to again (so handing out substrings of it is safe).
//
// It, setOutput and the header action are what a small plugin runs on
// every request, so they are written for size as much as speed: between
// requests a plugin's code falls out of the CPU's caches, and in Go's wasm
// output every bounds check and call is code (and a call). Hence pointer
// stores instead of indexing, and the slab cut inline.
func input() string {
	n := extismInputLength()
	if n == 0 {
		return ""
	}
	var b []byte
	if uint64(len(slab)) >= n {
		b, slab = slab[:n:n], slab[n:]
	} else {
		b = carveSlow(n)
	}
	p := unsafe.Pointer(unsafe.SliceData(b))
	var i uint64
	for ; i+8 <= n; i += 8 {
		*(*uint64)(unsafe.Add(p, i)) = extismInputLoadU64(i)
	}
	switch {
	case i == n:
	case n >= 8:
		*(*uint64)(unsafe.Add(p, n-8)) = extismInputLoadU64(n - 8)
	default:
		for ; i < n; i++ {
			*(*byte)(unsafe.Add(p, i)) = byte(extismInputLoadU8(i))
		}
	}
	return unsafe.String((*byte)(p), n)
}

// put64 stores v little-endian at b[i:i+8] with one wasm i64.store (wasm
// is little-endian and allows unaligned access; binary.LittleEndian is
// eight byte stores in Go's wasm code).
func put64(b []byte, i, v uint64) {
	_ = b[i+7]
	*(*uint64)(unsafe.Pointer(&b[i])) = v
}

// slab is where input cuts its buffers from.
var slab []byte

// slabSize is the size of one slab: a few dozen typical request
// descriptions.
const slabSize = 8 << 10

// carveSlow returns n fresh bytes when the slab has not got them: input
// cuts its buffers from a shared slab, so a request costs one bump of a
// slice instead of an allocation (about 200 ns in wasm). Nothing is ever
// written to the bytes again once input filled them; a string kept from
// them keeps its whole slab alive (at most 8 KiB), which the collector
// frees once no string points into it. An input over 1 KiB that does not
// fit what is left of the slab gets bytes of its own, not a new slab.
//
//go:noinline
func carveSlow(n uint64) []byte {
	if n > slabSize/8 {
		return make([]byte, n)
	}
	slab = make([]byte, slabSize)
	b := slab[:n:n]
	slab = slab[n:]
	return b
}

// load reads the n bytes of the kernel block at off into a fresh buffer.
func load(off, n uint64) string {
	b := make([]byte, n)
	var i uint64
	for ; i+8 <= n; i += 8 {
		put64(b, i, extismLoadU64(off+i))
	}
	switch {
	case i == n:
	case n >= 8:
		put64(b, n-8, extismLoadU64(off+n-8))
	default:
		for ; i < n; i++ {
			b[i] = byte(extismLoadU8(off + i))
		}
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// store writes s into the kernel block at off, whose length is exactly
// len(s) (its length is what the host reads, as for a config key).
func store(off uint64, s string) {
	n := uint64(len(s))
	var i uint64
	for ; i+8 <= n; i += 8 {
		extismStoreU64(off+i, le64(s[i:]))
	}
	switch {
	case i == n:
	case n >= 8:
		extismStoreU64(off+n-8, le64(s[n-8:]))
	default:
		for ; i < n; i++ {
			extismStoreU8(off+i, uint32(s[i]))
		}
	}
}

// setOutput makes b the call's output: a block of len(b) rounded up to a
// multiple of 8 bytes, written a word at a time (the padding is zero), and
// output_set naming the exact length.
func setOutput(b []byte) {
	n := uint64(len(b))
	if n == 0 {
		extismOutputSet(0, 0) // Extism's empty output, as go-pdk sends it
		return
	}
	off := extismAlloc((n + 7) &^ 7)
	p := unsafe.Pointer(unsafe.SliceData(b))
	var i uint64
	for ; i+8 <= n; i += 8 {
		extismStoreU64(off+i, *(*uint64)(unsafe.Add(p, i)))
	}
	if r := n - i; r > 0 {
		// The last partial word, zero-padded: one load when b's capacity
		// holds the whole word (the action list's always does), else a
		// byte at a time. A Go loop in wasm costs a dispatch per turn.
		var w uint64
		if uint64(cap(b))-n >= 8-r {
			w = *(*uint64)(unsafe.Add(p, i)) & (1<<(8*r) - 1)
		} else {
			for j := n; j > i; j-- {
				w = w<<8 | uint64(*(*byte)(unsafe.Add(p, j-1)))
			}
		}
		extismStoreU64(off+i, w)
	}
	extismOutputSet(off, n)
}

// setError makes msg the call's error. The block's length is the message's
// (the host reads the whole block), so it is written exactly.
func setError(msg string) {
	off := extismAlloc(uint64(len(msg)))
	if off != 0 {
		store(off, msg)
	}
	extismErrorSet(off)
}

// configGet asks the host for the config value of key. An empty value
// reads as unset, as with go-pdk.
func configGet(key string) (string, bool) {
	var k uint64
	if key != "" {
		k = extismAlloc(uint64(len(key)))
		store(k, key)
	}
	v := extismConfigGet(k)
	if k != 0 {
		extismFree(k)
	}
	if v == 0 {
		return "", false
	}
	n := extismLength(v)
	if n == 0 {
		return "", false
	}
	return load(v, n), true
}
