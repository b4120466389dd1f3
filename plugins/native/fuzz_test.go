package native

import (
	"bytes"
	"context"
	"encoding/binary"
	"log/slog"
	"testing"

	"github.com/meridian-edge/meridian/plugins"
)

// envOps are the extism:host/env functions the fuzz target drives, by opcode.
var envOps = []string{"alloc", "free", "length", "length_unsafe", "load_u8", "load_u64", "store_u8",
	"store_u64", "input_length", "input_load_u8", "input_load_u64", "output_set", "error_set",
	"config_get", "var_get", "var_set", "log_info", "log_debug"}

// FuzzHostMemory drives the extism:host/env functions exactly as a plugin
// reaches them (the kernel module's exports: wasm functions and Go ones)
// with random offsets and lengths: near real blocks, at the edges, and
// anywhere in 64 bits. A function may fail the call on purpose (a trap);
// it must never hit a Go runtime error, it must never change the input or
// the kernel's own bounds, and every byte it writes must lie inside the
// call's blocks.
//
//	go test -run '^$' -fuzz FuzzHostMemory -fuzztime 30s ./plugins/native/
func FuzzHostMemory(f *testing.F) {
	f.Add([]byte{0, 0, 16, 6, 1, 0, 7, 1, 8, 5, 1, 8, 11, 1, 0, 2, 16, 12, 1, 0}, []byte("\x01\x01\x01\x03\x00GET"))
	f.Add([]byte{0, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 5, 2, 0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, []byte{})
	f.Add([]byte{0, 0, 200, 1, 1, 0, 0, 0, 8, 0, 0, 4, 2, 1, 3, 14, 1, 0, 1, 1, 15, 1, 0, 1, 1}, []byte("12345678901234567"))
	f.Add([]byte{10, 0, 7, 9, 0, 9, 10, 2, 1, 0, 0, 0, 0, 0, 0, 0, 16, 1, 0}, []byte("abcdefghij"))
	rig := newKernelRig(f, 2)
	f.Fuzz(func(t *testing.T, prog, input []byte) { fuzzHostMemory(t, rig, prog, input) })
}

// fuzzHostMemory is one FuzzHostMemory run: prog drives the functions of a
// fresh kernel whose call has input.
func fuzzHostMemory(t *testing.T, rig *kernelRig, prog, input []byte) {
	if len(input) > 16<<10 {
		input = input[:16<<10] // MaxInput is at most a quarter of the cap
	}
	in := rig.instance(t)
	defer in.kmod.Close(context.Background())
	var logged []string
	in.env = &plugins.CallEnv{Config: map[string]string{"": "empty", "k": "value"},
		Log: func(_ slog.Level, msg string) { logged = append(logged, msg) }}
	if err := in.k.reset(input); err != nil {
		t.Fatal(err)
	}
	base := in.k.base
	var last uint64 // the last offset alloc returned, to aim near blocks
	for len(prog) > 0 {
		op := envOps[int(prog[0])%len(envOps)]
		prog = prog[1:]
		var args [2]uint64
		for i := range args {
			args[i], prog = arg(prog, last, base)
		}
		if op == "store_u8" {
			args[1] &= 0xff
		}
		fn := in.kmod.ExportedFunction(op)
		n := len(fn.Definition().ParamTypes())
		res, err := fn.Call(&in.cc, args[:n]...)
		if err != nil && isRuntimeError(err) {
			t.Fatalf("Go runtime error in %s%v: %v", op, args[:n], err)
		}
		if op == "alloc" && err == nil && res[0] != 0 {
			last = res[0]
		}
		check(t, in.k)
		if in.k.base != base || binary.LittleEndian.Uint64(in.k.buf[hdrBase:]) != base ||
			binary.LittleEndian.Uint64(in.k.buf[hdrInputLen:]) != uint64(len(input)) ||
			!bytes.Equal(in.k.buf[inputAt:inputAt+len(input)], input) {
			t.Fatalf("%s%v changed the input or the kernel's bounds", op, args[:n])
		}
	}
	if off, n := in.k.outputRange(); n > 0 && uint64(len(in.k.output())) != n {
		t.Fatalf("output range 0x%x+%d, view %d bytes", off, n, len(in.k.output()))
	}
	_ = in.k.errorMessage()
	if err := in.k.reset(nil); err != nil {
		t.Fatal(err)
	}
	for i, b := range in.k.buf {
		if b != 0 && !boundsWord(i) {
			t.Fatal("reset left data of the previous call in kernel memory")
		}
	}
}

// arg decodes one argument: a mode byte, then 0, 1 or 8 bytes.
func arg(p []byte, last, base uint64) (uint64, []byte) {
	if len(p) == 0 {
		return 0, p
	}
	mode := p[0]
	p = p[1:]
	small := uint64(0)
	if len(p) > 0 {
		small = uint64(p[0])
	}
	switch mode % 4 {
	case 0: // small number (lengths, input indexes)
		if len(p) > 0 {
			p = p[1:]
		}
		return small, p
	case 1: // near the last block
		if len(p) > 0 {
			p = p[1:]
		}
		return last + small - 8, p
	case 2: // any 64-bit value
		if len(p) < 8 {
			return ^uint64(0), nil
		}
		return binary.LittleEndian.Uint64(p), p[8:]
	default: // the first block's address plus a small offset
		if len(p) > 0 {
			p = p[1:]
		}
		return base + small, p
	}
}

// check verifies the kernel's invariants: blocks ordered, inside mem and
// not overlapping, memory use within the cap, all bytes past the bump
// position zero.
func check(t *testing.T, k *kernel) {
	t.Helper()
	k.sync()
	if k.inUse() > k.max {
		t.Fatalf("kernel uses %d bytes, cap %d", k.inUse(), k.max)
	}
	end := uint64(0)
	for i, b := range k.blocks {
		if b.start < end || b.start+b.size > uint64(len(k.mem)) || b.used > b.size || b.size == 0 {
			t.Fatalf("block %d %+v is out of order or outside the %d bytes of memory", i, b, len(k.mem))
		}
		end = b.start + b.size
	}
	for _, c := range k.buf[k.base+uint64(len(k.mem)):] {
		if c != 0 {
			t.Fatal("data past the allocated bytes")
		}
	}
	if off, n := k.outputRange(); n > 0 {
		if _, ok := k.span(off, n); !ok {
			t.Fatal("output range outside the blocks")
		}
	}
}
