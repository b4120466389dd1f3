package plugins

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// Engine compiles plugin binaries. SDKEngine runs them on
// github.com/extism/go-sdk; a native Extism-ABI host (issue 8) implements the
// same three small interfaces so a differential test can run both.
type Engine interface {
	// Compile prepares one plugin version. It must not keep wasm after it returns.
	Compile(ctx context.Context, wasm []byte, lim Limits) (Program, error)
	// Close frees what the engine shares between programs (the compilation cache).
	Close(ctx context.Context) error
}

// Program is one compiled plugin version; instances are made from it.
type Program interface {
	// Instantiate makes a fresh, isolated instance. It costs milliseconds:
	// callers pool instances rather than make one per request.
	Instantiate(ctx context.Context) (Instance, error)
	// Imports lists the functions the module imports.
	Imports() []Import
	// Exports lists the functions the module exports.
	Exports() []string
	// ExportSignature returns the wasm type of exported function name, or
	// false when the module does not export it.
	ExportSignature(name string) (Signature, bool)
	// Close frees the compiled code and every instance still open.
	Close(ctx context.Context) error
}

// Instance is one sandboxed plugin instance. It is not safe for concurrent
// use; the pool hands it to one request at a time.
type Instance interface {
	// Call runs export fn with input under lim.Timeout and returns the
	// plugin's output, which may be reused by the next Call on the same
	// instance (decode it before). Errors are *CallError; after any error
	// the caller must Close the instance rather than reuse it.
	Call(ctx context.Context, fn string, input []byte, env *CallEnv) ([]byte, error)
	// MemoryBytes is the linear memory the instance holds now (plugin + kernel).
	MemoryBytes() uint64
	// Close frees the instance.
	Close(ctx context.Context) error
}

// Signature is the wasm type of a function.
type Signature struct{ Params, Results []api.ValueType }

// SignatureOf returns the type of a wazero function definition.
func SignatureOf(d api.FunctionDefinition) Signature {
	return Signature{Params: d.ParamTypes(), Results: d.ResultTypes()}
}

// ExportTable is what a compiled module exports: its functions' names,
// sorted, and their types, read once at compile. Both engines embed one
// to implement Program's Exports and ExportSignature.
type ExportTable struct {
	names []string
	sigs  map[string]Signature
}

// NewExportTable reads the exported functions of mod.
func NewExportTable(mod wazero.CompiledModule) ExportTable {
	fns := mod.ExportedFunctions()
	t := ExportTable{names: make([]string, 0, len(fns)), sigs: make(map[string]Signature, len(fns))}
	for name, d := range fns {
		t.names = append(t.names, name)
		t.sigs[name] = SignatureOf(d)
	}
	slices.Sort(t.names)
	return t
}

// Exports implements Program: the exported functions' names, sorted.
func (t ExportTable) Exports() []string { return t.names }

// ExportSignature implements Program.
func (t ExportTable) ExportSignature(name string) (Signature, bool) {
	s, ok := t.sigs[name]
	return s, ok
}

