package plugins_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/plugins"
	"github.com/meridian-edge/meridian/plugins/abi"
	"github.com/meridian-edge/meridian/plugins/native"
	"github.com/meridian-edge/meridian/plugins/plugintest"
)

// nativeEngine is shared by the tests (like engine) so its compilation cache is.
var (
	nativeOnce sync.Once
	nativeEng  *native.Engine
	nativeErr  error
)

func nativeEngine(t testing.TB) *native.Engine {
	t.Helper()
	nativeOnce.Do(func() {
		nativeEng, nativeErr = native.New(native.Options{CacheDir: plugintest.CacheDir()})
	})
	if nativeErr != nil {
		t.Fatal(nativeErr)
	}
	return nativeEng
}

// newNativeHost is newHost on the native engine.
func newNativeHost(t testing.TB, mod func(*plugins.Options)) *plugins.Host {
	t.Helper()
	h, _ := newHost(t, func(o *plugins.Options) {
		o.Engine = nativeEngine(t)
		if mod != nil {
			mod(o)
		}
	})
	return h
}

func TestNativeRefusesBadPlugins(t *testing.T) {
	h := newNativeHost(t, nil)
	noop := wasm["noop"]
	cases := []struct {
		name string
		wasm []byte
		want string
	}{
		{"import we do not provide", wasm["wat/unknownimport"], "imports extism:host/user.meridian_exec, which Meridian does not provide"},
		{"network import", wasm["wat/network"], "imports extism:host/env.http_request, which Meridian does not provide (plugins get no network)"},
		{"no on_request export", wasm["wat/noexport"], "does not export on_request"},
		{"truncated wasm", noop[:len(noop)/2], "not a valid wasm module"},
		{"not wasm at all", []byte("#!/bin/sh\nrm -rf /\n"), "not a valid wasm module"},
		{"empty", nil, "not a valid wasm module"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := h.Add(context.Background(), "shop", "p", c.wasm)
			var ve *plugins.ValidationError
			if !errors.As(err, &ve) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want a ValidationError containing %q, got %v", c.want, err)
			}
		})
	}
	if vs := h.Versions("shop", "p"); len(vs) != 0 {
		t.Fatalf("refused uploads must not be stored, got %+v", vs)
	}
}

// TestNativeHostilePluginsAreContained runs every hostile plugin on the
// native engine: the same error kinds as on the go-sdk, the failed instance
// is replaced, and another site's plugin keeps working.
func TestNativeHostilePluginsAreContained(t *testing.T) {
	for _, eng := range []struct {
		name string
		e    plugins.Engine
	}{{"sdk", engine}, {"native", nativeEngine(t)}} {
		t.Run(eng.name, func(t *testing.T) {
			h, reg := newHost(t, func(o *plugins.Options) {
				o.Engine = eng.e
				o.BreakerThreshold = 100
				o.Limits.Timeout = 300 * time.Millisecond
			})
			deploy(t, h, "good", "noop", "noop")
			for _, c := range []struct {
				plugin string
				kind   plugins.ErrorKind
			}{
				{"loop", plugins.KindTimeout},
				{"membomb", plugins.KindMemory},
				{"trap", plugins.KindTrap},
				{"garbage", plugins.KindBadOutput},
				{"emptyoutput", plugins.KindBadOutput},
				{"badptr", plugins.KindTrap},
				{"pluginerror", plugins.KindPluginError},
			} {
				t.Run(c.plugin, func(t *testing.T) {
					deploy(t, h, "evil", c.plugin, "wat/"+c.plugin)
					for i := range 2 {
						_, err := callOnce(h, "evil", c.plugin, nil)
						if got := plugins.KindOf(err); err == nil || got != c.kind {
							t.Fatalf("call %d: want kind %s, got %v", i, c.kind, err)
						}
					}
					if n := counter(t, reg, "meridian_plugin_instances", map[string]string{"plugin": c.plugin, "state": "live"}); n != 0 {
						t.Fatalf("failed instances must be discarded, %v still live", n)
					}
					if _, err := callOnce(h, "good", "noop", nil); err != nil {
						t.Fatalf("good plugin after %s: %v", c.plugin, err)
					}
				})
			}
			if logs := h.Logs("evil"); len(logs) == 0 || !strings.Contains(logs[0].Msg, "timeout") {
				t.Fatalf("want the timeout kept for the site owner, got %+v", logs)
			}
		})
	}
}

