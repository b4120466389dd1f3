package plugins_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/plugins"
	"github.com/meridian-edge/meridian/plugins/plugintest"
)

// Mistakes a plugin author makes, and what the host tells them: at upload
// (a command-mode Go build, an export of the wrong type) and when a call
// fails (a Go panic, running out of memory). Every case runs on both hosts.

// bothHosts runs f with a host on each engine.
func bothHosts(t *testing.T, mod func(*plugins.Options), f func(t *testing.T, h *plugins.Host)) {
	for _, eng := range []struct {
		name string
		e    func(testing.TB) plugins.Engine
	}{
		{"sdk", func(testing.TB) plugins.Engine { return engine }},
		{"native", func(t testing.TB) plugins.Engine { return nativeEngine(t) }},
	} {
		t.Run(eng.name, func(t *testing.T) {
			h, _ := newHost(t, func(o *plugins.Options) {
				o.Engine = eng.e(t)
				if mod != nil {
					mod(o)
				}
			})
			f(t, h)
		})
	}
}

func TestRefusesCommandModeBuilds(t *testing.T) {
	bothHosts(t, nil, func(t *testing.T, h *plugins.Host) {
		for _, key := range []string{"panicprobe-command", "wat/command"} {
			_, err := h.Add(context.Background(), "shop", "p", wasm[key])
			var ve *plugins.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("%s: want a ValidationError, got %v", key, err)
			}
			for _, want := range []string{"exports _start but not _initialize",
				"GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o plugin.wasm ."} {
				if !strings.Contains(err.Error(), want) {
					t.Fatalf("%s: error %q does not say %q", key, err, want)
				}
			}
		}
		if vs := h.Versions("shop", "p"); len(vs) != 0 {
			t.Fatalf("refused uploads must not be stored, got %+v", vs)
		}
		// The same source built with -buildmode=c-shared (it exports
		// _initialize too) is accepted, and so is a module without _start.
		for _, key := range []string{"panicprobe", "noop", "wat/continue"} {
			if _, err := h.Add(context.Background(), "shop", key, wasm[key]); err != nil {
				t.Fatalf("%s refused: %v", key, err)
			}
		}
	})
}

func TestRefusesExportsOfTheWrongType(t *testing.T) {
	bothHosts(t, nil, func(t *testing.T, h *plugins.Host) {
		cases := []struct{ key, want string }{
			{"wat/badsig", "its export on_request has the type (param i32) (result i32), but plugins/README.md requires (result i32): no parameters and an i32 result"},
			{"wat/badsigresp", "its export on_response has the type (result i64), but plugins/README.md requires (result i32)"},
		}
		for _, c := range cases {
			_, err := h.Add(context.Background(), "shop", "p", wasm[c.key])
			var ve *plugins.ValidationError
			if !errors.As(err, &ve) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("%s: want a ValidationError containing %q, got %v", c.key, c.want, err)
			}
		}
		// No result at all is the Extism convention for success: kept.
		deploy(t, h, "shop", "noresult", "wat/noresult")
		a, err := callOnce(h, "shop", "noresult", nil)
		if err != nil || a.Respond || len(a.SetRequestHeaders) != 0 {
			t.Fatalf("plugin without a result: %+v %v", a, err)
		}
	})
}

// failedCall runs on_request of panicprobe with config do and returns the
// error and the host's log line about it.
func failedCall(t *testing.T, h *plugins.Host, site, do string) (*plugins.CallError, string) {
	t.Helper()
	_, err := callOnce(h, site, "probe", map[string]string{"do": do})
	var ce *plugins.CallError
	if !errors.As(err, &ce) {
		t.Fatalf("do=%s: want a CallError, got %v", do, err)
	}
	logs := h.Logs(site)
	if len(logs) == 0 {
		t.Fatalf("do=%s: the failure was not logged for the site owner", do)
	}
	return ce, logs[len(logs)-1].Msg
}

