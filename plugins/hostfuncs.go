package plugins

import (
	"context"
	"fmt"

	extism "github.com/extism/go-sdk"

	"github.com/meridian-edge/meridian/plugins/abi"
)

// Host function names a plugin may import from "extism:host/user". They are
// part of the versioned contract in plugins/README.md.
const (
	HostKVGet        = "meridian_kv_get"
	HostKVSet        = "meridian_kv_set"
	HostKVDelete     = "meridian_kv_delete"
	HostKVCounterAdd = "meridian_kv_counter_add"
	HostGeo          = "meridian_geo"
	// HostKVSetTTL and HostKVCounterAddTTL are the expiring variants (added
	// in contract version 1 without changing the functions above, so
	// plugins built before keep working).
	HostKVSetTTL        = "meridian_kv_set_ttl"
	HostKVCounterAddTTL = "meridian_kv_counter_add_ttl"
)

// UserNamespace is where Extism PDKs import user host functions from.
const UserNamespace = "extism:host/user"

// userNamespace is kept for the existing callers.
const userNamespace = UserNamespace

// HostMemory is the Extism kernel memory as a host function sees it. Each
// engine implements it over its own kernel (the SDK's wasm kernel, or the
// native engine's Go kernel), so the meridian_* functions are written once.
type HostMemory interface {
	// ReadBlock returns a copy of the block at off. An offset that is not
	// the start of a block reads as empty, as with the Extism kernel.
	ReadBlock(off uint64) ([]byte, error)
	// WriteBlock allocates a block holding b and returns its offset.
	WriteBlock(b []byte) (uint64, error)
}

// HostFunction is one meridian_* host function, independent of the engine.
// Every parameter and result is an i64. Call fails the plugin call by
// panicking; both engines turn that into a trap of that call only.
type HostFunction struct {
	Name            string
	Params, Results int
	Call            func(ctx context.Context, env *CallEnv, mem HostMemory, stack []uint64)
}

// HostFunctions returns the meridian_* functions of contract version 1
// (namespace UserNamespace).
func HostFunctions() []HostFunction {
	return []HostFunction{
		{Name: HostKVGet, Params: 1, Results: 1, Call: func(ctx context.Context, env *CallEnv, m HostMemory, stack []uint64) {
			key := readKey(m, stack[0], HostKVGet)
			v, ok, err := kvOf(env).Get(ctx, env.Site, key)
			if err != nil {
				panic(fmt.Errorf("%s %q: %w", HostKVGet, key, err))
			}
			if !ok || len(v) == 0 {
				stack[0] = 0
				return
			}
			stack[0] = write(m, v, HostKVGet)
		}},
		{Name: HostKVSet, Params: 2, Call: func(ctx context.Context, env *CallEnv, m HostMemory, stack []uint64) {
			key := readKey(m, stack[0], HostKVSet)
			v := read(m, stack[1], HostKVSet)
			if err := checkKV(key, v); err != nil {
				panic(fmt.Errorf("%s: %w", HostKVSet, err))
			}
			var err error
			if len(v) == 0 {
				err = kvOf(env).Delete(ctx, env.Site, key)
			} else {
				err = kvOf(env).Set(ctx, env.Site, key, v)
			}
			if err != nil {
				panic(fmt.Errorf("%s %q: %w", HostKVSet, key, err))
			}
		}},
		{Name: HostKVDelete, Params: 1, Call: func(ctx context.Context, env *CallEnv, m HostMemory, stack []uint64) {
			key := readKey(m, stack[0], HostKVDelete)
			if err := kvOf(env).Delete(ctx, env.Site, key); err != nil {
				panic(fmt.Errorf("%s %q: %w", HostKVDelete, key, err))
			}
		}},
		{Name: HostKVCounterAdd, Params: 2, Results: 1, Call: func(ctx context.Context, env *CallEnv, m HostMemory, stack []uint64) {
			key := readKey(m, stack[0], HostKVCounterAdd)
			n, err := kvOf(env).CounterAdd(ctx, env.Site, key, int64(stack[1]))
			if err != nil {
				panic(fmt.Errorf("%s %q: %w", HostKVCounterAdd, key, err))
			}
			stack[0] = uint64(n)
		}},
		{Name: HostKVSetTTL, Params: 3, Call: func(ctx context.Context, env *CallEnv, m HostMemory, stack []uint64) {
			key := readKey(m, stack[0], HostKVSetTTL)
			v := read(m, stack[1], HostKVSetTTL)
			ttl, err := CheckTTL(int64(stack[2]))
			if err == nil {
				err = checkKV(key, v)
			}
			if err != nil {
				panic(fmt.Errorf("%s %q: %w", HostKVSetTTL, key, err))
			}
			if len(v) == 0 {
				err = kvOf(env).Delete(ctx, env.Site, key)
			} else {
				err = expiringKVOf(env, HostKVSetTTL).SetTTL(ctx, env.Site, key, v, ttl)
			}
			if err != nil {
				panic(fmt.Errorf("%s %q: %w", HostKVSetTTL, key, err))
			}
		}},
		{Name: HostKVCounterAddTTL, Params: 3, Results: 1, Call: func(ctx context.Context, env *CallEnv, m HostMemory, stack []uint64) {
			key := readKey(m, stack[0], HostKVCounterAddTTL)
			ttl, err := CheckTTL(int64(stack[2]))
			if err != nil {
				panic(fmt.Errorf("%s %q: %w", HostKVCounterAddTTL, key, err))
			}
			n, err := expiringKVOf(env, HostKVCounterAddTTL).CounterAddTTL(ctx, env.Site, key, int64(stack[1]), ttl)
			if err != nil {
				panic(fmt.Errorf("%s %q: %w", HostKVCounterAddTTL, key, err))
			}
			stack[0] = uint64(n)
		}},
		{Name: HostGeo, Results: 1, Call: func(_ context.Context, env *CallEnv, m HostMemory, stack []uint64) {
			if !env.Geo.Known {
				stack[0] = 0
				return
			}
			g := env.Geo
			stack[0] = write(m, abi.AppendGeo(nil, abi.Geo{Country: g.Country, Region: g.Region, Lat: g.Lat, Lon: g.Lon}), HostGeo)
		}},
	}
}

