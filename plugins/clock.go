package plugins

import (
	"math"
	"sync/atomic"

	"github.com/tetratelabs/wazero"
)

// WithVirtualClock gives one plugin instance its own monotonic clock (WASI
// clock_time_get MONOTONIC and the sleeps of poll_oneoff): it starts at
// zero, advances one nanosecond per reading and by the full length of every
// sleep, instantly. Both engines give every instance one.
//
// A plugin thus still sees no real time (only the request time the host
// grants), and sleeping costs nothing, but the clock behaves like a clock
// for a guest runtime's own bookkeeping. wazero's default fake clock
// advances a whole millisecond per reading; a Go plugin's garbage collector
// reads it mostly while it works, concludes that it takes nearly all the
// CPU, and its CPU limiter then switches the collector's assists off. In a
// wasm export the collector's background workers never run, so from then
// on nothing is collected: measured here, every Go plugin instance ran out
// of memory and trapped after 600 000 to 1 000 000 requests (sooner the
// more it allocates: after 329 requests making 1 MiB of garbage each;
// TestGoPluginMemoryStaysBounded).
//
// Calls of one instance never overlap (the pool hands an instance to one
// request at a time), so the clock needs no lock; it is atomic so that the
// race detector accepts its use from whichever goroutine runs the call.
func WithVirtualClock(c wazero.ModuleConfig) wazero.ModuleConfig {
	var now atomic.Int64
	return c.WithNanotime(func() int64 { return now.Add(1) }, 1).
		WithNanosleep(func(ns int64) {
			if ns <= 0 {
				return
			}
			for {
				old := now.Load()
				nw := old + ns
				if nw < old { // saturate: the clock never wraps to the past
					nw = math.MaxInt64
				}
				if now.CompareAndSwap(old, nw) {
					return
				}
			}
		})
}
