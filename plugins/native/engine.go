package native

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"

	"github.com/meridian-edge/meridian/plugins"
)

// Options configure New.
type Options struct {
	// CacheDir keeps compiled machine code on disk across restarts; empty
	// keeps it in memory for the life of the engine. Every version shares
	// the one cache.
	CacheDir string
}

// Engine runs plugins on wazero with a Go Extism kernel. It is safe for
// concurrent use; its programs and instances follow plugins.Engine's rules.
type Engine struct {
	cache wazero.CompilationCache
	wd    *watchdog // enforces every call's deadline
}

var _ plugins.Engine = (*Engine)(nil)

// New makes an engine with one compilation cache shared by all versions.
func New(opts Options) (*Engine, error) {
	cache, err := plugins.NewCompilationCache(opts.CacheDir)
	if err != nil {
		return nil, err
	}
	return &Engine{cache: cache, wd: newWatchdog()}, nil
}

// Close implements plugins.Engine: it stops the deadline watchdog and frees
// the compilation cache. Close programs first; calls after Close have no
// deadline enforcement and must not be made.
func (e *Engine) Close(ctx context.Context) error {
	e.wd.close()
	return e.cache.Close(ctx)
}

// Compile implements plugins.Engine. Each program gets its own wazero
// runtime (memory cap, host modules) sharing the engine's compilation cache;
// closing the program frees all of it.
func (e *Engine) Compile(ctx context.Context, wasm []byte, lim plugins.Limits) (plugins.Program, error) {
	lim = lim.WithDefaults()
	if err := lim.Validate(); err != nil {
		return nil, err
	}
	// Deadlines come from metering (meter.go), not from wazero's
	// WithCloseOnContextDone: see the comment there for why it is safe.
	metered, err := meterModuleBytes(wasm)
	if err != nil {
		if errors.Is(err, errUnsupported) || errors.Is(err, errReservedImport) {
			return nil, err
		}
		return nil, fmt.Errorf("plugin is not a valid wasm module: %w", err)
	}
	rc := wazero.NewRuntimeConfig().
		WithCompilationCache(e.cache).
		WithMemoryLimitPages(lim.MaxPages)
	rt := wazero.NewRuntimeWithConfig(ctx, rc)
	fail := func(err error) (plugins.Program, error) {
		_ = rt.Close(ctx)
		return nil, err
	}
	mod, err := compileModule(ctx, rt, metered)
	if err != nil {
		return fail(fmt.Errorf("plugin is not a valid wasm module: %w", err))
	}
	kmod, err := rt.CompileModule(ctx, kernelWasm)
	if err != nil {
		return fail(fmt.Errorf("native plugin host: kernel module: %w", err))
	}
	p := &program{e: e, rt: rt, mod: mod, kmod: kmod, lim: lim}
	envNames := kmod.ExportedFunctions()
	for _, f := range mod.ImportedFunctions() {
		m, n, _ := f.Import()
		if m == meterModule {
			continue // added by the metering rewrite
		}
		p.imports = append(p.imports, plugins.Import{Module: m, Name: n})
		if !provides(envNames, m, n) {
			hint := "see plugins/README.md for the host functions"
			if n == "http_request" {
				hint = "plugins get no network"
			}
			return fail(fmt.Errorf("it imports %s.%s, which Meridian does not provide (%s)", m, n, hint))
		}
	}
	p.ExportTable = plugins.NewExportTable(mod)
	if err := instantiateHostModules(ctx, rt, kernelFunctions()); err != nil {
		return fail(fmt.Errorf("native plugin host: %w", err))
	}
	return p, nil
}

// compileModule is rt.CompileModule that turns a panic inside wazero into
// an error: an upload must never crash the PoP (wazero v1.9 panics on some
// malformed modules; CheckBinary refuses the ones we know of first).
func compileModule(ctx context.Context, rt wazero.Runtime, wasm []byte) (mod wazero.CompiledModule, err error) {
	defer func() {
		if r := recover(); r != nil {
			mod, err = nil, fmt.Errorf("the wasm compiler failed on it: %v", r)
		}
	}()
	return rt.CompileModule(ctx, wasm)
}

// provides reports whether the native host offers module.name: exactly the
// imports plugins/README.md allows (env: the kernel module's exports).
func provides(env map[string]api.FunctionDefinition, module, name string) bool {
	switch module {
	case wasi_snapshot_preview1.ModuleName:
		return true
	case envModule:
		_, ok := env[name]
		return ok
	case plugins.UserNamespace:
		for _, f := range plugins.HostFunctions() {
			if f.Name == name {
				return true
			}
		}
	}
	return false
}