// TestNativePluginErrorMessage: the message a plugin set with error_set
// reaches the site owner's log.
func TestNativePluginErrorMessage(t *testing.T) {
	h := newNativeHost(t, nil)
	deploy(t, h, "s", "p", "wat/pluginerror")
	_, err := callOnce(h, "s", "p", nil)
	if plugins.KindOf(err) != plugins.KindPluginError || !strings.Contains(err.Error(), "no") {
		t.Fatalf("want plugin_error with the plugin's message, got %v", err)
	}
}

// TestNativeLoopDoesNotStopTheWorld: a looping plugin on the native engine
// must not freeze the Go process, even when a GC (stop-the-world) is
// requested while it loops; the deadline ends it.
func TestNativeLoopDoesNotStopTheWorld(t *testing.T) {
	h := newNativeHost(t, func(o *plugins.Options) { o.Limits.Timeout = 200 * time.Millisecond })
	deploy(t, h, "s", "loop", "wat/loop")
	done := make(chan error, 1)
	go func() {
		_, err := callOnce(h, "s", "loop", nil)
		done <- err
	}()
	gcs := 0
	for {
		select {
		case err := <-done:
			if plugins.KindOf(err) != plugins.KindTimeout {
				t.Fatalf("want timeout, got %v", err)
			}
			if gcs == 0 {
				t.Fatal("no GC ran while the plugin looped")
			}
			return
		default:
			runtimeGC()
			gcs++
		}
	}
}

// TestNativeKVGeoAndConfig: the meridian_* host functions work on the
// native engine (ratelimit uses the KV counter, geoblock meridian_geo).
func TestNativeKVGeoAndConfig(t *testing.T) {
	kv := plugins.NewMemoryKV()
	h := newNativeHost(t, func(o *plugins.Options) { o.KV = kv })
	deploy(t, h, "a", "rl", "ratelimit")
	cfg := map[string]string{"limit": "2"}
	for i := range 3 {
		a, err := callOnce(h, "a", "rl", cfg)
		if err != nil || a.Respond != (i == 2) {
			t.Fatalf("call %d: respond=%v %v", i, a.Respond, err)
		}
	}
	deploy(t, h, "a", "geo", "geoblock")
	x := h.Begin(&plugins.Chain{Site: "a", Entries: []plugins.Entry{{Plugin: "geo", Config: map[string]string{"annotate": "true"}}}},
		plugins.GeoInfo{Country: "DE", Region: "BE", Lat: 52.5, Lon: 13.4, Known: true})
	defer x.Close()
	var a abi.Actions
	if err := x.Request(context.Background(), 0, req(), &a); err != nil {
		t.Fatal(err)
	}
	if len(a.SetRequestHeaders) != 1 || !strings.HasPrefix(a.SetRequestHeaders[0].Value, "DE;BE;52.5") {
		t.Fatalf("geo annotation: %+v", a.SetRequestHeaders)
	}
}

func runtimeGC() { runtime.GC() }

func tempDir() (string, error) { return os.MkdirTemp("", "meridian-native-test") }

// TestSiteEngineSwitch: Options.SiteEngine runs one site's plugins on the
// go-sdk reference host while the others run on the native engine.
func TestSiteEngineSwitch(t *testing.T) {
	sdk := &countingEngine{Engine: engine}
	nat := &countingEngine{Engine: nativeEngine(t)}
	h, _ := newHost(t, func(o *plugins.Options) {
		o.Engine = nat
		o.SiteEngine = func(site string) plugins.Engine {
			if site == "debug" {
				return sdk
			}
			return nil
		}
	})
	deploy(t, h, "debug", "h", "headers")
	deploy(t, h, "shop", "h", "headers")
	for _, site := range []string{"debug", "shop"} {
		a, err := callOnce(h, site, "h", map[string]string{"request": "x-a: 1"})
		if err != nil || len(a.SetRequestHeaders) != 2 {
			t.Fatalf("%s: %+v %v", site, a, err)
		}
	}
	// Add and Activate each compile once.
	if sdk.n != 2 || nat.n != 2 {
		t.Fatalf("compiles: go-sdk %d (want 2, site debug), native %d (want 2, site shop)", sdk.n, nat.n)
	}
}

