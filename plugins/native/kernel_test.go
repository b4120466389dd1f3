package native

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/tetratelabs/wazero"
)

// kernelRig runs kernel modules as Instantiate makes them, without a
// plugin: the tests call the extism:host/env functions exactly as a plugin
// would reach them (the wasm ones and the Go ones re-exported).
type kernelRig struct {
	rt   wazero.Runtime
	kmod wazero.CompiledModule
	max  uint64
}

// newKernelRig makes a runtime capped at pages 64 KiB pages, like a program's.
func newKernelRig(tb testing.TB, pages uint32) *kernelRig {
	tb.Helper()
	ctx := context.Background()
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithMemoryLimitPages(pages))
	tb.Cleanup(func() { rt.Close(ctx) })
	if err := instantiateHostModules(ctx, rt, kernelFunctions()); err != nil {
		tb.Fatal(err)
	}
	kmod, err := rt.CompileModule(ctx, kernelWasm)
	if err != nil {
		tb.Fatal(err)
	}
	return &kernelRig{rt: rt, kmod: kmod, max: uint64(pages) * 65536}
}

// instance returns a fresh instance with only its kernel.
func (r *kernelRig) instance(tb testing.TB) *instance {
	tb.Helper()
	in := &instance{}
	in.cc = callCtx{in: in}
	kmod, err := r.rt.InstantiateModule(&in.cc, r.kmod, wazero.NewModuleConfig().WithName(""))
	if err != nil {
		tb.Fatal(err)
	}
	in.kmod = kmod
	in.k = newKernel(kmod.Memory(), r.max)
	return in
}

// env calls the kernel function name; err is the call's failure (a trap).
func (in *instance) envCall(name string, args ...uint64) (uint64, error) {
	f := in.kmod.ExportedFunction(name)
	if f == nil {
		return 0, errors.New("no function " + name)
	}
	res, err := f.Call(&in.cc, args...)
	if err != nil || len(res) == 0 {
		return 0, err
	}
	return res[0], nil
}

// must is envCall that fails the test on a trap.
func (in *instance) must(t *testing.T, name string, args ...uint64) uint64 {
	t.Helper()
	v, err := in.envCall(name, args...)
	if err != nil {
		t.Fatalf("%s%v: %v", name, args, err)
	}
	return v
}

func TestKernelBlocks(t *testing.T) {
	in := newKernelRig(t, 2).instance(t)
	if in.must(t, "alloc", 0) != 0 {
		t.Fatal("alloc(0) must be the null pointer")
	}
	a := in.must(t, "alloc", 10)
	b := in.must(t, "alloc", 3)
	if a == 0 || b == 0 || a == b {
		t.Fatalf("alloc: %d %d", a, b)
	}
	if in.must(t, "length", a) != 10 || in.must(t, "length", b) != 3 {
		t.Fatalf("length: %d %d", in.must(t, "length", a), in.must(t, "length", b))
	}
	for _, off := range []uint64{0, a + 1, b - 1, 1 << 40, ^uint64(0)} {
		if n := in.must(t, "length", off); n != 0 {
			t.Fatalf("length(0x%x) of a non-block = %d, want 0", off, n)
		}
	}
	in.must(t, "free", a)
	if in.must(t, "length", a) != 0 {
		t.Fatal("a freed block has no length")
	}
	if c := in.must(t, "alloc", 8); c != a || in.must(t, "length", c) != 8 {
		t.Fatalf("a freed block large enough is reused: got 0x%x, want 0x%x", c, a)
	}
	if in.must(t, "alloc", 200<<10) != 0 {
		t.Fatal("an allocation over the cap must fail with 0")
	}
	// Growing the kernel's memory keeps what the blocks hold.
	in.must(t, "store_u64", b-5, 0x0102030405060708)
	if big := in.must(t, "alloc", 100<<10); big == 0 {
		t.Fatal("an allocation within the cap that needs more memory must succeed")
	}
	if v := in.must(t, "load_u64", b-5); v != 0x0102030405060708 {
		t.Fatalf("after growth the blocks read %x", v)
	}
}