func TestGoPanicReasonReachesTheSiteOwner(t *testing.T) {
	bothHosts(t, func(o *plugins.Options) { o.BreakerThreshold = 100 }, func(t *testing.T, h *plugins.Host) {
		deploy(t, h, "shop", "probe", "panicprobe")
		for i := range 2 { // the second call runs on a fresh instance
			ce, line := failedCall(t, h, "shop", "panic")
			t.Logf("panic: %s", line)
			if ce.Kind != plugins.KindTrap {
				t.Fatalf("call %d: kind %s, want trap: %v", i, ce.Kind, ce)
			}
			if !strings.Contains(line, "trap: panic: assignment to entry in nil map (more in the plugin's output)") {
				t.Fatalf("call %d: log line does not give the panic's reason: %q", i, line)
			}
			if !strings.Contains(ce.Output, "goroutine 1 [running]") || len(ce.Output) > plugins.OutputTailSize+10 {
				t.Fatalf("call %d: output is not the panic's trace (%d bytes): %q", i, len(ce.Output), ce.Output)
			}
			// The trace itself reaches the site owner's log, just before.
			if logs := h.Logs("shop"); len(logs) < 2 || !strings.Contains(logs[len(logs)-2].Msg, "goroutine 1 [running]") {
				t.Fatalf("call %d: the plugin's output is not in the site's log", i)
			}
		}
		// A plugin that wrote a lot before panicking: the reason is still
		// found and what is kept stays bounded.
		ce, line := failedCall(t, h, "shop", "flood")
		if !strings.Contains(line, "trap: panic: assignment to entry in nil map") || len(ce.Output) > plugins.OutputTailSize+10 {
			t.Fatalf("after 64 KiB of output: %q (output %d bytes)", line, len(ce.Output))
		}
		// Output of a successful call is dropped, and does not leak into
		// the explanation of the next failure.
		if _, err := callOnce(h, "shop", "probe", map[string]string{"do": "print"}); err != nil {
			t.Fatal(err)
		}
		if _, err := callOnce(h, "shop", "probe", nil); err != nil {
			t.Fatal(err)
		}
		deploy(t, h, "shop", "raw", "wat/stderrtrap")
		_, err := callOnce(h, "shop", "raw", nil)
		if !strings.Contains(err.Error(), "trap: panic: index out of range") || strings.Contains(err.Error(), "hello") {
			t.Fatalf("raw wasm writing to fd 2: %v", err)
		}
	})
}

func TestOutOfMemoryIsReportedAsMemory(t *testing.T) {
	mod := func(o *plugins.Options) {
		o.BreakerThreshold = 100
		o.Limits.Timeout = 5 * time.Second // -race on two shared cores: the grow loop must reach the cap first
	}
	bothHosts(t, mod, func(t *testing.T, h *plugins.Host) {
		deploy(t, h, "shop", "probe", "panicprobe")
		for _, do := range []string{"oom", "grow"} {
			ce, line := failedCall(t, h, "shop", do)
			t.Logf("do=%s: %s", do, line)
			if ce.Kind != plugins.KindMemory {
				t.Fatalf("do=%s: kind %s, want memory: %v", do, ce.Kind, ce)
			}
			for _, want := range []string{"memory: ran out of memory at its cap of 256 pages (16 MiB)", "plugins.memory in the configuration", "out of memory"} {
				if !strings.Contains(line, want) {
					t.Fatalf("do=%s: log line %q does not say %q", do, line, want)
				}
			}
		}
		// The instance that failed was replaced: the plugin works again.
		if _, err := callOnce(h, "shop", "probe", nil); err != nil {
			t.Fatal(err)
		}
	})
}

func TestOutputTailIsBoundedAndFree(t *testing.T) {
	var o plugins.OutputTail
	if o.Summary() != "" || o.Output() != "" || o.Written() {
		t.Fatal("empty tail is not empty")
	}
	o.Write([]byte("panic: boom\n\ngoroutine 1 [running]:\n"))
	for range 100 {
		o.Write([]byte(strings.Repeat("frame\x1b[31m\n", 50)))
	}
	if got := o.Summary(); got != "panic: boom" {
		t.Fatalf("summary %q: the reason scrolled out of the tail must come from the head", got)
	}
	if out := o.Output(); len(out) > plugins.OutputTailSize+4 || strings.ContainsRune(out, 0x1b) {
		t.Fatalf("output %d bytes, or with control bytes: %q", len(out), out)
	}
	o.Reset()
	o.Write([]byte("line one\nlast words\n"))
	if got := o.Summary(); got != "last words" {
		t.Fatalf("without a panic the last line explains: got %q", got)
	}
	p := []byte("x")
	if n := testing.AllocsPerRun(100, func() { o.Reset(); o.Write(p) }); n != 0 {
		t.Fatalf("writing allocates %v times", n)
	}
}