// countingEngine counts compiles (tests run Add/Activate on one goroutine).
type countingEngine struct {
	plugins.Engine
	n int
}

func (c *countingEngine) Compile(ctx context.Context, wasm []byte, lim plugins.Limits) (plugins.Program, error) {
	c.n++
	return c.Engine.Compile(ctx, wasm, lim)
}

// TestNativeConcurrentCallsAndTimeouts: many goroutines call a good plugin
// while others run a looping one on the same native engine; only the loop
// calls time out (the watchdog stops exactly the calls past their
// deadline), and every good call answers correctly.
func TestNativeConcurrentCallsAndTimeouts(t *testing.T) {
	h := newNativeHost(t, func(o *plugins.Options) {
		o.MaxInstances = 4
		o.BreakerThreshold = 1 << 20
		o.Limits.Timeout = 100 * time.Millisecond
	})
	deploy(t, h, "s", "h", "headers")
	deploy(t, h, "s", "loop", "wat/loop")
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for g := range 12 {
		wg.Go(func() {
			for range 8 {
				if g%4 == 0 {
					if _, err := callOnce(h, "s", "loop", nil); plugins.KindOf(err) != plugins.KindTimeout {
						errs <- fmt.Errorf("loop: want timeout, got %v", err)
					}
					continue
				}
				a, err := callOnce(h, "s", "h", map[string]string{"request": "x-a: 1"})
				if err != nil || len(a.SetRequestHeaders) != 2 || a.SetRequestHeaders[1].Value != "1" {
					errs <- fmt.Errorf("good plugin: %+v %v", a, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// meteringHostiles are plugins aimed at the native host's metering (see
// plugins/native/meter.go): work that never loops, loops hidden in
// br_table, bulk memory in a loop, a start function that never ends, and a
// plugin posing as the metering import.
var meteringHostiles = map[string]string{
	// 2^62 calls and not a single loop: charged at every function entry.
	"recursion": `(module
  (func $f (param i32)
    (if (i32.gt_s (local.get 0) (i32.const 0))
      (then (call $f (i32.sub (local.get 0) (i32.const 1)))
            (call $f (i32.sub (local.get 0) (i32.const 1))))))
  (func (export "on_request") (result i32) (call $f (i32.const 62)) (i32.const 0)))`,
	// A loop whose back edge is a br_table.
	"brtable": `(module
  (func (export "on_request") (result i32)
    (loop $l (br_table $l $l (i32.const 0)))
    (i32.const 0)))`,
	// Fills its whole memory again and again: charged per 64 KiB.
	"memfill": `(module
  (memory 64)
  (func (export "on_request") (result i32)
    (loop $l (memory.fill (i32.const 0) (i32.const 7) (i32.const 4194304)) (br $l))
    (i32.const 0)))`,
	// Never finishes its start function: refused at upload, it does not start.
	"startloop": `(module
  (func $s (loop $l (br $l)))
  (start $s)
  (func (export "on_request") (result i32) (i32.const 0)))`,
	// Imports the metering function to reset its own budget.
	"fakemeter": `(module
  (import "meridian:host/meter" "yield" (func $y (result i32)))
  (func (export "on_request") (result i32) (drop (call $y)) (i32.const 0)))`,
	// Imports the kernel's Go side directly, around its bounds checks.
	"fakekernel": `(module
  (import "meridian:host/kernel" "fault" (func $f (param i32 i64)))
  (func (export "on_request") (result i32) (call $f (i32.const 0) (i64.const 0)) (i32.const 0)))`,
}

func buildWAT(t *testing.T, name, src string) []byte {
	t.Helper()
	dir := t.TempDir()
	in, out := dir+"/"+name+".wat", dir+"/"+name+".wasm"
	if err := os.WriteFile(in, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command("wat2wasm", in, "-o", out).CombinedOutput(); err != nil {
		t.Fatalf("wat2wasm %s: %v\n%s", name, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestNativeMeteringHostiles: each plugin built to escape the metering is
// stopped at its deadline (timeout) or refused at upload, while GCs run.
func TestNativeMeteringHostiles(t *testing.T) {
	h := newNativeHost(t, func(o *plugins.Options) {
		o.Limits.Timeout = 200 * time.Millisecond
		o.Limits.InitTimeout = time.Millisecond
		o.BreakerThreshold = 100
	})
	stop := make(chan struct{})
	var gcs sync.WaitGroup
	gcs.Go(func() { // keep stopping the world while the plugins run
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
				runtime.GC()
			}
		}
	})
	defer func() { close(stop); gcs.Wait() }()
	for _, name := range []string{"recursion", "brtable", "memfill"} {
		t.Run(name, func(t *testing.T) {
			wasm["native/"+name] = buildWAT(t, name, meteringHostiles[name])
			deploy(t, h, "evil", name, "native/"+name)
			start := time.Now()
			_, err := callOnce(h, "evil", name, nil)
			if plugins.KindOf(err) != plugins.KindTimeout {
				t.Fatalf("want timeout, got %v", err)
			}
			if d := time.Since(start); d > 20*time.Second {
				t.Fatalf("the deadline of 200ms stopped the call only after %v", d)
			}
		})
	}
	for name, want := range map[string]string{
		"startloop":  "does not start",
		"fakemeter":  "imports meridian:host/meter.yield, which Meridian does not provide",
		"fakekernel": "imports meridian:host/kernel.fault, which Meridian does not provide",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := h.Add(context.Background(), "evil", name, buildWAT(t, name, meteringHostiles[name]))
			var ve *plugins.ValidationError
			if !errors.As(err, &ve) || !strings.Contains(err.Error(), want) {
				t.Fatalf("want a ValidationError containing %q, got %v", want, err)
			}
		})
	}
}

// TestNativeReloadHasBoundedMemory is TestReloadHasBoundedMemory on the
// native engine: swapping versions (with a request in flight across each
// swap) frees each old version's runtime, compiled code, instances and
// watchdog entries.
func TestNativeReloadHasBoundedMemory(t *testing.T) {
	for _, c := range []struct {
		name    string
		v1, v2  []byte
		reloads int
	}{
		{"wat", wasm["wat/continue"], withCustomSection(wasm["wat/continue"], "v2"), 200},
		{"go", wasm["headers"], withCustomSection(wasm["headers"], "v2"), 30},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newNativeHost(t, nil)
			ctx := context.Background()
			a, err := h.Add(ctx, "s", "p", c.v1)
			if err != nil {
				t.Fatal(err)
			}
			b, err := h.Add(ctx, "s", "p", c.v2)
			if err != nil {
				t.Fatal(err)
			}
			chain := &plugins.Chain{Site: "s", Entries: []plugins.Entry{{Plugin: "p"}}}
			base := min(19, c.reloads/3)
			var baseHeap, baseRSS uint64
			var act abi.Actions
			for i := range c.reloads {
				x := h.Begin(chain, plugins.GeoInfo{})
				if i > 0 {
					if err := x.Request(ctx, 0, req(), &act); err != nil {
						t.Fatalf("reload %d: %v", i, err)
					}
				}
				v := a.Version
				if i%2 == 1 {
					v = b.Version
				}
				if err := h.Activate(ctx, "s", "p", v); err != nil {
					t.Fatal(err)
				}
				x.Close()
				if i == base {
					baseHeap, baseRSS = heapAndRSS(t)
				}
			}
			heap, rss := heapAndRSS(t)
			t.Logf("heap %d -> %d KiB, rss %d -> %d KiB", baseHeap>>10, heap>>10, baseRSS>>10, rss>>10)
			// RSS as in reload (not under -race: see raceEnabled).
			if heap > baseHeap+8<<20 || (!raceEnabled && rss > baseRSS+48<<20) {
				t.Errorf("memory grew over %d reloads: heap %d -> %d KiB, rss %d -> %d KiB", c.reloads-base, baseHeap>>10, heap>>10, baseRSS>>10, rss>>10)
			}
		})
	}
}
