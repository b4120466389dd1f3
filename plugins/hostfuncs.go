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
)

// userNamespace is where Extism PDKs import user host functions from.
const userNamespace = "extism:host/user"

// hostFunctions builds the meridian_* functions for the go-sdk. Each reads
// the per-call *CallEnv from the context; a failure panics, which wazero
// turns into a trap of that call only (the instance is then discarded).
func hostFunctions() []extism.HostFunction {
	i64 := extism.ValueTypeI64
	fns := []extism.HostFunction{
		extism.NewHostFunctionWithStack(HostKVGet, func(ctx context.Context, p *extism.CurrentPlugin, stack []uint64) {
			env := callEnv(ctx)
			key := readKey(p, stack[0], HostKVGet)
			v, ok, err := env.KV.Get(ctx, env.Site, key)
			if err != nil {
				panic(fmt.Errorf("%s %q: %w", HostKVGet, key, err))
			}
			if !ok || len(v) == 0 {
				stack[0] = 0
				return
			}
			stack[0] = write(p, v, HostKVGet)
		}, []extism.ValueType{i64}, []extism.ValueType{i64}),
		extism.NewHostFunctionWithStack(HostKVSet, func(ctx context.Context, p *extism.CurrentPlugin, stack []uint64) {
			env := callEnv(ctx)
			key := readKey(p, stack[0], HostKVSet)
			v := read(p, stack[1], HostKVSet)
			if err := checkKV(key, v); err != nil {
				panic(fmt.Errorf("%s: %w", HostKVSet, err))
			}
			var err error
			if len(v) == 0 {
				err = env.KV.Delete(ctx, env.Site, key)
			} else {
				err = env.KV.Set(ctx, env.Site, key, v)
			}
			if err != nil {
				panic(fmt.Errorf("%s %q: %w", HostKVSet, key, err))
			}
		}, []extism.ValueType{i64, i64}, nil),
		extism.NewHostFunctionWithStack(HostKVDelete, func(ctx context.Context, p *extism.CurrentPlugin, stack []uint64) {
			env := callEnv(ctx)
			key := readKey(p, stack[0], HostKVDelete)
			if err := env.KV.Delete(ctx, env.Site, key); err != nil {
				panic(fmt.Errorf("%s %q: %w", HostKVDelete, key, err))
			}
		}, []extism.ValueType{i64}, nil),
		extism.NewHostFunctionWithStack(HostKVCounterAdd, func(ctx context.Context, p *extism.CurrentPlugin, stack []uint64) {
			env := callEnv(ctx)
			key := readKey(p, stack[0], HostKVCounterAdd)
			n, err := env.KV.CounterAdd(ctx, env.Site, key, int64(stack[1]))
			if err != nil {
				panic(fmt.Errorf("%s %q: %w", HostKVCounterAdd, key, err))
			}
			stack[0] = uint64(n)
		}, []extism.ValueType{i64, i64}, []extism.ValueType{i64}),
		extism.NewHostFunctionWithStack(HostGeo, func(ctx context.Context, p *extism.CurrentPlugin, stack []uint64) {
			env := callEnv(ctx)
			if !env.Geo.Known {
				stack[0] = 0
				return
			}
			g := env.Geo
			stack[0] = write(p, abi.AppendGeo(nil, abi.Geo{Country: g.Country, Region: g.Region, Lat: g.Lat, Lon: g.Lon}), HostGeo)
		}, nil, []extism.ValueType{i64}),
	}
	for i := range fns {
		fns[i].SetNamespace(userNamespace)
	}
	return fns
}

func callEnv(ctx context.Context) *CallEnv {
	env, ok := ctx.Value(envKey{}).(*CallEnv)
	if !ok || env == nil {
		panic("meridian host function called outside a Meridian call")
	}
	if env.KV == nil {
		env.KV = nopKV{}
	}
	return env
}

// read copies the kernel block at off. The kernel answers a length of 0 for
// an offset that is not the start of a block, so a bad pointer reads as empty.
func read(p *extism.CurrentPlugin, off uint64, fn string) []byte {
	if off == 0 {
		return nil
	}
	b, err := p.ReadBytes(off)
	if err != nil {
		panic(fmt.Errorf("%s: pointer 0x%x is not a block from alloc: %w", fn, off, err))
	}
	return b
}

func readKey(p *extism.CurrentPlugin, off uint64, fn string) string {
	k := read(p, off, fn)
	if err := checkKV(string(k), nil); err != nil {
		panic(fmt.Errorf("%s: pointer 0x%x: %w", fn, off, err))
	}
	return string(k)
}

func write(p *extism.CurrentPlugin, b []byte, fn string) uint64 {
	off, err := p.WriteBytes(b)
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
