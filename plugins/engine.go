package plugins

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
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

// OutputTailSize is how many bytes of a call's stdout and stderr an
// instance keeps (the last ones).
const OutputTailSize = 2 << 10

// reasonSize bounds the kept reason line (a Go panic's first line).
const reasonSize = 256

// OutputTail keeps what a plugin writes to stdout and stderr during one
// call, bounded: the last OutputTailSize bytes, and the first line that
// gives a Go runtime's failure reason ("panic: ", "fatal error: "), which a
// long goroutine trace would push out of the tail. Engines give one to
// every instance as its WASI stdout and stderr, Reset it before each call
// and read it when a call fails, so that a site owner sees "panic:
// assignment to entry in nil map" instead of "wasm error: unreachable".
// Writing never blocks, never fails and never allocates; a call that
// writes nothing costs one load. Not safe for concurrent use (an instance
// runs one call at a time).
type OutputTail struct {
	total   int // bytes written since Reset
	tailN   int // bytes in tail, oldest first
	lineN   int // bytes of the current line in line (at most reasonSize)
	reasonN int // bytes in reason; 0 until a reason line was seen
	tail    [OutputTailSize]byte
	line    [reasonSize]byte
	reason  [reasonSize]byte
}

// Reset forgets what was written.
func (t *OutputTail) Reset() {
	if t.total != 0 {
		t.total, t.tailN, t.lineN, t.reasonN = 0, 0, 0, 0
	}
}

// Write implements io.Writer: it keeps the tail of what was written and
// the first reason line, and reports all of p written.
func (t *OutputTail) Write(p []byte) (int, error) {
	n := len(p)
	t.total += n
	switch {
	case n >= len(t.tail):
		t.tailN = copy(t.tail[:], p[n-len(t.tail):])
	case t.tailN+n <= len(t.tail):
		t.tailN += copy(t.tail[t.tailN:], p)
	default:
		drop := t.tailN + n - len(t.tail)
		copy(t.tail[:], t.tail[drop:t.tailN])
		copy(t.tail[t.tailN-drop:], p)
		t.tailN = len(t.tail)
	}
	if t.reasonN == 0 && isReason(p) {
		// Go's runtime prints "panic: " with a write of its own, maybe
		// after output that did not end its line.
		t.lineN = 0
	}
	for t.reasonN == 0 && len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			t.lineN += copy(t.line[t.lineN:], p)
			break
		}
		t.lineN += copy(t.line[t.lineN:], p[:i])
		t.endLine()
		p = p[i+1:]
	}
	return n, nil
}

// endLine keeps the current line as the reason if it is one.
func (t *OutputTail) endLine() {
	if l := bytes.TrimSpace(t.line[:t.lineN]); isReason(l) {
		t.reasonN = copy(t.reason[:], l)
	}
	t.lineN = 0
}

// Written reports whether anything was written since Reset.
func (t *OutputTail) Written() bool { return t.total != 0 }

// Output returns the kept tail as text: at most OutputTailSize bytes (and
// a leading "…" when more was written), trimmed, with control bytes other
// than newline and tab replaced.
func (t *OutputTail) Output() string {
	if t.total == 0 {
		return ""
	}
	s := printable(bytes.TrimSpace(t.tail[:t.tailN]))
	if t.total > t.tailN {
		s = "…" + s
	}
	return s
}

// Summary returns the line of the output that says why the call failed,
// on one line and at most reasonSize bytes: the reason of a Go panic or
// fatal error, else the last line written. It is "" when nothing was
// written.
func (t *OutputTail) Summary() string {
	if t.total == 0 {
		return ""
	}
	if t.reasonN == 0 && t.lineN > 0 {
		t.endLine() // a reason without its newline
	}
	line := t.reason[:t.reasonN]
	if len(line) == 0 {
		trimmed := bytes.TrimRight(t.tail[:t.tailN], " \t\r\n")
		line = bytes.TrimSpace(trimmed[bytes.LastIndexByte(trimmed, '\n')+1:])
		if len(line) > reasonSize {
			line = line[:reasonSize]
		}
	}
	return printable(line)
}

// OutOfMemory reports whether the output says the guest runtime ran out
// of memory (Go: "fatal error: out of memory", "runtime: out of memory").
func (t *OutputTail) OutOfMemory() bool {
	if t.total == 0 {
		return false
	}
	oom := []byte("out of memory")
	return bytes.Contains(t.reason[:t.reasonN], oom) || bytes.Contains(t.tail[:t.tailN], oom)
}

// Explain puts what the plugin wrote into the error of a failed call:
// the telling line first (what a site owner reads in the plugin logs),
// then err. It returns err unchanged when the plugin wrote nothing.
func (t *OutputTail) Explain(err error) error {
	sum := t.Summary()
	if sum == "" {
		return err
	}
	if t.total > len(sum)+2 { // more than that line and its newline
		return fmt.Errorf("%s (more in the plugin's output): %w", sum, err)
	}
	return fmt.Errorf("%s: %w", sum, err)
}

// isReason reports whether line starts with a Go runtime's failure reason.
func isReason(line []byte) bool {
	for _, p := range [...]string{"panic: ", "fatal error: ", "runtime: out of memory"} {
		if bytes.HasPrefix(line, []byte(p)) {
			return true
		}
	}
	return false
}

// printable turns b into valid UTF-8 text without control bytes other than
// newline and tab, which a log line must not carry.
func printable(b []byte) string {
	s := strings.ToValidUTF8(string(b), "?")
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' {
			return r
		}
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

// MemoryError is the error of a call that failed at its memory cap: it
// says the cap and how to raise it.
func MemoryError(maxPages uint32, err error) error {
	return fmt.Errorf("ran out of memory at its cap of %d pages (%d MiB): use less memory, or ask the PoP operator to raise the cap (plugins.memory in the configuration): %w",
		maxPages, uint64(maxPages)*65536>>20, err)
}
