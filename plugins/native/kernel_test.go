package native

import (
	"bytes"
	"strings"
	"testing"
)

func TestKernelBlocks(t *testing.T) {
	k := newKernel(4096)
	if k.alloc(0) != 0 {
		t.Fatal("alloc(0) must be the null pointer")
	}
	a := k.alloc(10)
	b := k.alloc(3)
	if a == 0 || b == 0 || a == b {
		t.Fatalf("alloc: %d %d", a, b)
	}
	if k.length(a) != 10 || k.length(b) != 3 {
		t.Fatalf("length: %d %d", k.length(a), k.length(b))
	}
	for _, off := range []uint64{0, a + 1, b - 1, 1 << 40, ^uint64(0)} {
		if n := k.length(off); n != 0 {
			t.Fatalf("length(0x%x) of a non-block = %d, want 0", off, n)
		}
	}
	k.free(a)
	if k.length(a) != 0 {
		t.Fatal("a freed block has no length")
	}
	if c := k.alloc(8); c != a || k.length(c) != 8 {
		t.Fatalf("a freed block large enough is reused: got 0x%x (len %d), want 0x%x", c, k.length(c), a)
	}
	if k.alloc(5000) != 0 {
		t.Fatal("an allocation over the cap must fail with 0")
	}
}

func TestKernelLoadStoreBounds(t *testing.T) {
	k := newKernel(4096)
	a := k.alloc(16)
	if err := k.storeU64(a+8, 0x0102030405060708); err != nil {
		t.Fatal(err)
	}
	if v, err := k.loadU64(a + 8); err != nil || v != 0x0102030405060708 {
		t.Fatalf("loadU64 = %x %v", v, err)
	}
	if k.loadU8(a+8) != 0x08 {
		t.Fatal("little-endian")
	}
	cases := []struct {
		name string
		off  uint64
	}{{"null", 0}, {"below base", kernelBase - 1}, {"last byte straddles", a + 9}, {"past end", a + 16}, {"huge", ^uint64(0) - 3}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := k.loadU64(c.off); err == nil {
				t.Fatal("loadU64 out of bounds must fail the call")
			}
			if err := k.storeU64(c.off, 1); err == nil {
				t.Fatal("storeU64 out of bounds must fail the call")
			}
		})
	}
	k.storeU8(a+16, 9) // ignored
	if k.loadU8(a+16) != 0 || k.loadU8(0) != 0 {
		t.Fatal("out-of-bounds byte loads read 0")
	}
}

func TestKernelInputOutputErrorAndReset(t *testing.T) {
	k := newKernel(4096)
	k.input = []byte("0123456789")
	if k.inputLoadU64(0) != 0x3736353433323130 || k.inputLoadU8(9) != '9' || k.inputLoadU8(10) != 0 {
		t.Fatal("input loads")
	}
	if v := k.inputLoadU64(8); v != 0x3938 {
		t.Fatalf("a partial last word reads the bytes that exist, zero-padded: %x", v)
	}
	off, err := k.write([]byte("out"))
	if err != nil {
		t.Fatal(err)
	}
	k.outputSet(off, 100) // outside: ignored
	if len(k.output()) != 0 {
		t.Fatal("an output range outside kernel memory is ignored")
	}
	k.outputSet(off, 3)
	if !bytes.Equal(k.output(), []byte("out")) {
		t.Fatalf("output %q", k.output())
	}
	k.errorSet(off + 1) // not a block: no message, as with the SDK
	if k.errorMessage() != "" {
		t.Fatal("an error offset that is not a block reads as no error")
	}
	k.errorSet(off)
	if k.errorMessage() != "out" {
		t.Fatal("error message")
	}
	k.reset()
	if k.errorMessage() != "" || len(k.output()) != 0 || k.length(off) != 0 || k.loadU8(off) != 0 {
		t.Fatal("reset must forget blocks, output, error and data")
	}
	if off2 := k.alloc(3); off2 != off || k.loadU8(off2) != 0 {
		t.Fatal("after reset memory is reused and zeroed")
	}
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
