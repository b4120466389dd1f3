package native

import (
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/tetratelabs/wazero/api"
)

// kernelWasm is the kernel module (kernel.wat): the extism:host/env
// functions a plugin calls per word run in wasm; it imports the rest from
// kernelGoModule.
//
//go:embed kernel.wasm
var kernelWasm []byte

// kernelGoModule is the module of the kernel's Go functions (env.go). Only
// the kernel module imports it: a plugin importing it is refused.
const kernelGoModule = "meridian:host/kernel"

// The layout of the kernel module's memory (see kernel.wat).
const (
	hdrInputLen = 0
	hdrBase     = 8  // address of the first block
	hdrEnd      = 16 // end of the allocated bytes
	hdrOutOff   = 24
	hdrOutLen   = 32
	hdrErrOff   = 40
	hdrLimit    = 48 // how far the wasm alloc may move end
	hdrPending  = 56 // blocks the wasm alloc made, not yet in the table
	pendingAt   = 64 // their records: address, size
	pendingMax  = 8
	inputAt     = pendingAt + 16*pendingMax // the call's input
)

// blockOverhead is what one block costs against the kernel's memory cap on
// top of its bytes: it bounds the Go-side block table as well as the data
// (a plugin cannot make millions of one-byte blocks for free).
const blockOverhead = 32

// kernel is the Extism kernel of one instance: a bump allocator with
// first-fit reuse of freed blocks, kept in Go, over the memory of the
// instance's kernel module (kernel.wat), which holds the call's input, the
// blocks and the output and error ranges. A plugin reaches the memory only
// through the extism:host/env functions, which bounds-check every offset
// against the bytes allocated so far; nothing here reads or writes outside
// buf.
//
// Block offsets are addresses in the kernel memory; blocks start after the
// input (base) and last one call. reset clears the previous call's bytes
// and keeps the memory and the block table's capacity, so a warm instance
// allocates nothing per request.
//
// kernel.wat's alloc makes most blocks without calling Go (see there): it
// leaves records that sync takes into the table. Every method that reads
// the blocks or the bump position syncs first.
type kernel struct {
	memory api.Memory // the kernel module's memory
	buf    []byte     // all of memory (a view, taken again after it grows)
	base   uint64     // address of the first block (after the input)
	// mem is buf[base:end]: len(mem) is the bump position; beyond it, all
	// is zero.
	mem    []byte
	blocks []block // ordered by start
	frees  int     // free blocks in blocks (skip the reuse scan when 0)
	max    uint64  // cap on base + len(mem) + blockOverhead*len(blocks)
	// full is set when an allocation was refused at the cap since the
	// last reset: a call that then fails ran out of kernel memory.
	full bool
}

type block struct {
	start uint64 // index into mem
	size  uint64 // capacity
	used  uint64 // what length answers
	free  bool
}

// errKernelFull is returned when an allocation would pass the memory cap.
var errKernelFull = errors.New("plugin kernel memory is full")

// newKernel makes the kernel over memory (the kernel module's, empty) with
// a cap of max bytes.
func newKernel(memory api.Memory, max uint64) *kernel {
	k := &kernel{memory: memory, max: max}
	k.view()
	k.base = inputAt + 8
	k.mem = k.buf[k.base:k.base]
	k.publish()
	return k
}

// view takes the memory's buffer again (after it grew).
func (k *kernel) view() {
	k.buf, _ = k.memory.Read(0, k.memory.Size())
	if k.mem != nil {
		k.mem = k.buf[k.base : k.base+uint64(len(k.mem))]
	}
}

// publish gives the wasm functions the blocks' bounds and alloc's limit:
// with all pendingMax records used the kernel stays within its cap, and
// the blocks within the memory (only Go grows it); while a freed block
// exists the limit is end, so that Go's alloc reuses it first.
func (k *kernel) publish() {
	end := k.base + uint64(len(k.mem))
	limit := end
	if used := k.inUse() + pendingMax*blockOverhead; k.frees == 0 && used < k.max {
		limit = min(end+(k.max-used), uint64(len(k.buf)))
	}
	binary.LittleEndian.PutUint64(k.buf[hdrBase:], k.base)
	binary.LittleEndian.PutUint64(k.buf[hdrEnd:], end)
	binary.LittleEndian.PutUint64(k.buf[hdrLimit:], max(limit, end))
}

// sync takes the blocks kernel.wat's alloc made into the table.
func (k *kernel) sync() {
	n := binary.LittleEndian.Uint64(k.buf[hdrPending:])
	if n == 0 {
		return
	}
	for i := range min(n, pendingMax) {
		rec := k.buf[pendingAt+16*i:]
		addr, size := binary.LittleEndian.Uint64(rec), binary.LittleEndian.Uint64(rec[8:])
		k.blocks = append(k.blocks, block{start: addr - k.base, size: size, used: size})
	}
	binary.LittleEndian.PutUint64(k.buf[hdrPending:], 0)
	k.mem = k.mem[:binary.LittleEndian.Uint64(k.buf[hdrEnd:])-k.base]
	k.publish()
}

