package plugins_test

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/meridian-edge/meridian/plugins"
)

// TestOutputTailKeepsTheLastBytesInOrder writes numbered lines in writes
// of every size (within, across and beyond the ring's end, and larger
// than the whole tail) and checks that exactly the last bytes are kept,
// oldest first.
func TestOutputTailKeepsTheLastBytesInOrder(t *testing.T) {
	var all strings.Builder
	for i := range 2000 {
		all.WriteString("line-")
		all.WriteString(strings.Repeat("x", i%37))
		all.WriteString("|")
	}
	src := all.String()
	rng := rand.New(rand.NewPCG(1, 2))
	var o plugins.OutputTail
	for _, maxWrite := range []int{1, 7, 300, plugins.OutputTailSize - 1, plugins.OutputTailSize, 3 * plugins.OutputTailSize} {
		o.Reset()
		written := 0
		for written < len(src) {
			n := min(1+rng.IntN(maxWrite), len(src)-written)
			o.Write([]byte(src[written : written+n]))
			written += n
			// Check at several points, so that every position of the
			// ring's start is read at least once.
			if rng.IntN(20) == 0 || written == len(src) {
				want := src[:written]
				if len(want) > plugins.OutputTailSize {
					want = "…" + want[len(want)-plugins.OutputTailSize:]
				}
				if got := o.Output(); got != want {
					t.Fatalf("writes of up to %d bytes, after %d bytes: kept\n%q\nwant\n%q", maxWrite, written, got, want)
				}
			}
		}
	}
}

func TestOutputTailOutOfMemoryIsTheGoRuntimesReport(t *testing.T) {
	trace := "\ngoroutine 1 gp=0x1 m=0 mp=0x2 [running]:\nruntime.throw({0x1, 0xd})\n"
	cases := []struct {
		name   string
		writes []string
		oom    bool
		reason string
	}{
		{"go heap cannot grow",
			[]string{"runtime: out of memory: cannot allocate ", "104857600", "-byte block (", "393216", " in use)\n", "fatal error: ", "out of memory", "\n", trace},
			true, "runtime: out of memory: cannot allocate 104857600-byte block (393216 in use)"},
		{"go throw without the allocation line",
			[]string{"fatal error: ", "out of memory", "\n", trace}, true, "fatal error: out of memory"},
		{"go report after 10 KB of output",
			[]string{strings.Repeat("noise\n", 2000), "runtime: out of memory: cannot allocate 1048576-byte block (12943360 in use)\n", "fatal error: out of memory\n", strings.Repeat(trace, 40)},
			true, "runtime: out of memory: cannot allocate 1048576-byte block (12943360 in use)"},
		{"go report without a final newline",
			[]string{"fatal error: out of memory"}, true, "fatal error: out of memory"},
		{"words logged, then a panic",
			[]string{"upstream cache: out of memory, serving without it\n", "panic: ", "assignment to entry in nil map", "\n", trace},
			false, "panic: assignment to entry in nil map"},
		{"go's fatal error quoted inside a line",
			[]string{"log: fatal error: out of memory (from the origin)\n", "panic: boom\n"}, false, "panic: boom"},
		{"go's allocation line without the fatal error",
			[]string{"runtime: out of memory: cannot allocate 1-byte block (0 in use)\n", "panic: boom\n"}, false, "runtime: out of memory: cannot allocate 1-byte block (0 in use)"},
		{"a panic first, out of memory after it",
			[]string{"panic: boom\n", "fatal error: out of memory\n"}, false, "panic: boom"},
		{"words only, no failure report",
			[]string{"out of memory\n"}, false, "out of memory"},
		{"another fatal error",
			[]string{"fatal error: all goroutines are asleep - deadlock!\n"}, false, "fatal error: all goroutines are asleep - deadlock!"},
	}
	var o plugins.OutputTail
	for _, c := range cases {
		o.Reset()
		for _, w := range c.writes {
			o.Write([]byte(w))
		}
		if got := o.OutOfMemory(); got != c.oom {
			t.Errorf("%s: OutOfMemory() = %v, want %v", c.name, got, c.oom)
		}
		if got := o.Summary(); got != c.reason {
			t.Errorf("%s: Summary() = %q, want %q", c.name, got, c.reason)
		}
		// The same bytes one at a time: the verdict must not depend on
		// how the guest split its writes.
		o.Reset()
		for _, b := range []byte(strings.Join(c.writes, "")) {
			o.Write([]byte{b})
		}
		if got := o.OutOfMemory(); got != c.oom {
			t.Errorf("%s, written byte by byte: OutOfMemory() = %v, want %v", c.name, got, c.oom)
		}
	}
}

func TestOutputTailWritesDoNotAllocate(t *testing.T) {
	var o plugins.OutputTail
	small, large := []byte("frame\n"), []byte(strings.Repeat("y", plugins.OutputTailSize+5))
	o.Write(large) // full: every later write wraps around the ring
	if n := testing.AllocsPerRun(100, func() { o.Write(small); o.Write(large[:700]) }); n != 0 {
		t.Fatalf("writing to a full tail allocates %v times", n)
	}
}

// BenchmarkOutputTailWrite: a plugin printing short lines once its tail
// is full (a loop logging per item, a long panic trace).
//
//	go test -run '^$' -bench OutputTailWrite -benchmem ./plugins/
func BenchmarkOutputTailWrite(b *testing.B) {
	var o plugins.OutputTail
	o.Write([]byte(strings.Repeat("z", plugins.OutputTailSize)))
	line := []byte("runtime.gopark(0x357c8, 0x14d320, 0x9, 0xa, 0x2)\n")
	b.SetBytes(int64(len(line)))
	b.ReportAllocs()
	for b.Loop() {
		o.Write(line)
	}
}