func TestKernelLoadStoreBounds(t *testing.T) {
	in := newKernelRig(t, 2).instance(t)
	a := in.must(t, "alloc", 16)
	in.must(t, "store_u64", a+8, 0x0102030405060708)
	if v := in.must(t, "load_u64", a+8); v != 0x0102030405060708 {
		t.Fatalf("load_u64 = %x", v)
	}
	if in.must(t, "load_u8", a+8) != 0x08 {
		t.Fatal("little-endian")
	}
	cases := []struct {
		name string
		off  uint64
	}{{"null", 0}, {"the input", inputAt}, {"below the first block", a - 1}, {"last byte straddles", a + 9}, {"past end", a + 16}, {"huge", ^uint64(0) - 3}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := in.envCall("load_u64", c.off); err == nil || !strings.Contains(err.Error(), "load_u64 at 0x") {
				t.Fatalf("load_u64 out of bounds must fail the call saying so, got %v", err)
			}
			if _, err := in.envCall("store_u64", c.off, 1); err == nil || !strings.Contains(err.Error(), "outside the plugin's kernel memory") {
				t.Fatalf("store_u64 out of bounds must fail the call saying so, got %v", err)
			}
		})
	}
	in.must(t, "store_u8", a+16, 9) // ignored
	in.must(t, "store_u8", hdrEnd, 0xff)
	if in.must(t, "load_u8", a+16) != 0 || in.must(t, "load_u8", 0) != 0 || in.must(t, "load_u8", hdrEnd) != 0 {
		t.Fatal("out-of-bounds byte loads read 0")
	}
	in.k.sync()
	if in.k.base+uint64(len(in.k.mem)) != a+16 {
		t.Fatal("a store outside the blocks reached the kernel's own bounds")
	}
}

func TestKernelInputOutputErrorAndReset(t *testing.T) {
	in := newKernelRig(t, 2).instance(t)
	if err := in.k.reset([]byte("0123456789")); err != nil {
		t.Fatal(err)
	}
	if in.must(t, "input_length") != 10 || in.must(t, "input_load_u64", 0) != 0x3736353433323130 ||
		in.must(t, "input_load_u8", 9) != '9' || in.must(t, "input_load_u8", 10) != 0 {
		t.Fatal("input loads")
	}
	if v := in.must(t, "input_load_u64", 8); v != 0x3938 {
		t.Fatalf("a partial last word reads the bytes that exist, zero-padded: %x", v)
	}
	if v := in.must(t, "input_load_u64", 9); v != 0x39 {
		t.Fatalf("a word from the last byte reads it, zero-padded: %x", v)
	}
	if in.must(t, "input_load_u64", 10) != 0 || in.must(t, "input_load_u64", ^uint64(0)) != 0 {
		t.Fatal("input loads past the end read 0")
	}
	off, err := in.k.write([]byte("out"))
	if err != nil {
		t.Fatal(err)
	}
	if in.must(t, "input_load_u64", 9) != 0x39 {
		t.Fatal("a block must not follow the input's last word")
	}
	in.must(t, "output_set", off, 100) // outside: ignored
	if len(in.k.output()) != 0 {
		t.Fatal("an output range outside kernel memory is ignored")
	}
	in.must(t, "output_set", off, 3)
	if !bytes.Equal(in.k.output(), []byte("out")) {
		t.Fatalf("output %q", in.k.output())
	}
	in.must(t, "output_set", inputAt, 3) // the input is not a block: ignored
	if !bytes.Equal(in.k.output(), []byte("out")) {
		t.Fatalf("output %q after a range over the input", in.k.output())
	}
	in.must(t, "error_set", off+1) // not a block: no message, as with the SDK
	if in.k.errorMessage() != "" {
		t.Fatal("an error offset that is not a block reads as no error")
	}
	in.must(t, "error_set", off)
	if in.k.errorMessage() != "out" {
		t.Fatal("error message")
	}
	if err := in.k.reset(nil); err != nil {
		t.Fatal(err)
	}
	if in.k.errorMessage() != "" || len(in.k.output()) != 0 || in.must(t, "length", off) != 0 || in.must(t, "input_length") != 0 ||
		in.must(t, "input_load_u64", 0) != 0 {
		t.Fatal("reset must forget input, blocks, output and error")
	}
	for i, b := range in.k.buf {
		if b != 0 && !boundsWord(i) {
			t.Fatalf("reset left byte %d of the previous call in kernel memory", i)
		}
	}
	if off2 := in.must(t, "alloc", 3); in.must(t, "load_u8", off2) != 0 {
		t.Fatal("after reset memory is reused and zeroed")
	}
	big := bytes.Repeat([]byte{1}, 100<<10)
	if err := in.k.reset(big); err != nil || in.must(t, "input_length") != uint64(len(big)) {
		t.Fatalf("an input larger than the kernel's memory grows it: %v", err)
	}
	if err := in.k.reset(make([]byte, 200<<10)); err == nil {
		t.Fatal("an input over the kernel's cap must fail")
	}
}