// grow makes the memory at least n bytes, within the cap; false if it cannot.
func (k *kernel) grow(n uint64) bool {
	have := uint64(len(k.buf))
	if n <= have {
		return true
	}
	if n > k.max {
		return false
	}
	// At least double (amortised), within the cap.
	want := min(max(n, 2*have), k.max)
	pages := (want - have + 65535) / 65536
	if _, ok := k.memory.Grow(uint32(pages)); !ok {
		// The runtime's cap may be a little lower than k.max: try the
		// least that fits.
		if _, ok := k.memory.Grow(uint32((n - have + 65535) / 65536)); !ok {
			return false
		}
	}
	k.view()
	return true
}

// reset forgets the previous call (its input, blocks, output and error,
// all zeroed, as the Extism kernel does, so one request never sees
// another's data) and takes input for the next call. It fails only when
// the input does not fit the kernel's cap.
func (k *kernel) reset(input []byte) error {
	k.sync()
	used := k.base + uint64(len(k.mem)) // beyond it, all is zero
	k.blocks = k.blocks[:0]
	k.frees = 0
	k.full = false
	// At least 8 zero bytes after the input: input_load_u64 reads a whole
	// word even at the input's last byte.
	n := uint64(len(input))
	base := inputAt + (n+7)&^7 + 8
	if !k.grow(base) {
		clear(k.buf[:used])
		return fmt.Errorf("%w: the request description (%d bytes) does not fit", errKernelFull, n)
	}
	// The new input overwrites the old; only the header and what lies past
	// the new input need clearing.
	clear(k.buf[:inputAt])
	copy(k.buf[inputAt:], input)
	if end := inputAt + n; end < used {
		clear(k.buf[end:used])
	}
	binary.LittleEndian.PutUint64(k.buf[hdrInputLen:], n)
	k.base = base
	k.mem = k.buf[base:base]
	k.publish()
	return nil
}

// bytes is the size of the kernel's memory and block table. It only reads
// (metrics ask idle instances).
func (k *kernel) bytes() uint64 {
	return uint64(len(k.buf)) + uint64(cap(k.blocks))*blockOverhead
}

func (k *kernel) inUse() uint64 {
	k.sync()
	return k.base + uint64(len(k.mem)) + uint64(len(k.blocks))*blockOverhead
}

// alloc returns the offset of a new block of n bytes, or 0 when n is 0 or
// the cap is reached (Extism's failed allocation).
func (k *kernel) alloc(n uint64) uint64 {
	if n == 0 {
		return 0
	}
	k.sync()
	if k.frees > 0 {
		for i := range k.blocks {
			b := &k.blocks[i]
			if b.free && b.size >= n {
				b.free, b.used = false, n
				k.frees--
				if k.frees == 0 {
					k.publish() // the wasm alloc may bump again
				}
				return k.base + b.start
			}
		}
	}
	pos := uint64(len(k.mem))
	if n > k.max || k.inUse()+n+blockOverhead > k.max {
		k.full = true
		return 0
	}
	end := pos + n
	if k.base+end > uint64(len(k.buf)) && !k.grow(k.base+end) {
		k.full = true
		return 0
	}
	k.mem = k.mem[:end]
	k.blocks = append(k.blocks, block{start: pos, size: n, used: n})
	k.publish()
	return k.base + pos
}

// find returns the index of the active block starting at off, or -1.
func (k *kernel) find(off uint64) int {
	k.sync()
	if off < k.base {
		return -1
	}
	s := off - k.base
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
		if k.frees == 1 {
			k.publish() // reuse freed blocks first: Go's alloc
		}
	}
}

// block returns the bytes of the block at off (a view into memory, valid
// until the next alloc), or nil when off is not a block.
func (k *kernel) block(off uint64) []byte {
	i := k.find(off)
	if i < 0 {
		return nil
	}
	b := k.blocks[i]
	return k.mem[b.start : b.start+b.used]
}

// span returns the n bytes at off when the whole range lies in the
// allocated block bytes; ok is false otherwise. It never panics. It is the
// same check as kernel.wat's $in.
func (k *kernel) span(off, n uint64) ([]byte, bool) {
	k.sync()
	if off < k.base {
		return nil, false
	}
	i := off - k.base
	l := uint64(len(k.mem))
	if i > l || n > l-i {
		return nil, false
	}
	return k.mem[i : i+n], true
}

// output returns the output bytes the plugin set (a view into memory).
func (k *kernel) output() []byte {
	b, _ := k.span(k.outputRange())
	return b
}

// outputRange is what output_set recorded.
func (k *kernel) outputRange() (off, n uint64) {
	return binary.LittleEndian.Uint64(k.buf[hdrOutOff:]), binary.LittleEndian.Uint64(k.buf[hdrOutLen:])
}

// errorMessage is the error the plugin set: the block at the error offset,
// empty when unset or when the offset is not a block (as with the SDK).
func (k *kernel) errorMessage() string {
	off := binary.LittleEndian.Uint64(k.buf[hdrErrOff:])
	if off == 0 {
		return ""
	}
	return string(k.block(off))
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
	copy(k.mem[off-k.base:], b)
	return off, nil
}