// hostFunctions adapts HostFunctions to the go-sdk. Each reads the per-call
// *CallEnv from the context.
func hostFunctions() []extism.HostFunction {
	i64 := extism.ValueTypeI64
	types := func(n int) []extism.ValueType {
		t := make([]extism.ValueType, n)
		for i := range t {
			t[i] = i64
		}
		return t
	}
	var fns []extism.HostFunction
	for _, hf := range HostFunctions() {
		call := hf.Call
		f := extism.NewHostFunctionWithStack(hf.Name, func(ctx context.Context, p *extism.CurrentPlugin, stack []uint64) {
			call(ctx, callEnv(ctx), sdkMemory{p}, stack)
		}, types(hf.Params), types(hf.Results))
		f.SetNamespace(userNamespace)
		fns = append(fns, f)
	}
	return fns
}

func callEnv(ctx context.Context) *CallEnv {
	env, ok := ctx.Value(envKey{}).(*CallEnv)
	if !ok || env == nil {
		panic("meridian host function called outside a Meridian call")
	}
	return env
}

// kvOf returns the call's KV, or one that refuses every call.
func kvOf(env *CallEnv) KV {
	if env.KV == nil {
		return nopKV{}
	}
	return env.KV
}

// expiringKVOf returns the call's KV as an ExpiringKV, or fails the call
// naming fn when the PoP's KV has no expiry.
func expiringKVOf(env *CallEnv, fn string) ExpiringKV {
	kv := kvOf(env)
	if x, ok := kv.(ExpiringKV); ok {
		return x
	}
	if _, none := kv.(nopKV); none {
		panic(fmt.Errorf("%s: %w", fn, errNoKV))
	}
	panic(fmt.Errorf("%s: the plugin KV of this PoP does not support expiry; use %s / %s, or upgrade the PoP", fn, HostKVSet, HostKVCounterAdd))
}

// sdkMemory is HostMemory over the go-sdk's kernel.
type sdkMemory struct{ p *extism.CurrentPlugin }

// ReadBlock implements HostMemory. The kernel answers a length of 0 for an
// offset that is not the start of a block, so a bad pointer reads as empty.
func (m sdkMemory) ReadBlock(off uint64) ([]byte, error) { return m.p.ReadBytes(off) }

// WriteBlock implements HostMemory.
func (m sdkMemory) WriteBlock(b []byte) (uint64, error) { return m.p.WriteBytes(b) }

// read copies the kernel block at off.
func read(m HostMemory, off uint64, fn string) []byte {
	if off == 0 {
		return nil
	}
	b, err := m.ReadBlock(off)
	if err != nil {
		panic(fmt.Errorf("%s: pointer 0x%x is not a block from alloc: %w", fn, off, err))
	}
	return b
}

func readKey(m HostMemory, off uint64, fn string) string {
	k := read(m, off, fn)
	if err := checkKV(string(k), nil); err != nil {
		panic(fmt.Errorf("%s: pointer 0x%x: %w", fn, off, err))
	}
	return string(k)
}

func write(m HostMemory, b []byte, fn string) uint64 {
	off, err := m.WriteBlock(b)
	if err != nil {
		panic(fmt.Errorf("%s: cannot hand %d bytes to the plugin: %w", fn, len(b), err))
	}
	return off
}

// nopKV refuses KV calls when no KV is connected.
type nopKV struct{}

func (nopKV) Get(context.Context, string, string) ([]byte, bool, error) {
	return nil, false, errNoKV
}
func (nopKV) Set(context.Context, string, string, []byte) error { return errNoKV }
func (nopKV) Delete(context.Context, string, string) error      { return errNoKV }
func (nopKV) CounterAdd(context.Context, string, string, int64) (int64, error) {
	return 0, errNoKV
}

var errNoKV = fmt.Errorf("no plugin KV is configured on this PoP")