// String writes s as in the text format: "(param i32) (result i32)", or
// "no parameters and no result".
func (s Signature) String() string {
	if len(s.Params) == 0 && len(s.Results) == 0 {
		return "no parameters and no result"
	}
	var b strings.Builder
	list := func(kw string, ts []api.ValueType) {
		if len(ts) == 0 {
			return
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString("(" + kw)
		for _, t := range ts {
			b.WriteString(" " + api.ValueTypeName(t))
		}
		b.WriteByte(')')
	}
	list("param", s.Params)
	list("result", s.Results)
	return b.String()
}

// Import names one imported function.
type Import struct{ Module, Name string }

// CallEnv is the per-call state the host functions see. The host functions
// never reach outside it, so a plugin can only touch its own site's KV.
type CallEnv struct {
	Site   string
	Config map[string]string // the chain entry's config, read by config_get
	KV     KV                // nil: KV calls fail the call
	Geo    GeoInfo           // client geo for meridian_geo
	Log    func(level slog.Level, msg string)
}

// GeoInfo is the client location handed to a plugin.
type GeoInfo struct {
	Country, Region string
	Lat, Lon        float64
	Known           bool
}

// Limits bound one plugin version. Zero fields take the defaults below.
type Limits struct {
	// Timeout bounds every call (mandatory: the SDK only interrupts a looping
	// plugin when it is set). Default 50ms.
	Timeout time.Duration
	// InitTimeout is added to Timeout on the first call of a fresh instance,
	// which also runs the guest runtime's init (Go's _initialize, about 4 ms
	// on a quiet machine; the SDK gives no way to run it before a call).
	// Default 250ms.
	InitTimeout time.Duration
	// MaxPages caps linear memory in 64 KiB pages. The SDK applies it to the
	// plugin and to its kernel separately. Default 512 (32 MiB).
	MaxPages uint32
	// MaxInput caps the encoded request description. It must stay well below
	// the kernel's memory: the SDK silently passes empty input when the input
	// does not fit. Default 32 KiB.
	MaxInput int
	// MaxOutput caps what a plugin may answer with. Default 1 MiB.
	MaxOutput int
}

// Defaults for Limits.
const (
	DefaultTimeout     = 50 * time.Millisecond
	DefaultInitTimeout = 250 * time.Millisecond
	DefaultMaxPages    = 512
	DefaultMaxInput    = 32 << 10
	DefaultMaxOutput   = 1 << 20
)

// WithDefaults returns l with every zero field set to its default (for
// engines other than SDKEngine; Host applies it itself).
func (l Limits) WithDefaults() Limits { return l.withDefaults() }

func (l Limits) withDefaults() Limits {
	if l.Timeout <= 0 {
		l.Timeout = DefaultTimeout
	}
	if l.InitTimeout <= 0 {
		l.InitTimeout = DefaultInitTimeout
	}
	if l.MaxPages == 0 {
		l.MaxPages = DefaultMaxPages
	}
	if l.MaxInput <= 0 {
		l.MaxInput = DefaultMaxInput
	}
	if l.MaxOutput <= 0 {
		l.MaxOutput = DefaultMaxOutput
	}
	return l
}

// Validate reports limits that cannot work.
func (l Limits) Validate() error {
	switch {
	case l.Timeout < time.Millisecond:
		return fmt.Errorf("plugin timeout %v is below 1ms: set plugins.timeout to at least 1ms", l.Timeout)
	case l.MaxPages < 2 || l.MaxPages > 65536:
		return fmt.Errorf("plugin max_pages %d must be within 2..65536 (64 KiB pages)", l.MaxPages)
	case uint64(l.MaxInput) > uint64(l.MaxPages)*65536/4:
		return fmt.Errorf("plugin max_input %d must stay below a quarter of max_pages memory (%d bytes): the kernel drops input that does not fit", l.MaxInput, uint64(l.MaxPages)*65536/4)
	}
	return nil
}

// ErrorKind classifies a failed call for metrics, breaker and policy.
type ErrorKind string

// Error kinds.
const (
	KindTimeout     ErrorKind = "timeout"      // the call passed its deadline
	KindTrap        ErrorKind = "trap"         // unreachable, bad host-call pointer, panic, exit
	KindMemory      ErrorKind = "memory"       // the instance failed at its memory cap
	KindPluginError ErrorKind = "plugin_error" // the plugin returned failure with error_set
	KindBadOutput   ErrorKind = "bad_output"   // empty, oversized or undecodable output
	KindInput       ErrorKind = "input"        // request description larger than MaxInput
	KindInstance    ErrorKind = "instance"     // no instance could be made
	KindBreakerOpen ErrorKind = "breaker_open" // skipped: the plugin's breaker is open
	KindBusy        ErrorKind = "busy"         // every instance busy until the request's deadline
	// KindUnavailable: the plugin is not loaded on this PoP (Entry.Unavailable).
	KindUnavailable ErrorKind = "unavailable"
)

// CallError is the error of a failed plugin call.
type CallError struct {
	Kind ErrorKind
	Err  error
	// Output is the tail of what the plugin wrote to stdout and stderr
	// during the failed call (at most OutputTailSize bytes, control bytes
	// other than newlines and tabs replaced), empty when it wrote nothing.
	// Err already names its most telling line (a Go panic); the rest is
	// for a site owner who wants the whole trace.
	Output string
}

func (e *CallError) Error() string { return fmt.Sprintf("plugin %s: %v", e.Kind, e.Err) }
func (e *CallError) Unwrap() error { return e.Err }

// KindOf returns the kind of a *CallError, or KindTrap for any other error.
func KindOf(err error) ErrorKind {
	var ce *CallError
	if errors.As(err, &ce) {
		return ce.Kind
	}
	return KindTrap
}

// NewCompilationCache is the compilation cache an engine shares across the
// versions it compiles: in dir when set, so that a restart does not pay
// seconds per Go-built plugin again, else in memory.
func NewCompilationCache(dir string) (wazero.CompilationCache, error) {
	if dir == "" {
		return wazero.NewCompilationCache(), nil
	}
	c, err := wazero.NewCompilationCacheWithDir(dir)
	if err != nil {
		return nil, fmt.Errorf("plugin compilation cache in %s: %w (check the directory is writable)", dir, err)
	}
	return c, nil
}

// MemoryError is the error of a call that failed at its memory cap: it
// says the cap and how to raise it.
func MemoryError(maxPages uint32, err error) error {
	return fmt.Errorf("ran out of memory at its cap of %d pages (%d MiB): use less memory, or ask the PoP operator to raise the cap (plugins.memory in the configuration): %w",
		maxPages, uint64(maxPages)*65536>>20, err)
}
