package plugins

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	extism "github.com/extism/go-sdk"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/sys"
)

// SDKEngine runs plugins on github.com/extism/go-sdk (v1.7.1) over wazero.
// It is the reference host: correct and slow (see the benchmarks in
// bench_test.go and issue 8).
type SDKEngine struct {
	cache   wazero.CompilationCache
	inspect wazero.Runtime // reads imports/exports; shares the cache
	funcs   []extism.HostFunction
}

// SDKOptions configure NewSDKEngine.
type SDKOptions struct {
	// CacheDir keeps compiled machine code on disk across restarts; empty
	// keeps it in memory for the life of the engine. Either way every
	// version shares one cache, so a recompile of known code costs ~0.1 s
	// instead of seconds.
	CacheDir string
}

// NewSDKEngine makes an engine with one compilation cache shared by all
// versions it compiles.
//
// It sets the go-sdk's process-wide plugin log level to Info (the SDK keeps it
// in a package variable and drops every plugin log line until it is set);
// plugin trace and debug lines are therefore not kept.
func NewSDKEngine(opts SDKOptions) (*SDKEngine, error) {
	cache, err := NewCompilationCache(opts.CacheDir)
	if err != nil {
		return nil, err
	}
	extism.SetLogLevel(extism.LogLevelInfo)
	// CloseOnContextDone is part of the cache key: it must match Compile.
	inspect := wazero.NewRuntimeWithConfig(context.Background(),
		wazero.NewRuntimeConfig().WithCompilationCache(cache).WithCloseOnContextDone(true))
	return &SDKEngine{cache: cache, inspect: inspect, funcs: hostFunctions()}, nil
}

// Close implements Engine.
func (e *SDKEngine) Close(ctx context.Context) error {
	return errors.Join(e.inspect.Close(ctx), e.cache.Close(ctx))
}

// Compile implements Engine.
func (e *SDKEngine) Compile(ctx context.Context, wasm []byte, lim Limits) (Program, error) {
	lim = lim.withDefaults()
	if err := lim.Validate(); err != nil {
		return nil, err
	}
	// Compiling here first fills the shared cache, so the SDK's own
	// compile below is a cache hit.
	mod, err := e.inspect.CompileModule(ctx, wasm)
	if err != nil {
		return nil, fmt.Errorf("plugin is not a valid wasm module: %w", err)
	}
	var imports []Import
	for _, f := range mod.ImportedFunctions() {
		m, n, _ := f.Import()
		imports = append(imports, Import{Module: m, Name: n})
	}
	exports := NewExportTable(mod)
	if err := mod.Close(ctx); err != nil {
		return nil, err
	}
	rc := wazero.NewRuntimeConfig().
		WithCompilationCache(e.cache).
		WithCloseOnContextDone(true).
		WithMemoryLimitPages(lim.MaxPages)
	manifest := extism.Manifest{
		Wasm: []extism.Wasm{extism.WasmData{Data: wasm}},
		// MaxPages is applied to the plugin and, separately, to the kernel.
		Memory: &extism.ManifestMemory{MaxPages: lim.MaxPages, MaxVarBytes: 64 << 10, MaxHttpResponseBytes: 0},
		// Mandatory: without a timeout the SDK never interrupts a loop.
		Timeout: uint64(lim.Timeout.Milliseconds()),
		// No AllowedHosts (no network) and no AllowedPaths (no filesystem).
	}
	cp, err := extism.NewCompiledPlugin(ctx, manifest, extism.PluginConfig{
		RuntimeConfig: rc,
		// Go-built plugins need WASI for their runtime; wazero's default
		// module config gives them no preopened directory, no sockets, a
		// fake wall clock and a deterministic random source; Instantiate
		// adds the virtual monotonic clock (clock.go).
		EnableWasi: true,
	}, e.funcs)
	if err != nil {
		return nil, fmt.Errorf("compile plugin: %w", err)
	}
	return &sdkProgram{cp: cp, lim: lim, imports: imports, ExportTable: exports}, nil
}

type sdkProgram struct {
	ExportTable // Exports and ExportSignature
	cp          *extism.CompiledPlugin
	lim         Limits
	imports     []Import
}

func (p *sdkProgram) Imports() []Import { return p.imports }

func (p *sdkProgram) Close(ctx context.Context) error { return p.cp.Close(ctx) }

func (p *sdkProgram) Instantiate(ctx context.Context) (Instance, error) {
	mem := &memTracker{}
	// What the plugin writes to stdout and stderr is kept (bounded) to
	// explain a failed call; the SDK replaces these writers only when
	// EXTISM_ENABLE_WASI_OUTPUT is set in the environment.
	stdio := &OutputTail{}
	plug, err := p.cp.Instance(experimental.WithMemoryAllocator(ctx, mem), extism.PluginInstanceConfig{
		ModuleConfig: WithVirtualClock(wazero.NewModuleConfig()).WithStdout(stdio).WithStderr(stdio),
	})
	if err != nil {
		return nil, &CallError{Kind: KindInstance, Err: fmt.Errorf("instantiate plugin: %w", stdio.Explain(err)), Output: stdio.Output()}
	}
	in := &sdkInstance{p: plug, mem: mem, lim: p.lim, stdio: stdio}
	plug.SetLogger(in.log)
	return in, nil
}

type sdkInstance struct {
	p      *extism.Plugin
	mem    *memTracker
	lim    Limits
	env    *CallEnv // set for the duration of a call
	called bool     // the guest runtime's init has run
	stdio  *OutputTail
}

