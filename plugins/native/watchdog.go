package native

import (
	"sync"
	"sync/atomic"
	"time"
)

// watchTick is how often the watchdog looks at running calls. A call is
// stopped between its deadline and two ticks after it.
const watchTick = 2 * time.Millisecond

// idleTicks is how many ticks without a call armed the watchdog waits
// before it sleeps. An idle PoP then costs no CPU for deadlines; a busy
// one, whose calls follow each other more closely, never pays for waking
// it.
const idleTicks = 50

// watchdog enforces call deadlines for all instances of an engine with one
// goroutine, so a call costs two atomic operations and a load instead of
// arming a timer and reading the clock (about 190 ns on the benchmark
// machine). It keeps a coarse clock that calls read to set their deadline.
//
// It only marks a late call expired; the plugin's metering (meter.go) calls
// yield at least every few milliseconds of wasm execution, and yield ends an
// expired call. The watchdog itself never waits for a plugin: yield is a Go
// safe point, so the scheduler, this goroutine and a stop-the-world GC keep
// running while a plugin loops (TestNativeLoopDoesNotStopTheWorld).
//
// It ticks only while calls run: after idleTicks ticks without an armed
// call it stops its ticker and sleeps until arm wakes it.
type watchdog struct {
	epoch time.Time
	// now is the coarse clock, monotonic ns since epoch (> 0), while the
	// goroutine ticks; 0 while it sleeps, when deadline reads the clock
	// itself and arm wakes the goroutine.
	now atomic.Int64

	mu  sync.Mutex
	ins map[*instance]struct{}

	wake chan struct{} // capacity 1: arm's signal to a sleeping goroutine
	stop chan struct{}
	done chan struct{}
	// event, when set (tests), is called on the goroutine after each tick
	// and as it goes to sleep and wakes.
	event func(watchEvent)
}

// watchEvent is what the watchdog's goroutine did (watchdog.event).
type watchEvent int

const (
	watchTicked watchEvent = iota
	watchSlept
	watchWoke
)

func newWatchdog() *watchdog { return startWatchdog(nil) }

// startWatchdog starts a watchdog that reports what it does to event (nil:
// nothing).
func startWatchdog(event func(watchEvent)) *watchdog {
	w := &watchdog{epoch: time.Now(), ins: map[*instance]struct{}{},
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}), event: event}
	w.now.Store(w.clock())
	go w.run()
	return w
}

// clock reads the monotonic clock as the watchdog counts it (> 0).
func (w *watchdog) clock() int64 { return int64(time.Since(w.epoch)) + 1 }

func (w *watchdog) note(ev watchEvent) {
	if w.event != nil {
		w.event(ev)
	}
}

func (w *watchdog) run() {
	defer close(w.done)
	t := time.NewTicker(watchTick)
	defer t.Stop()
	idle := 0
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
		now := w.clock()
		w.now.Store(now)
		if w.scan(now) {
			idle = 0
		} else {
			idle++
		}
		w.note(watchTicked)
		if idle < idleTicks {
			continue
		}
		// Go to sleep. A wake left from while we ticked is stale.
		select {
		case <-w.wake:
		default:
		}
		w.now.Store(0)
		// arm stores its deadline before it reads now, and we store now
		// before we look at the deadlines: either this scan sees the call,
		// or arm sees 0 and wakes us.
		if w.scan(w.clock()) {
			w.now.Store(w.clock())
			idle = 0
			continue
		}
		t.Stop()
		w.note(watchSlept)
		select {
		case <-w.stop:
			return
		case <-w.wake:
		}
		w.now.Store(w.clock())
		t.Reset(watchTick)
		idle = 0
		w.note(watchWoke)
	}
}

// scan expires the calls past their deadline at now and reports whether a
// call is armed (running and not expired).
func (w *watchdog) scan(now int64) (armed bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for in := range w.ins {
		in.expire(now)
		if in.deadline.Load() > 0 {
			armed = true
		}
	}
	return armed
}

// deadline returns the deadline of a call of length d started now.
func (w *watchdog) deadline(d time.Duration) int64 {
	now := w.now.Load()
	if now == 0 {
		now = w.clock() // asleep: the coarse clock is stale
	}
	// The coarse clock lags by up to a tick: count from the tick's start.
	return now + int64(d) + int64(watchTick)
}

// armed is called once a call's deadline is stored: it wakes the goroutine
// if it sleeps. A plain load when it ticks.
func (w *watchdog) armed() {
	if w.now.Load() != 0 {
		return
	}
	select {
	case w.wake <- struct{}{}:
	default: // already signalled
	}
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

// close stops the goroutine, ticking or asleep, and waits for it.
func (w *watchdog) close() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}
