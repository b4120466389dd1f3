package native

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"

	"github.com/meridian-edge/meridian/plugins"
)

// killed marks instance.deadline once the watchdog expired the call.
const killed = -1

// instance is one plugin instance with its kernel. Not safe for concurrent
// use (the pool hands it to one request at a time), except expire, which
// the engine's watchdog runs.
type instance struct {
	p    *program
	k    *kernel
	mod  api.Module
	kmod api.Module // the instance's kernel module (kernel.wat)
	mem  api.Memory // the plugin's memory; nil when it has none
	cc   callCtx

	onRequest, onResponse api.Function
	// Whether on_request and on_response return a value: read once, as
	// wazero's ResultTypes allocates.
	reqResult, respResult bool
	stack                 [1]uint64
	out                   []byte // output of the last call, reused
	// stdio keeps the end of what the plugin writes to stdout and stderr
	// during a call (WASI fd 1 and 2), to explain a failure.
	stdio plugins.OutputTail

	// Per call: what the host functions see.
	reqCtx context.Context
	env    *plugins.CallEnv
	vars   map[string][]byte // Extism vars, kept across calls like the SDK's
	varSz  int

	// deadline is the running call's deadline (watchdog clock), 0 when
	// idle, killed once expire marked the call.
	deadline atomic.Int64
	broken   bool
	// growRefused is set when the plugin's memory.grow was refused during
	// the running call (or the instance's init): it asked for memory past
	// its cap. Reset by each Call.
	growRefused bool
}

// callCtx is the context every wasm call of an instance runs under. It
// carries the instance to the host functions with one type assertion
// instead of a context.Value walk, and allocates nothing per call. It is
// never done: the deadline is enforced by metering (yield), not by wazero
// watching the context. Value answers nil: no wazero experimental feature is
// switched on through it, and the request's own context reaches KV calls as
// instance.reqCtx.
type callCtx struct {
	in      *instance
	expired atomic.Bool // set by the watchdog; yield then ends the call
}

func (c *callCtx) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c *callCtx) Done() <-chan struct{}       { return nil }
func (c *callCtx) Value(any) any               { return nil }
func (c *callCtx) Err() error {
	if c.expired.Load() {
		return context.DeadlineExceeded
	}
	return nil
}

// errDeadline ends a call from yield once its deadline passed.
var errDeadline = errors.New("call passed its deadline")

// yield is the metering host function (see meter.go): a plugin calls it
// when its budget runs out. It gives the Go scheduler a safe point, ends the
// call if the watchdog marked it expired, and hands out a new budget.
func yield(ctx context.Context, _ api.Module, stack []uint64) {
	in := current(ctx)
	runtime.Gosched()
	if in.cc.expired.Load() {
		panic(errDeadline)
	}
	stack[0] = meterBudget
}

// grow is memory.grow of the plugin's memory, to which the metering
// rewrite turns every memory.grow: it grows the memory as the instruction
// would and notes a refusal (the memory cap), so that a guest that traps
// right after (AssemblyScript's allocator, hand-written wasm), printing
// nothing, is told apart as out of memory. memory.grow is rare: a guest
// runtime grows its heap in large steps.
func grow(ctx context.Context, _ api.Module, stack []uint64) {
	in := current(ctx)
	prev, ok := uint32(0), false
	if in.mem != nil {
		prev, ok = in.mem.Grow(uint32(stack[0]))
	}
	if !ok {
		in.growRefused = true
		prev = 0xffffffff // -1: what memory.grow answers when it fails
	}
	stack[0] = uint64(prev)
}

// current returns the instance a host function runs for.
func current(ctx context.Context) *instance {
	c, ok := ctx.(*callCtx)
	if !ok {
		panic("native plugin host function called outside a plugin call")
	}
	return c.in
}

// arm starts the deadline of a call: two atomic loads and one store (the
// second load wakes the watchdog when it sleeps, see watchdog.run).
func (in *instance) arm(d time.Duration) {
	w := in.p.e.wd
	in.deadline.Store(w.deadline(d))
	w.armed()
}

// disarm ends the deadline of a call and reports whether it expired. Once
// it returns, expire can no longer mark the call: the swap to 0 and the
// compare-and-swap in expire decide exactly one winner.
func (in *instance) disarm() (expired bool) {
	return in.deadline.Swap(0) == killed
}

// expire runs on the watchdog's goroutine. It marks the call expired when
// its armed deadline has passed; the plugin's next yield (at most a few
// milliseconds of wasm later, see meter.go) then ends the call.
func (in *instance) expire(now int64) {
	dl := in.deadline.Load()
	if dl <= 0 || now < dl {
		return // idle, already killed, or in time
	}
	// The CAS decides against disarm: exactly one of them wins.
	if in.deadline.CompareAndSwap(dl, killed) {
		in.cc.expired.Store(true)
	}
}