// envKey carries the *CallEnv to the host functions.
type envKey struct{}

func (i *sdkInstance) log(level extism.LogLevel, msg string) {
	if i.env == nil || i.env.Log == nil {
		return
	}
	l := slog.LevelInfo
	switch level {
	case extism.LogLevelWarn:
		l = slog.LevelWarn
	case extism.LogLevelError:
		l = slog.LevelError
	case extism.LogLevelDebug, extism.LogLevelTrace:
		l = slog.LevelDebug
	}
	i.env.Log(l, msg)
}

func (i *sdkInstance) Call(ctx context.Context, fn string, input []byte, env *CallEnv) ([]byte, error) {
	if len(input) > i.lim.MaxInput {
		return nil, &CallError{Kind: KindInput, Err: fmt.Errorf("request description is %d bytes, limit %d: ask for fewer headers", len(input), i.lim.MaxInput)}
	}
	i.env = env
	defer func() { i.env = nil }()
	i.p.Config = env.Config
	i.p.Timeout = i.lim.Timeout
	if !i.called {
		i.called = true
		i.p.Timeout += i.lim.InitTimeout
	}
	ctx = context.WithValue(ctx, envKey{}, env)
	i.stdio.Reset()
	start := time.Now()
	rc, out, err := i.p.CallWithContext(ctx, fn, input)
	if err != nil {
		// Past the deadline the SDK may fail reading the output of a call
		// that just returned ("failed to get output: module closed with
		// context deadline exceeded", the exit error flattened to text):
		// a timeout all the same.
		late := time.Since(start) >= i.p.Timeout || ctx.Err() != nil
		return nil, i.classify(rc, err, late)
	}
	if rc != 0 {
		return nil, &CallError{Kind: KindPluginError, Err: fmt.Errorf("%s returned %d without an error message", fn, rc)}
	}
	if len(out) > i.lim.MaxOutput {
		return nil, &CallError{Kind: KindBadOutput, Err: fmt.Errorf("output of %d bytes exceeds the %d byte limit", len(out), i.lim.MaxOutput)}
	}
	return out, nil
}

func (i *sdkInstance) classify(rc uint32, err error, late bool) error {
	out := i.stdio.Output()
	// Memory first: a plugin that filled its memory and was then stopped by
	// the deadline (slow growth on a loaded machine) is a memory overrun,
	// and so is a guest runtime that says it ran out of memory (Go asks
	// for a large block at once: its memory is nowhere near the cap).
	if i.mem.atCap() || i.stdio.OutOfMemory() {
		return &CallError{Kind: KindMemory, Err: MemoryError(i.lim.MaxPages, i.stdio.Explain(err)), Output: out}
	}
	var exit *sys.ExitError
	if late || errors.As(err, &exit) && (exit.ExitCode() == sys.ExitCodeDeadlineExceeded || exit.ExitCode() == sys.ExitCodeContextCanceled) {
		return &CallError{Kind: KindTimeout, Err: fmt.Errorf("call stopped after %v: %w", i.p.Timeout, i.stdio.Explain(err)), Output: out}
	}
	// A failure the plugin reported itself (error_set + non-zero return)
	// comes back as exactly the kernel's error message.
	if rc != 0 {
		if msg := i.p.GetError(); msg != "" && msg == err.Error() {
			return &CallError{Kind: KindPluginError, Err: err, Output: out}
		}
	}
	return &CallError{Kind: KindTrap, Err: i.stdio.Explain(err), Output: out}
}

func (i *sdkInstance) MemoryBytes() uint64 { return i.mem.bytes() }

func (i *sdkInstance) Close(ctx context.Context) error { return i.p.Close(ctx) }

// memTracker is a wazero memory allocator that records the linear memories
// of one instance, so the host can report instance memory and tell a memory
// overrun from other traps. It allocates plain Go slices like wazero's default.
type memTracker struct {
	mu   sync.Mutex
	mems []*trackedMemory
}

func (t *memTracker) Allocate(capacity, max uint64) experimental.LinearMemory {
	m := &trackedMemory{max: max, buf: make([]byte, 0, capacity)}
	t.mu.Lock()
	t.mems = append(t.mems, m)
	t.mu.Unlock()
	return m
}

func (t *memTracker) bytes() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	var n uint64
	for _, m := range t.mems {
		n += m.size.Load()
	}
	return n
}

// atCap reports whether any memory of the instance holds more than three
// quarters of its maximum. wazero refuses memory.grow before asking the
// allocator, so the refusal itself is invisible here; a plugin that fails
// this close to its cap (runtimes grow in chunks of many pages) is counted
// as out of memory.
func (t *memTracker) atCap() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, m := range t.mems {
		if m.max > 0 && m.size.Load() > m.max/4*3 {
			return true
		}
	}
	return false
}

type trackedMemory struct {
	buf  []byte
	max  uint64
	size atomic.Uint64
}

func (m *trackedMemory) Reallocate(size uint64) []byte {
	if size > m.max {
		return nil
	}
	if size <= uint64(cap(m.buf)) {
		m.buf = m.buf[:size]
	} else {
		c := min(max(size, 2*uint64(cap(m.buf))), m.max)
		nb := make([]byte, size, c)
		copy(nb, m.buf)
		m.buf = nb
	}
	m.size.Store(size)
	return m.buf
}

func (m *trackedMemory) Free() {
	m.buf = nil
	m.size.Store(0)
}