// boundsWord reports whether byte i of the kernel memory belongs to the
// bounds Go publishes (first block, end, alloc's limit), which are set
// after a reset.
func boundsWord(i int) bool {
	return i >= hdrBase && i < hdrEnd+8 || i >= hdrLimit && i < hdrLimit+8
}

// TestKernelAllocInWasm: blocks kernel.wat's alloc makes without Go are
// in Go's table before Go looks (length, free, reuse, output), also past
// the 8 records; allocating until the cap fails cleanly within it.
func TestKernelAllocInWasm(t *testing.T) {
	in := newKernelRig(t, 2).instance(t)
	if err := in.k.reset([]byte("input")); err != nil {
		t.Fatal(err)
	}
	var offs []uint64
	for i := range 20 {
		off := in.must(t, "alloc", uint64(i+1))
		if off == 0 {
			t.Fatalf("alloc %d failed", i)
		}
		if i == 0 {
			// Made in wasm: a record for Go, not yet in its table.
			if n := binary.LittleEndian.Uint64(in.k.buf[hdrPending:]); n != 1 {
				t.Fatalf("after the first alloc the kernel module holds %d records for Go, want 1: the alloc went through Go", n)
			}
		}
		in.must(t, "store_u8", off+uint64(i), uint64(i))
		offs = append(offs, off)
	}
	for i, off := range offs {
		if n := in.must(t, "length", off); n != uint64(i+1) {
			t.Fatalf("block %d: length %d, want %d", i, n, i+1)
		}
		if b := in.k.block(off); len(b) != i+1 || b[i] != byte(i) {
			t.Fatalf("block %d reads %v", i, b)
		}
	}
	in.must(t, "free", offs[5])
	if off := in.must(t, "alloc", 3); off != offs[5] {
		t.Fatalf("a freed block is reused first: got 0x%x, want 0x%x", off, offs[5])
	}
	if in.must(t, "length", offs[5]) != 3 {
		t.Fatal("the reused block's length")
	}
	in.must(t, "output_set", offs[19], 20)
	if len(in.k.output()) != 20 {
		t.Fatal("the output set on a block the wasm alloc made")
	}
	for {
		if in.must(t, "alloc", 1000) == 0 {
			break
		}
		if in.k.inUse() > in.k.max {
			t.Fatalf("kernel uses %d bytes, cap %d", in.k.inUse(), in.k.max)
		}
	}
	for in.must(t, "alloc", 1) != 0 {
	}
	if in.k.inUse() > in.k.max || !in.k.full {
		t.Fatalf("at the cap: %d bytes in use of %d", in.k.inUse(), in.k.max)
	}
}

