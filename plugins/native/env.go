package native

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/tetratelabs/wazero/api"

	"github.com/meridian-edge/meridian/plugins"
)

// envModule is the Extism kernel's import module.
const envModule = "extism:host/env"

// maxVarBytes caps an instance's Extism vars, as SDKEngine configures the SDK.
const maxVarBytes = 64 << 10

// extismLogInfo is get_log_level's answer: Info in Extism's numbering
// (trace 0, debug 1, info 2, ...). Trace and debug lines are dropped, as
// SDKEngine drops them.
const extismLogInfo = 2

type envFunc struct {
	fn              api.GoModuleFunc
	params, results []api.ValueType
}

const (
	i64 = api.ValueTypeI64
	i32 = api.ValueTypeI32
)

// kernelFunctions are the kernel's Go functions (kernel.wat imports them
// from kernelGoModule and exports them again in extism:host/env, next to
// the per-word functions it runs in wasm): what the Go PDK (v1.1.3) and the
// AssemblyScript PDK (1.0.0) import, and the rest of the kernel ABI a PDK
// may use. http_request and its companions are not there: plugins get no
// network, and Compile refuses a plugin importing them.
func kernelFunctions() map[string]envFunc {
	return map[string]envFunc{
		"alloc": {func(ctx context.Context, _ api.Module, s []uint64) {
			s[0] = current(ctx).k.alloc(s[0])
		}, []api.ValueType{i64}, []api.ValueType{i64}},
		"free": {func(ctx context.Context, _ api.Module, s []uint64) {
			current(ctx).k.free(s[0])
		}, []api.ValueType{i64}, nil},
		"length": {func(ctx context.Context, _ api.Module, s []uint64) {
			s[0] = current(ctx).k.length(s[0])
		}, []api.ValueType{i64}, []api.ValueType{i64}},
		"length_unsafe": {func(ctx context.Context, _ api.Module, s []uint64) {
			s[0] = current(ctx).k.length(s[0])
		}, []api.ValueType{i64}, []api.ValueType{i64}},
		"config_get": {configGet, []api.ValueType{i64}, []api.ValueType{i64}},
		"var_get":    {varGet, []api.ValueType{i64}, []api.ValueType{i64}},
		"var_set":    {varSet, []api.ValueType{i64, i64}, nil},
		"get_log_level": {func(_ context.Context, _ api.Module, s []uint64) {
			s[0] = extismLogInfo
		}, nil, []api.ValueType{i32}},
		"log_trace": {logAt(slog.LevelDebug - 4), []api.ValueType{i64}, nil},
		"log_debug": {logAt(slog.LevelDebug), []api.ValueType{i64}, nil},
		"log_info":  {logAt(slog.LevelInfo), []api.ValueType{i64}, nil},
		"log_warn":  {logAt(slog.LevelWarn), []api.ValueType{i64}, nil},
		"log_error": {logAt(slog.LevelError), []api.ValueType{i64}, nil},
		"fault":     {fault, []api.ValueType{i32, i64}, nil},
	}
}

// fault fails the call for kernel.wat: load_u64 (op 0) or store_u64 (op 1)
// outside the blocks (the go-sdk traps there too).
func fault(_ context.Context, _ api.Module, s []uint64) {
	fn := "load_u64"
	if s[0] == 1 {
		fn = "store_u64"
	}
	panic(fmt.Errorf("%s at 0x%x is outside the plugin's kernel memory", fn, s[1]))
}

// configGet answers the chain entry's config value for the key block, 0 if
// the key is not set. The key block stays allocated (the PDK frees it).
func configGet(ctx context.Context, _ api.Module, s []uint64) {
	in := current(ctx)
	key := in.k.block(s[0]) // not a block: the empty key, as with the SDK
	var cfg map[string]string
	if in.env != nil {
		cfg = in.env.Config
	}
	v, ok := cfg[string(key)] // no allocation for the lookup
	if !ok {
		s[0] = 0
		return
	}
	s[0] = writeString(in, v, "config_get")
}

// varGet answers the var named by the key block (which it frees), 0 if unset.
func varGet(ctx context.Context, _ api.Module, s []uint64) {
	in := current(ctx)
	name := in.k.block(s[0])
	v, ok := in.vars[string(name)]
	in.k.free(s[0])
	if !ok {
		s[0] = 0
		return
	}
	off, err := in.k.write(v)
	if err != nil {
		panic(fmt.Errorf("var_get: %w", err))
	}
	s[0] = off
}

// varSet sets (or, with a 0 value, deletes) a var; both blocks are freed.
// Vars live as long as the instance, capped at 64 KiB like SDKEngine's.
func varSet(ctx context.Context, _ api.Module, s []uint64) {
	in := current(ctx)
	name := string(in.k.block(s[0]))
	in.k.free(s[0])
	if old, ok := in.vars[name]; ok {
		in.varSz -= len(name) + len(old)
		delete(in.vars, name)
	}
	if s[1] == 0 {
		return
	}
	v := in.k.block(s[1])
	if in.varSz+len(name)+len(v) >= maxVarBytes {
		panic(fmt.Errorf("var_set: the plugin's vars would pass %d bytes", maxVarBytes))
	}
	if in.vars == nil {
		in.vars = map[string][]byte{}
	}
	in.vars[name] = append([]byte(nil), v...)
	in.varSz += len(name) + len(v)
	in.k.free(s[1])
}

// logAt keeps a plugin log line at level (info and above) and frees the
// message block.
func logAt(level slog.Level) api.GoModuleFunc {
	return func(ctx context.Context, _ api.Module, s []uint64) {
		in := current(ctx)
		if level >= slog.LevelInfo && in.env != nil && in.env.Log != nil {
			in.env.Log(level, string(in.k.block(s[0])))
		}
		in.k.free(s[0])
	}
}

func writeString(in *instance, v string, fn string) uint64 {
	if len(v) == 0 {
		return 0
	}
	off := in.k.alloc(uint64(len(v)))
	if off == 0 {
		panic(fmt.Errorf("%s: cannot hand %d bytes to the plugin: %w", fn, len(v), errKernelFull))
	}
	copy(in.k.mem[off-in.k.base:], v)
	return off
}

// Compile-time check that the instance serves the meridian_* functions.
var _ plugins.HostMemory = (*instance)(nil)
