package plugins_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/plugins"
)

// ttlProbeWAT is a plugin that calls one TTL host function on key "k" with
// the given TTL (value "v" for meridian_kv_set_ttl, delta 1 for the counter)
// and then answers nothing, which the host reports as a bad output: a call
// that gets that far got through the host function.
const ttlProbeWAT = `(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store (param i64 i32)))
  (import "extism:host/user" "meridian_kv_set_ttl" (func $set (param i64 i64 i64)))
  (import "extism:host/user" "meridian_kv_counter_add_ttl" (func $add (param i64 i64 i64) (result i64)))
  (func (export "on_request") (result i32)
    (local $k i64) (local $v i64)
    (local.set $k (call $alloc (i64.const 1)))
    (call $store (local.get $k) (i32.const 107))
    (local.set $v (call $alloc (i64.const 1)))
    (call $store (local.get $v) (i32.const 118))
    %s
    (i32.const 0)))`

func buildTTLProbe(t *testing.T, call string) []byte {
	t.Helper()
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "p.wat"), filepath.Join(dir, "p.wasm")
	if err := os.WriteFile(src, []byte(fmt.Sprintf(ttlProbeWAT, call)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("wat2wasm", src, "-o", dst).CombinedOutput(); err != nil {
		t.Fatalf("wat2wasm (Debian package wabt): %v\n%s", err, out)
	}
	b, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func setTTLCall(ttlMs int64) string {
	return fmt.Sprintf("(call $set (local.get $k) (local.get $v) (i64.const %d))", ttlMs)
}

func addTTLCall(ttlMs int64) string {
	return fmt.Sprintf("(drop (call $add (local.get $k) (i64.const 1) (i64.const %d)))", ttlMs)
}

// plainKV is a KV without expiry (as a PoP's KV may be). The MemoryKV is
// a named field, not embedded, so that its TTL methods are not promoted.
type plainKV struct{ MemoryKV *plugins.MemoryKV }

func (p plainKV) Get(ctx context.Context, site, key string) ([]byte, bool, error) {
	return p.MemoryKV.Get(ctx, site, key)
}
func (p plainKV) Set(ctx context.Context, site, key string, v []byte) error {
	return p.MemoryKV.Set(ctx, site, key, v)
}
func (p plainKV) Delete(ctx context.Context, site, key string) error {
	return p.MemoryKV.Delete(ctx, site, key)
}
func (p plainKV) CounterAdd(ctx context.Context, site, key string, d int64) (int64, error) {
	return p.MemoryKV.CounterAdd(ctx, site, key, d)
}

// TestKVTTLHostFunctions: on both engines, the TTL host functions store
// with an expiry a plugin's later reads respect, and a TTL out of range, or
// a PoP whose KV has no expiry, fails the call with an error that says why
// and stores nothing.
func TestKVTTLHostFunctions(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	engines := map[string]plugins.Engine{"go-sdk": engine, "native": nativeEngine(t)}
	for name, eng := range engines {
		t.Run(name, func(t *testing.T) {
			run := func(t *testing.T, kv plugins.KV, call string) error {
				t.Helper()
				h, _ := newHost(t, func(o *plugins.Options) { o.Engine, o.KV = eng, kv })
				deployProbe(t, h, "s", "p", buildTTLProbe(t, call))
				_, err := callOnce(h, "s", "p", nil)
				return err
			}
			passed := func(err error) bool { return err != nil && plugins.KindOf(err) == plugins.KindBadOutput }

			t.Run("set and counter expire", func(t *testing.T) {
				kv := plugins.NewMemoryKVClock(clock)
				if err := run(t, kv, setTTLCall(1500)+addTTLCall(60_000)); !passed(err) {
					t.Fatalf("call did not get through the host functions: %v", err)
				}
				ctx := context.Background()
				if v, ok, _ := kv.Get(ctx, "s", "k"); !ok || string(v) != "v" {
					t.Fatalf("value %q %v, want v", v, ok)
				}
				if n, _ := kv.CounterAddTTL(ctx, "s", "k", 0, time.Millisecond); n != 1 {
					t.Fatalf("counter %d, want 1", n)
				}
				advance(2 * time.Second)
				if _, ok, _ := kv.Get(ctx, "s", "k"); ok {
					t.Fatal("value readable after its 1.5 s TTL")
				}
				advance(time.Minute)
				if n, _ := kv.CounterAdd(ctx, "s", "k", 0); n != 0 {
					t.Fatalf("counter %d after its TTL, want 0", n)
				}
			})

			bad := []int64{0, -1, plugins.MaxKVTTL.Milliseconds() + 1}
			for _, ttl := range bad {
				for fn, call := range map[string]string{"meridian_kv_set_ttl": setTTLCall(ttl), "meridian_kv_counter_add_ttl": addTTLCall(ttl)} {
					t.Run(fmt.Sprintf("%s ttl %d", fn, ttl), func(t *testing.T) {
						kv := plugins.NewMemoryKVClock(clock)
						err := run(t, kv, call)
						want := fmt.Sprintf(`%s "k": ttl_ms must be 1..2592000000 (30 days), got %d`, fn, ttl)
						if err == nil || plugins.KindOf(err) != plugins.KindTrap || !strings.Contains(err.Error(), want) {
							t.Fatalf("got %v, want a trap saying %q", err, want)
						}
						if kv.Len() != 0 {
							t.Fatalf("a refused call stored %d entries", kv.Len())
						}
					})
				}
			}

			t.Run("KV without expiry", func(t *testing.T) {
				var kv plugins.KV = plainKV{plugins.NewMemoryKV()}
				if _, ok := kv.(plugins.ExpiringKV); ok {
					t.Fatal("plainKV has expiry")
				}
				err := run(t, kv, addTTLCall(1000))
				if err == nil || !strings.Contains(err.Error(), "meridian_kv_counter_add_ttl: the plugin KV of this PoP does not support expiry") {
					t.Fatalf("got %v", err)
				}
			})
			t.Run("no KV", func(t *testing.T) {
				err := run(t, nil, setTTLCall(1000))
				if err == nil || !strings.Contains(err.Error(), "no plugin KV is configured") {
					t.Fatalf("got %v", err)
				}
			})
		})
	}
}

// TestMemoryKVExpiry: the in-process KV follows the replicated KV's expiry
// rules and sweeps expired entries, so it stays bounded too.
func TestMemoryKVExpiry(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1_900_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	kv := plugins.NewMemoryKVClock(clock)
	ctx := context.Background()
	kv.CounterAddTTL(ctx, "s", "c", 2, time.Minute)
	advance(50 * time.Second)
	kv.CounterAddTTL(ctx, "s", "c", 1, time.Minute) // extends to 110 s
	advance(40 * time.Second)
	if n, _ := kv.CounterAddTTL(ctx, "s", "c", 0, time.Second); n != 3 {
		t.Fatalf("extended counter %d, want 3", n)
	}
	advance(time.Minute)
	if n, _ := kv.CounterAddTTL(ctx, "s", "c", 1, time.Minute); n != 1 {
		t.Fatalf("counter after expiry %d, want to start over at 1", n)
	}
	kv.CounterAdd(ctx, "s", "c", 1) // permanent from now on
	advance(24 * time.Hour)
	if n, _ := kv.CounterAdd(ctx, "s", "c", 0); n != 2 {
		t.Fatalf("permanent counter %d, want 2", n)
	}
	for i := range 10_000 {
		kv.SetTTL(ctx, "s", fmt.Sprint("k", i), []byte("v"), time.Second)
		advance(10 * time.Millisecond)
	}
	if n := kv.Len(); n > 1000 {
		t.Fatalf("%d entries held with about 100 live: expired ones are not swept", n)
	}
}