// TestKernelWasmIsBuiltFromSource: kernel.wasm is kernel.wat compiled (the
// binary is what runs; the text is what is reviewed).
func TestKernelWasmIsBuiltFromSource(t *testing.T) {
	out := filepath.Join(t.TempDir(), "kernel.wasm")
	if b, err := exec.Command("wat2wasm", "kernel.wat", "-o", out).CombinedOutput(); err != nil {
		t.Fatalf("wat2wasm (install Debian package wabt): %v\n%s", err, b)
	}
	want, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(want, kernelWasm) {
		t.Fatal("kernel.wasm is not kernel.wat compiled: run `wat2wasm kernel.wat -o kernel.wasm` in plugins/native")
	}
}

// isRuntimeError reports whether a failed call was a Go runtime error in
// a host function (a bug), not a deliberate failure.
func isRuntimeError(err error) bool {
	var re runtime.Error
	return errors.As(err, &re)
}

// TestMeterRefusesForeignIndexes: code naming the global (or local) one
// past the end is invalid wasm, but after the rewrite that index is the
// budget; the rewrite must refuse it rather than let a plugin refill its
// own budget.
func TestMeterRefusesForeignIndexes(t *testing.T) {
	mod := func(body ...byte) []byte {
		b := []byte("\x00asm\x01\x00\x00\x00")
		b = append(b, 1, 4, 1, 0x60, 0, 0) // type () -> ()
		b = append(b, 3, 2, 1, 0)          // one function of type 0
		code := append([]byte{1, byte(len(body) + 1), 0}, body...)
		return append(append(b, 10, byte(len(code))), code...)
	}
	for name, body := range map[string][]byte{
		"global.set of the budget":     {0x41, 0xc0, 0x84, 0x3d, 0x24, 0x00, 0x0b},
		"global.get of the budget":     {0x23, 0x00, 0x1a, 0x0b},
		"local.set of the added local": {0x41, 0x01, 0x21, 0x00, 0x0b},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := meterModuleBytes(mod(body...)); err == nil || !strings.Contains(err.Error(), "does not exist") {
				t.Fatalf("want a refusal, got %v", err)
			}
		})
	}
	if _, err := meterModuleBytes(mod(0x03, 0x40, 0x0c, 0x00, 0x0b, 0x0b)); err != nil {
		t.Fatalf("a valid loop: %v", err)
	}
}

// TestCheckBinaryRefusesAllocationBombs: tiny modules whose declared
// lengths make wazero v1.9 allocate gigabytes (or panic) are refused first.
func TestCheckBinaryRefusesAllocationBombs(t *testing.T) {
	hdr := "\x00asm\x01\x00\x00\x00"
	for name, mod := range map[string]string{
		"2^29 exports":          hdr + "\x07\x06\xff\xff\xff\xff\x01",
		"export name of 4 GiB":  hdr + "\x07\x06\x01\xff\xff\xff\xff\x0f",
		"data segment of 4 GiB": hdr + "\x05\x03\x01\x00\x01" + "\x0b\x0a\x01\x00\x41\x00\x0b\xff\xff\xff\xff\x0f",
		"2^32 locals":           hdr + "\x01\x04\x01\x60\x00\x00\x03\x02\x01\x00\x0a\x0a\x01\x08\x01\xff\xff\xff\xff\x0f\x7f\x0b",
	} {
		t.Run(name, func(t *testing.T) {
			if err := CheckBinary([]byte(mod)); err == nil || !strings.Contains(err.Error(), "not a valid wasm module") {
				t.Fatalf("want a refusal, got %v", err)
			}
		})
	}
	ok := hdr + "\x05\x03\x01\x00\x01" + "\x0b\x07\x01\x00\x41\x00\x0b\x01\x2a"
	if err := CheckBinary([]byte(ok)); err != nil {
		t.Fatalf("a valid module with a data segment: %v", err)
	}
}