// Call implements plugins.Instance. The returned output is valid until the
// next Call on this instance.
func (in *instance) Call(ctx context.Context, fn string, input []byte, env *plugins.CallEnv) ([]byte, error) {
	lim := &in.p.lim
	if len(input) > lim.MaxInput {
		return nil, &plugins.CallError{Kind: plugins.KindInput, Err: fmt.Errorf("request description is %d bytes, limit %d: ask for fewer headers", len(input), lim.MaxInput)}
	}
	if in.broken {
		return nil, &plugins.CallError{Kind: plugins.KindInstance, Err: errors.New("instance failed before and must be discarded")}
	}
	var f api.Function
	var hasResult bool
	switch fn {
	case "on_request":
		f, hasResult = in.onRequest, in.reqResult
	case "on_response":
		f, hasResult = in.onResponse, in.respResult
	default:
		f = in.mod.ExportedFunction(fn)
		hasResult = f != nil && len(f.Definition().ResultTypes()) > 0
	}
	if f == nil {
		return nil, &plugins.CallError{Kind: plugins.KindTrap, Err: fmt.Errorf("unknown function: %s", fn)}
	}
	if err := ctx.Err(); err != nil {
		in.broken = true
		return nil, &plugins.CallError{Kind: plugins.KindTimeout, Err: fmt.Errorf("request ended before %s: %w", fn, err)}
	}
	if err := in.k.reset(input); err != nil {
		return nil, &plugins.CallError{Kind: plugins.KindInput, Err: err}
	}
	in.reqCtx, in.env = ctx, env
	in.stack[0] = 0
	in.stdio.Reset()
	in.growRefused = false
	in.arm(lim.Timeout)
	err := f.CallWithStack(&in.cc, in.stack[:])
	expired := in.disarm()
	in.reqCtx, in.env = nil, nil
	rc := uint32(0)
	if hasResult {
		rc = uint32(in.stack[0])
	}
	if err != nil && exitedZero(err) {
		// proc_exit(0) ends the call successfully (as with the go-sdk), but
		// the module is closed: the next call asks for a new instance.
		err, rc = nil, 0
		defer func() { in.broken = true }()
	}
	if err != nil || expired {
		in.broken = true
		return nil, in.classify(fn, err, expired)
	}
	msg := in.k.errorMessage()
	switch {
	case rc != 0 && msg != "":
		in.broken = true
		return nil, &plugins.CallError{Kind: plugins.KindPluginError, Err: errors.New(msg)}
	case rc != 0:
		in.broken = true
		return nil, &plugins.CallError{Kind: plugins.KindPluginError, Err: fmt.Errorf("%s returned %d without an error message", fn, rc)}
	case msg != "":
		// The go-sdk reports this as a failed call too.
		in.broken = true
		return nil, &plugins.CallError{Kind: plugins.KindTrap, Err: fmt.Errorf("%s set an error but returned success: %s", fn, msg)}
	}
	out := in.k.output()
	if len(out) > lim.MaxOutput {
		in.broken = true
		return nil, &plugins.CallError{Kind: plugins.KindBadOutput, Err: fmt.Errorf("output of %d bytes exceeds the %d byte limit", len(out), lim.MaxOutput)}
	}
	in.out = append(in.out[:0], out...)
	return in.out, nil
}

// classify turns a failed call into a CallError of the right kind.
func (in *instance) classify(fn string, err error, expired bool) error {
	if err == nil {
		err = errors.New("deadline passed as the call returned")
	}
	out := in.stdio.Output()
	// Memory first: a call that failed after its memory.grow or a kernel
	// allocation was refused (the cap) is a memory overrun, whatever ended
	// it (the trap of an allocator that got -1, the deadline while a
	// runtime kept trying), and so is a guest runtime that says it ran out
	// of memory. A plugin that merely holds much memory and traps for
	// another reason is a trap.
	if in.growRefused || in.k.full || in.stdio.OutOfMemory() {
		return &plugins.CallError{Kind: plugins.KindMemory, Err: plugins.MemoryError(in.p.lim.MaxPages, in.stdio.Explain(err)), Output: out}
	}
	var exit *sys.ExitError
	if expired || errors.As(err, &exit) && (exit.ExitCode() == sys.ExitCodeDeadlineExceeded || exit.ExitCode() == sys.ExitCodeContextCanceled) {
		return &plugins.CallError{Kind: plugins.KindTimeout, Err: fmt.Errorf("call stopped after %v: %w", in.p.lim.Timeout, in.stdio.Explain(err)), Output: out}
	}
	return &plugins.CallError{Kind: plugins.KindTrap, Err: in.stdio.Explain(fmt.Errorf("%s: %w", fn, err)), Output: out}
}

// MemoryBytes implements plugins.Instance: linear memory plus kernel.
func (in *instance) MemoryBytes() uint64 {
	n := in.k.bytes()
	if in.mem != nil {
		n += uint64(in.mem.Size())
	}
	return n
}

// Close implements plugins.Instance.
func (in *instance) Close(ctx context.Context) error {
	in.p.e.wd.remove(in)
	in.broken = true
	var err error
	if in.mod != nil {
		err = in.mod.Close(ctx)
	}
	if in.kmod != nil {
		if kerr := in.kmod.Close(ctx); err == nil {
			err = kerr
		}
	}
	return err
}

// ReadBlock implements plugins.HostMemory.
func (in *instance) ReadBlock(off uint64) ([]byte, error) {
	return slices.Clone(in.k.block(off)), nil
}

// WriteBlock implements plugins.HostMemory.
func (in *instance) WriteBlock(b []byte) (uint64, error) { return in.k.write(b) }

// memoryOf returns the module's linear memory, or nil when it has none.
// wazero answers a module without memory with a typed nil whose Size
// panics, so the check runs once here, at instantiation.
func memoryOf(mod api.Module) (m api.Memory) {
	m = mod.Memory()
	defer func() {
		if recover() != nil {
			m = nil
		}
	}()
	_ = m.Size()
	return m
}

// exitedZero reports whether err is WASI proc_exit(0). It is a separate
// function so the error path's allocation stays off the success path.
func exitedZero(err error) bool {
	var exit *sys.ExitError
	return errors.As(err, &exit) && exit.ExitCode() == 0
}
