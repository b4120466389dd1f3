package native

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// kernelBase is the offset of the first byte of kernel memory. Offset 0 is
// Extism's null pointer; starting above it keeps every block offset non-zero
// (the wasm kernel's blocks start a little after its 57-byte root, too).
const kernelBase = 64

// blockOverhead is what one block costs against the kernel's memory cap on
// top of its bytes: it bounds the Go-side block table as well as the data
// (a plugin cannot make millions of one-byte blocks for free).
const blockOverhead = 32

// kernel is the Extism kernel of one instance, kept in Go: a bump allocator
// with first-fit reuse of freed blocks over one byte slice, the call's
// input, output range and error block. A plugin reaches it only through the
// extism:host/env functions, which bounds-check every offset against the
// bytes allocated so far; nothing here can read or write outside mem.
//
// reset clears it between calls without freeing: the slices keep their
// capacity, so a warm instance allocates nothing per request.
type kernel struct {
	mem    []byte  // len(mem) is the bump position; beyond it all is zero
	blocks []block // ordered by start
	frees  int     // free blocks in blocks (skip the reuse scan when 0)
	max    uint64  // cap on len(mem) + blockOverhead*len(blocks)

	input  []byte // the call's input; not copied (read-only for the call)
	outOff uint64 // output range set by output_set (offsets)
	outLen uint64
	errOff uint64 // error block set by error_set
}

type block struct {
	start uint64 // index into mem
	size  uint64 // capacity
	used  uint64 // what length answers
	free  bool
}

// errKernelFull is returned when an allocation would pass the memory cap.
var errKernelFull = errors.New("plugin kernel memory is full")

func newKernel(max uint64) *kernel { return &kernel{max: max} }

// reset forgets every block and the call state. Used bytes are zeroed, as
// the Extism kernel does, so one request never sees another's data.
func (k *kernel) reset() {
	clear(k.mem)
	k.mem = k.mem[:0]
	k.blocks = k.blocks[:0]
	k.frees = 0
	k.input = nil
	k.outOff, k.outLen, k.errOff = 0, 0, 0
}

// bytes is what the kernel holds in Go memory now.
func (k *kernel) bytes() uint64 {
	return uint64(cap(k.mem)) + uint64(cap(k.blocks))*blockOverhead
}

// nearCap reports whether the kernel used more than three quarters of its cap.
func (k *kernel) nearCap() bool {
	return k.inUse() > k.max/4*3
}

func (k *kernel) inUse() uint64 { return uint64(len(k.mem)) + uint64(len(k.blocks))*blockOverhead }

// alloc returns the offset of a new block of n bytes, or 0 when n is 0 or
// the cap is reached (Extism's failed allocation).
func (k *kernel) alloc(n uint64) uint64 {
	if n == 0 {
		return 0
	}
	if k.frees > 0 {
		for i := range k.blocks {
			b := &k.blocks[i]
			if b.free && b.size >= n {
				b.free, b.used = false, n
				k.frees--
				return kernelBase + b.start
			}
		}
	}
	pos := uint64(len(k.mem))
	if n > k.max || k.inUse()+n+blockOverhead > k.max {
		return 0
	}
	end := pos + n
	if end > uint64(cap(k.mem)) {
		// Amortised doubling, within the cap; the new bytes are zero.
		c := min(max(end, 2*uint64(cap(k.mem)), 1024), k.max)
		nm := make([]byte, pos, c)
		copy(nm, k.mem)
		k.mem = nm
	}
	k.mem = k.mem[:end]
	k.blocks = append(k.blocks, block{start: pos, size: n, used: n})
	return kernelBase + pos
}

