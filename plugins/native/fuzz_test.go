package native

import (
	"encoding/binary"
	"log/slog"
	"runtime"
	"testing"

	"github.com/tetratelabs/wazero/api"

	"github.com/meridian-edge/meridian/plugins"
)

// envOps are the memory host functions the fuzz target drives, by opcode.
var envOps = []string{"alloc", "free", "length", "length_unsafe", "load_u8", "load_u64", "store_u8",
	"store_u64", "input_length", "input_load_u8", "input_load_u64", "output_set", "error_set",
	"config_get", "var_get", "var_set", "log_info", "log_debug"}

// FuzzHostMemory drives the extism:host/env functions exactly as a plugin
// would (the same Go functions wazero calls) with random offsets and
// lengths: near real blocks, at the edges, and anywhere in 64 bits. A
// function may fail the call on purpose (it panics with an error, which
// wazero turns into a trap of that call); it must never hit a Go runtime
// error, and every byte it reads or writes must lie inside the instance's
// own kernel memory.
//
//	go test -run '^$' -fuzz FuzzHostMemory -fuzztime 30s ./plugins/native/
func FuzzHostMemory(f *testing.F) {
	f.Add([]byte{0, 0, 16, 6, 1, 0, 7, 1, 8, 5, 1, 8, 11, 1, 0, 2, 16, 12, 1, 0}, []byte("\x01\x01\x01\x03\x00GET"))
	f.Add([]byte{0, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 5, 2, 0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, []byte{})
	f.Add([]byte{0, 0, 200, 1, 1, 0, 0, 0, 8, 0, 0, 4, 2, 1, 3, 14, 1, 0, 1, 1, 15, 1, 0, 1, 1}, []byte("12345678901234567"))
	f.Add([]byte{10, 0, 7, 9, 0, 9, 10, 2, 1, 0, 0, 0, 0, 0, 0, 0, 16, 1, 0}, []byte("abcdefghij"))
	f.Fuzz(func(t *testing.T, prog, input []byte) {
		const max = 64 << 10
		in := &instance{k: newKernel(max)}
		in.cc = callCtx{in: in}
		var logged []string
		in.env = &plugins.CallEnv{Config: map[string]string{"": "empty", "k": "value"},
			Log: func(_ slog.Level, msg string) { logged = append(logged, msg) }}
		in.k.input = input
		fns := envFunctions()
		var last uint64 // the last offset alloc returned, to aim near blocks
		for len(prog) > 0 {
			op := envOps[int(prog[0])%len(envOps)]
			prog = prog[1:]
			var stack [2]uint64
			for i := range stack {
				stack[i], prog = arg(prog, last)
			}
			if op == "store_u8" {
				stack[1] &= 0xff
			}
			call(t, fns[op].fn, in, stack[:])
			if op == "alloc" && stack[0] != 0 {
				last = stack[0]
			}
			check(t, in.k)
		}
		if out := in.k.output(); uint64(len(out)) != in.k.outLen && in.k.outLen != 0 {
			t.Fatalf("output range %d bytes, view %d", in.k.outLen, len(out))
		}
		_ = in.k.errorMessage()
		in.k.reset()
		for _, b := range in.k.mem[:cap(in.k.mem)] {
			if b != 0 {
				t.Fatal("reset left data of the previous call in kernel memory")
			}
		}
	})
}

// arg decodes one argument: a mode byte, then 0, 1 or 8 bytes.
func arg(p []byte, last uint64) (uint64, []byte) {
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
	default: // kernel base plus a small offset
		if len(p) > 0 {
			p = p[1:]
		}
		return kernelBase + small, p
	}
}

// call runs one host function and tells a deliberate trap from a crash.
func call(t *testing.T, fn api.GoModuleFunc, in *instance, stack []uint64) {
	t.Helper()
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		if re, ok := r.(runtime.Error); ok {
			t.Fatalf("Go runtime error in a host function: %v", re)
		}
		if _, ok := r.(error); !ok {
			t.Fatalf("host function panicked with a non-error %T: %v", r, r)
		}
	}()
	fn(&in.cc, nil, stack)
}

// check verifies the kernel's invariants: blocks ordered, inside mem and
// not overlapping, memory use within the cap, all bytes past the bump
// position zero.
func check(t *testing.T, k *kernel) {
	t.Helper()
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
	for _, c := range k.mem[len(k.mem):cap(k.mem)] {
		if c != 0 {
			t.Fatal("data past the allocated bytes")
		}
	}
	if k.outLen > 0 {
		if _, ok := k.span(k.outOff, k.outLen); !ok {
			t.Fatal("output range outside kernel memory")
		}
	}
}
