package native

import (
	"sync"
	"sync/atomic"
	"time"
)

// watchTick is how often the watchdog looks at running calls. A call is
// stopped between its deadline and two ticks after it.
const watchTick = 2 * time.Millisecond

// watchdog enforces call deadlines for all instances of an engine with one
// goroutine, so a call costs two atomic operations instead of arming a
// timer and reading the clock (about 190 ns on the benchmark machine). It
// keeps a coarse clock that calls read to set their deadline.
//
// It only marks a late call expired; the plugin's metering (meter.go) calls
// yield at least every few milliseconds of wasm execution, and yield ends an
// expired call. The watchdog itself never waits for a plugin: yield is a Go
// safe point, so the scheduler, this goroutine and a stop-the-world GC keep
// running while a plugin loops (TestNativeLoopDoesNotStopTheWorld).
type watchdog struct {
	epoch time.Time
	now   atomic.Int64 // coarse monotonic ns since epoch, > 0

	mu  sync.Mutex
	ins map[*instance]struct{}

	stop chan struct{}
	done chan struct{}
}

func newWatchdog() *watchdog {
	w := &watchdog{epoch: time.Now(), ins: map[*instance]struct{}{}, stop: make(chan struct{}), done: make(chan struct{})}
	w.now.Store(1)
	go w.run()
	return w
}

func (w *watchdog) run() {
	defer close(w.done)
	t := time.NewTicker(watchTick)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
		now := int64(time.Since(w.epoch)) + 1
		w.now.Store(now)
		w.mu.Lock()
		for in := range w.ins {
			in.expire(now)
		}
		w.mu.Unlock()
	}
}

// deadline returns the deadline of a call of length d started now.
func (w *watchdog) deadline(d time.Duration) int64 {
	// The coarse clock lags by up to a tick: count from the tick's start.
	return w.now.Load() + int64(d) + int64(watchTick)
}

func (w *watchdog) add(in *instance) {
	w.mu.Lock()
	w.ins[in] = struct{}{}
	w.mu.Unlock()
}

func (w *watchdog) remove(in *instance) {
	w.mu.Lock()
	delete(w.ins, in)
	w.mu.Unlock()
}

// removeProgram forgets every instance of p (closed with its program).
func (w *watchdog) removeProgram(p *program) {
	w.mu.Lock()
	for in := range w.ins {
		if in.p == p {
			delete(w.ins, in)
		}
	}
	w.mu.Unlock()
}

// close stops the goroutine and waits for it.
func (w *watchdog) close() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}