// find returns the index of the active block starting at off, or -1.
func (k *kernel) find(off uint64) int {
	if off < kernelBase {
		return -1
	}
	s := off - kernelBase
	lo, hi := 0, len(k.blocks)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if k.blocks[m].start < s {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < len(k.blocks) && k.blocks[lo].start == s && !k.blocks[lo].free {
		return lo
	}
	return -1
}

// length is the used length of the block at off, 0 if off is not a block.
func (k *kernel) length(off uint64) uint64 {
	if i := k.find(off); i >= 0 {
		return k.blocks[i].used
	}
	return 0
}

// free marks the block at off free; anything else is ignored.
func (k *kernel) free(off uint64) {
	if i := k.find(off); i >= 0 {
		k.blocks[i].free = true
		k.frees++
	}
}

// block returns the bytes of the block at off (a view into mem, valid until
// the next alloc), or nil when off is not a block.
func (k *kernel) block(off uint64) []byte {
	i := k.find(off)
	if i < 0 {
		return nil
	}
	b := k.blocks[i]
	return k.mem[b.start : b.start+b.used]
}

// span returns mem[off-base : off-base+n] when the whole range lies in the
// allocated bytes; ok is false otherwise. It never panics.
func (k *kernel) span(off, n uint64) ([]byte, bool) {
	if off < kernelBase {
		return nil, false
	}
	i := off - kernelBase
	l := uint64(len(k.mem))
	if i > l || n > l-i {
		return nil, false
	}
	return k.mem[i : i+n], true
}

// loadU8 reads one byte; out of bounds reads 0 (the kernel's bounds check).
func (k *kernel) loadU8(off uint64) uint32 {
	if b, ok := k.span(off, 1); ok {
		return uint32(b[0])
	}
	return 0
}

// storeU8 writes one byte; out of bounds is ignored.
func (k *kernel) storeU8(off uint64, v byte) {
	if b, ok := k.span(off, 1); ok {
		b[0] = v
	}
}

// loadU64 reads 8 bytes little-endian; out of bounds is an error (the
// go-sdk traps there too).
func (k *kernel) loadU64(off uint64) (uint64, error) {
	b, ok := k.span(off, 8)
	if !ok {
		return 0, fmt.Errorf("load_u64 at 0x%x is outside the plugin's kernel memory", off)
	}
	return binary.LittleEndian.Uint64(b), nil
}

// storeU64 writes 8 bytes little-endian; out of bounds is an error.
func (k *kernel) storeU64(off, v uint64) error {
	b, ok := k.span(off, 8)
	if !ok {
		return fmt.Errorf("store_u64 at 0x%x is outside the plugin's kernel memory", off)
	}
	binary.LittleEndian.PutUint64(b, v)
	return nil
}

// inputLoadU8 reads input byte i, 0 past the end.
func (k *kernel) inputLoadU8(i uint64) uint32 {
	if i < uint64(len(k.input)) {
		return uint32(k.input[i])
	}
	return 0
}

// inputLoadU64 reads 8 input bytes from i, little-endian; bytes past the
// end read as 0.
func (k *kernel) inputLoadU64(i uint64) uint64 {
	l := uint64(len(k.input))
	if i >= l {
		return 0
	}
	if l-i >= 8 {
		return binary.LittleEndian.Uint64(k.input[i:])
	}
	var b [8]byte
	copy(b[:], k.input[i:])
	return binary.LittleEndian.Uint64(b[:])
}

// outputSet records the output range; a range outside the allocated bytes
// is ignored, as by the kernel (the call then has no output).
func (k *kernel) outputSet(off, n uint64) {
	if _, ok := k.span(off, n); ok {
		k.outOff, k.outLen = off, n
	}
}

// output returns the output bytes (a view into mem).
func (k *kernel) output() []byte {
	b, _ := k.span(k.outOff, k.outLen)
	return b
}

// errorSet records the error block; 0 clears it, an offset outside the
// allocated bytes is ignored.
func (k *kernel) errorSet(off uint64) {
	if off == 0 {
		k.errOff = 0
		return
	}
	if _, ok := k.span(off, 1); ok {
		k.errOff = off
	}
}

// errorMessage is the error the plugin set: the block at the error offset,
// empty when unset or when the offset is not a block (as with the SDK).
func (k *kernel) errorMessage() string {
	if k.errOff == 0 {
		return ""
	}
	return string(k.block(k.errOff))
}

// write allocates a block holding b.
func (k *kernel) write(b []byte) (uint64, error) {
	if len(b) == 0 {
		// Extism has no empty block: alloc(0) is the null pointer.
		return 0, nil
	}
	off := k.alloc(uint64(len(b)))
	if off == 0 {
		return 0, fmt.Errorf("%w (%d bytes requested, cap %d)", errKernelFull, len(b), k.max)
	}
	copy(k.mem[off-kernelBase:], b)
	return off, nil
}