// TestOutputBeyondTheTailKeepsItsLastBytesInOrder: a plugin that prints
// 11 KB of numbered lines and then panics. What the site owner gets is
// the end of that output, unbroken and in the order it was written,
// followed by the panic's trace.
func TestOutputBeyondTheTailKeepsItsLastBytesInOrder(t *testing.T) {
	var lines strings.Builder
	for i := 1; i <= 1000; i++ {
		fmt.Fprintf(&lines, "line %05d\n", i)
	}
	bothHosts(t, func(o *plugins.Options) { o.BreakerThreshold = 100 }, func(t *testing.T, h *plugins.Host) {
		deploy(t, h, "shop", "probe", "panicprobe")
		ce, line := failedCall(t, h, "shop", "count")
		if ce.Kind != plugins.KindTrap || !strings.Contains(line, "panic: assignment to entry in nil map") {
			t.Fatalf("kind %s, log line %q: want the panic as a trap", ce.Kind, line)
		}
		out, cut := strings.CutPrefix(ce.Output, "…")
		if !cut {
			t.Fatalf("output does not say that its beginning was dropped: %.80q", ce.Output)
		}
		printed, trace, ok := strings.Cut(out, "panic: assignment to entry in nil map")
		if !ok || !strings.Contains(trace, "goroutine 1 [running]") {
			t.Fatalf("the panic's trace is not at the end of the output: %q", out)
		}
		// Everything before the panic is the end of the numbered lines,
		// in order, ending with the last one.
		if !strings.HasSuffix(lines.String(), printed) || !strings.HasSuffix(printed, "line 01000\n") {
			t.Fatalf("kept output is not the end of what was printed, in order:\n%s", printed)
		}
		if len(out) < plugins.OutputTailSize-2 || len(out) > plugins.OutputTailSize {
			t.Fatalf("kept %d bytes, want the last %d", len(out), plugins.OutputTailSize)
		}
	})
}

// TestLoggingOutOfMemoryIsNotAMemoryFailure: a plugin that logs the words
// "out of memory" (about something else) and then panics is a trap; its
// memory is fine and the site owner must not be told to raise a cap.
func TestLoggingOutOfMemoryIsNotAMemoryFailure(t *testing.T) {
	bothHosts(t, func(o *plugins.Options) { o.BreakerThreshold = 100 }, func(t *testing.T, h *plugins.Host) {
		deploy(t, h, "shop", "probe", "panicprobe")
		ce, line := failedCall(t, h, "shop", "oomlog")
		if ce.Kind != plugins.KindTrap {
			t.Fatalf("kind %s, want trap: %v", ce.Kind, ce)
		}
		if !strings.Contains(line, "trap: panic: assignment to entry in nil map") || strings.Contains(line, "plugins.memory") {
			t.Fatalf("log line %q: want the panic, and no advice about the memory cap", line)
		}
		if !strings.Contains(ce.Output, "upstream cache: out of memory, serving without it") {
			t.Fatalf("the plugin's own line is missing from its output: %q", ce.Output)
		}
	})
}

// TestNativeMemoryKindIsARefusedGrow: on the native host a failed call is
// out of memory when its memory.grow was refused at the cap (wazero then
// returns -1 and says nothing; AssemblyScript's allocator traps with
// unreachable, printing nothing), not when its memory is merely large.
// Real AssemblyScript builds and hand-written wasm, with a 16 MiB cap.
//
// The go-sdk reference host cannot see a refused memory.grow (wazero
// refuses it before asking the memory allocator); it still judges by how
// close the memory is to the cap, and gets the first and last case wrong.
func TestNativeMemoryKindIsARefusedGrow(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	probes := map[string][]byte{}
	for _, name := range []string{"oom", "bigtrap"} {
		b, err := plugintest.AssemblyScriptProbe(ctx, dir, name)
		if err != nil {
			t.Fatal(err)
		}
		probes["as/"+name] = b
	}
	h := newNativeHost(t, func(o *plugins.Options) { o.BreakerThreshold = 100 })
	for _, c := range []struct {
		plugin string
		kind   plugins.ErrorKind
	}{
		{"as/oom", plugins.KindMemory},       // 100 MiB at once, memory far below the cap
		{"wat/bigalloc", plugins.KindMemory}, // the same, by hand
		{"wat/membomb", plugins.KindMemory},  // grows until refused
		{"as/bigtrap", plugins.KindTrap},     // holds 13 MiB, then a failed check
		{"wat/growtrap", plugins.KindTrap},   // holds 240 of 256 pages, then unreachable
	} {
		b, ok := probes[c.plugin]
		if !ok {
			b = wasm[c.plugin]
		}
		v, err := h.Add(ctx, "shop", "p", b)
		if err != nil {
			t.Fatalf("add %s: %v", c.plugin, err)
		}
		if err := h.Activate(ctx, "shop", "p", v.Version); err != nil {
			t.Fatalf("activate %s: %v", c.plugin, err)
		}
		for i := range 2 { // the second call runs on a fresh instance
			_, err := callOnce(h, "shop", "p", nil)
			if got := plugins.KindOf(err); err == nil || got != c.kind {
				t.Fatalf("%s, call %d: want kind %s, got %v", c.plugin, i, c.kind, err)
			}
		}
	}
}