// instantiateHostModules adds the modules every instance shares: WASI, the
// kernel's Go functions, metering and the meridian_* functions. The kernel
// module itself is instantiated per instance (Instantiate).
func instantiateHostModules(ctx context.Context, rt wazero.Runtime, kernelFuncs map[string]envFunc) error {
	// WASI for guest runtimes (Go needs it): wazero's default module config
	// gives no preopened directory, no environment, a fake wall clock and a
	// deterministic random source; Instantiate adds the virtual monotonic
	// clock (plugins.WithVirtualClock).
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, rt); err != nil {
		return err
	}
	env := rt.NewHostModuleBuilder(kernelGoModule)
	for name, f := range kernelFuncs {
		env.NewFunctionBuilder().WithGoModuleFunction(f.fn, f.params, f.results).Export(name)
	}
	if _, err := env.Instantiate(ctx); err != nil {
		return err
	}
	meter := rt.NewHostModuleBuilder(meterModule)
	meter.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(yield), nil, []api.ValueType{api.ValueTypeI32}).Export(meterYield)
	meter.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(grow), []api.ValueType{api.ValueTypeI32}, []api.ValueType{api.ValueTypeI32}).Export(meterGrow)
	if _, err := meter.Instantiate(ctx); err != nil {
		return err
	}
	user := rt.NewHostModuleBuilder(plugins.UserNamespace)
	for _, hf := range plugins.HostFunctions() {
		call := hf.Call
		user.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, _ api.Module, stack []uint64) {
			in := current(ctx)
			call(in.reqCtx, in.env, in, stack)
		}), i64s(hf.Params), i64s(hf.Results)).Export(hf.Name)
	}
	_, err := user.Instantiate(ctx)
	return err
}

func i64s(n int) []api.ValueType {
	t := make([]api.ValueType, n)
	for i := range t {
		t[i] = api.ValueTypeI64
	}
	return t
}

type program struct {
	plugins.ExportTable // Exports and ExportSignature
	e                   *Engine
	rt                  wazero.Runtime
	mod                 wazero.CompiledModule
	kmod                wazero.CompiledModule // the kernel module (kernel.wat)
	lim                 plugins.Limits
	imports             []plugins.Import
	closed              atomic.Bool
}

func (p *program) Imports() []plugins.Import { return p.imports }

// Close frees the compiled code, the runtime and every instance still open.
func (p *program) Close(ctx context.Context) error {
	if p.closed.Swap(true) {
		return nil
	}
	p.e.wd.removeProgram(p)
	return p.rt.Close(ctx)
}

// Instantiate makes an instance and runs the guest runtime's init
// (_initialize for WASI reactors such as Go's c-shared build, hs_init for
// Haskell, __wasm_call_ctors for commands) under Timeout+InitTimeout, so the
// first request does not pay for it.
func (p *program) Instantiate(ctx context.Context) (plugins.Instance, error) {
	if p.closed.Load() {
		return nil, &plugins.CallError{Kind: plugins.KindInstance, Err: errors.New("plugin version was closed")}
	}
	in := &instance{p: p}
	in.cc = callCtx{in: in}
	in.reqCtx = ctx
	in.env = &plugins.CallEnv{}
	p.e.wd.add(in)
	fail := func(err error) (plugins.Instance, error) {
		killed := in.disarm()
		p.e.wd.remove(in)
		if in.mod != nil {
			_ = in.mod.Close(context.Background())
		}
		if in.kmod != nil {
			_ = in.kmod.Close(context.Background())
		}
		err = in.stdio.Explain(err)
		if killed {
			err = fmt.Errorf("init passed its deadline of %v: %w", p.lim.Timeout+p.lim.InitTimeout, err)
		}
		return nil, &plugins.CallError{Kind: plugins.KindInstance, Err: fmt.Errorf("instantiate plugin: %w", err), Output: in.stdio.Output()}
	}
	in.arm(p.lim.Timeout + p.lim.InitTimeout)
	// The instance's own kernel, linked to the plugin's extism:host/env
	// imports by the resolver (module names are shared by the runtime,
	// kernels are not).
	kmod, err := p.rt.InstantiateModule(&in.cc, p.kmod, wazero.NewModuleConfig().WithName("").WithStartFunctions())
	if err != nil {
		return fail(err)
	}
	in.kmod = kmod
	in.k = newKernel(kmod.Memory(), uint64(p.lim.MaxPages)*65536)
	link := experimental.WithImportResolver(&in.cc, func(name string) api.Module {
		if name == envModule {
			return kmod
		}
		return nil
	})
	// stdout and stderr go to the instance's bounded buffer, which explains
	// a failed call (a Go panic's reason) and is otherwise dropped.
	cfg := wazero.NewModuleConfig().WithName("").WithStartFunctions().WithStdout(&in.stdio).WithStderr(&in.stdio)
	mod, err := p.rt.InstantiateModule(link, p.mod, plugins.WithVirtualClock(cfg))
	if err != nil {
		return fail(err)
	}
	in.mod = mod
	in.mem = memoryOf(mod)
	if f := mod.ExportedFunction("_initialize"); f != nil && len(f.Definition().ParamTypes()) == 0 {
		if err := callInit(&in.cc, f); err != nil {
			return fail(err)
		}
	} else if f := mod.ExportedFunction("__wasm_call_ctors"); f != nil && len(f.Definition().ParamTypes()) == 0 {
		if err := callInit(&in.cc, f); err != nil {
			return fail(err)
		}
	}
	if f := mod.ExportedFunction("hs_init"); f != nil {
		if _, err := f.Call(&in.cc, 0, 0); err != nil {
			return fail(err)
		}
	}
	if in.disarm() {
		return fail(errors.New("deadline passed"))
	}
	in.reqCtx = nil
	in.onRequest = mod.ExportedFunction("on_request")
	in.onResponse = mod.ExportedFunction("on_response")
	in.reqResult = in.onRequest != nil && len(in.onRequest.Definition().ResultTypes()) > 0
	in.respResult = in.onResponse != nil && len(in.onResponse.Definition().ResultTypes()) > 0
	return in, nil
}

func callInit(ctx context.Context, f api.Function) error {
	_, err := f.Call(ctx)
	var exit *sys.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == 0 {
		return nil
	}
	return err
}
