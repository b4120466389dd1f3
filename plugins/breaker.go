package plugins

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// The breaker's window. A plugin that fails on some requests only (one
// path an attacker can reach, a malformed header) must not be switched off
// for the whole site while it serves the rest: it opens on the failure
// ratio over the last breakerWindow, and only when enough calls were seen
// for the ratio to mean something.
const (
	// breakerWindow is how far back the breaker looks.
	breakerWindow = 10 * time.Second
	// breakerBuckets is how finely the window is kept: the counts are
	// marked at most once per breakerWindow/breakerBuckets, so calls
	// older than the window leave it in steps of 2 s.
	breakerBuckets = 5
	// breakerMinCalls is how many calls in the window the ratio needs.
	breakerMinCalls = 20
	// breakerShards spreads the success counter over cache lines: on many
	// cores one shared counter would bounce between them on every call.
	breakerShards = 8
)

// Breaker states. Anything but breakerClosed sends allow to the slow path.
const (
	breakerClosed int32 = iota
	breakerOpen
	breakerHalfOpen // cooldown over: one trial call is let through
)

// breaker is a per-plugin circuit breaker. It opens for cooldown when,
// within the window (the last breakerWindow, counted in buckets: the
// current one and the breakerBuckets-1 before it, so 8 to 10 s), at least
// threshold calls failed and either
//
//   - no call succeeded (a plugin that fails every call trips after
//     threshold calls: the quick path), or
//   - at least breakerMinCalls calls ran and at least half of them failed.
//
// While open, calls are refused without touching the plugin (and the
// site's failure policy applies). After the cooldown one trial call is let
// through: success closes it (with a fresh window), failure opens it again.
//
// The healthy case costs one atomic load per call (allow) and one load and
// one add on a sharded counter per success (success); the lock is taken
// only on failures and while the breaker is not closed. Failures are
// counted exactly, in per-bucket counts. Successes are counted as a
// running total that failures mark (at most once per bucket); the window's
// successes are the total now minus the total at the window's start,
// interpolated between the marks around it, so no success has to read the
// clock. Between marks far apart this assumes successes came at an even
// rate; a busy plugin with failures gets marks every bucket.
type breaker struct {
	threshold uint64
	cooldown  time.Duration
	now       func() time.Time

	// state is written under mu and read without it on the fast path.
	state atomic.Int32
	_     [60]byte // keep state's line read-only while successes count

	// ok counts successes, in shards picked by the caller.
	ok [breakerShards]struct {
		n atomic.Uint64
		_ [56]byte
	}

	mu        sync.Mutex
	fails     [breakerBuckets]failBucket
	marks     [breakerBuckets + 2]mark
	newest    int // index of the newest mark
	nmarks    int
	openUntil time.Time
	trial     bool // a half-open trial call is in flight

	// What opened the breaker, for health: when it last opened from
	// closed, and the calls that count since: those of the window that
	// opened it, then every call recorded while it is not closed (trial
	// calls, and calls allowed before it opened that ended since).
	openedAt              time.Time
	openCalls, openFailed int
}

// mark is the running total of successes at one moment.
type mark struct {
	at time.Time
	ok uint64
}

// failBucket counts the failures of one bucket-long stretch of time.
type failBucket struct {
	epoch int64 // the time in bucket widths since the Unix epoch
	n     uint64
}

const breakerBucket = breakerWindow / breakerBuckets

func bucketOf(t time.Time) int64 { return t.UnixNano() / int64(breakerBucket) }

// breakerEvent is what a recorded outcome did to the breaker.
type breakerEvent uint8

const (
	breakerNoChange  breakerEvent = iota
	breakerOpened                 // it opened from closed
	breakerReopened               // a half-open trial failed
	breakerRecovered              // a half-open trial succeeded: closed
)

// transition describes a state change for the site owner's log.
type transition struct {
	ev           breakerEvent
	fails, calls int           // in the window, when it opened
	noSuccess    bool          // opened on the quick path
	cooldown     time.Duration // how long calls are refused
}

func newBreaker(threshold int, cooldown time.Duration, now func() time.Time) *breaker {
	if threshold < 1 {
		threshold = 1
	}
	b := &breaker{threshold: uint64(threshold), cooldown: cooldown, now: now}
	b.resetLocked(now())
	return b
}

// allow reports whether a call may proceed.
func (b *breaker) allow() bool {
	if b.state.Load() == breakerClosed {
		return true
	}
	return b.allowSlow()
}

func (b *breaker) allowSlow() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state.Load() {
	case breakerClosed:
		return true
	case breakerOpen:
		if b.now().Before(b.openUntil) {
			return false
		}
		b.state.Store(breakerHalfOpen)
	}
	if b.trial {
		return false
	}
	b.trial = true
	return true
}

// record notes the outcome of an allowed call and says whether the
// breaker opened or closed. shard is any number, best different for
// concurrent callers: it only spreads the success counter. The request
// path calls success first and recordSlow only when that says so.
func (b *breaker) record(ok bool, shard uint8) transition {
	if ok && b.success(shard) {
		return transition{}
	}
	return b.recordSlow(ok, shard)
}

// success counts a successful call while the breaker is closed, the
// healthy case: one load and one add on this shard's line. It reports
// false, counting nothing, when the caller must record the call instead.
func (b *breaker) success(shard uint8) bool {
	if b.state.Load() != breakerClosed {
		return false
	}
	b.ok[shard&(breakerShards-1)].n.Add(1)
	return true
}

// recordSlow records a failure, or a success success did not count.
func (b *breaker) recordSlow(ok bool, shard uint8) transition {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.now()
	if ok {
		b.ok[shard&(breakerShards-1)].n.Add(1)
		if b.state.Load() != breakerClosed {
			b.openCalls++
		}
		if b.state.Load() != breakerHalfOpen {
			// Closed, or open and this call was allowed before it
			// opened: a late success says nothing about now.
			return transition{}
		}
		// The trial call worked: close, with a fresh window so the
		// failures that opened the breaker do not open it again at once.
		b.resetLocked(t)
		return transition{ev: breakerRecovered}
	}
	b.markLocked(t)
	e := bucketOf(t)
	fb := &b.fails[(e%breakerBuckets+breakerBuckets)%breakerBuckets]
	if fb.epoch != e {
		*fb = failBucket{epoch: e}
	}
	fb.n++
	if b.state.Load() != breakerClosed {
		b.openCalls++
		b.openFailed++
	}
	switch b.state.Load() {
	case breakerOpen:
		// A call allowed before the breaker opened ended badly: nothing
		// new to decide.
		return transition{}
	case breakerHalfOpen:
		b.trial = false
		b.state.Store(breakerOpen)
		b.openUntil = t.Add(b.cooldown)
		return transition{ev: breakerReopened, cooldown: b.cooldown}
	}
	okN, failN := b.windowLocked(t)
	calls := okN + float64(failN)
	quick := okN < 1
	if failN < b.threshold || (!quick && (calls < breakerMinCalls || 2*float64(failN) < calls)) {
		return transition{}
	}
	b.state.Store(breakerOpen)
	b.openUntil = t.Add(b.cooldown)
	tr := transition{ev: breakerOpened, fails: int(failN), calls: int(calls + 0.5),
		noSuccess: quick, cooldown: b.cooldown}
	b.openedAt, b.openCalls, b.openFailed = t, tr.calls, tr.fails
	return tr
}

// okTotal sums the success shards.
func (b *breaker) okTotal() uint64 {
	var n uint64
	for i := range b.ok {
		n += b.ok[i].n.Load()
	}
	return n
}

// markLocked takes a mark at t unless the newest is less than a bucket
// old. The ring keeps breakerBuckets+2 marks at least a bucket apart, so
// its oldest mark is always at or before the window's start.
func (b *breaker) markLocked(t time.Time) {
	if b.nmarks > 0 && t.Sub(b.marks[b.newest].at) < breakerBucket {
		return
	}
	b.newest = (b.newest + 1) % len(b.marks)
	b.marks[b.newest] = mark{at: t, ok: b.okTotal()}
	if b.nmarks < len(b.marks) {
		b.nmarks++
	}
}

// windowLocked counts the calls of the window (the current bucket and the
// breakerBuckets-1 before it: the last 8 to 10 s): the failures
// of its buckets exactly; the successes as the total now minus an
// estimate of the total at the window's start, interpolated between the
// two marks around it (successes assumed evenly spread between them).
// Before any mark is that old, successes count from the oldest (the
// reset).
func (b *breaker) windowLocked(t time.Time) (ok float64, fails uint64) {
	e := bucketOf(t)
	for _, fb := range b.fails {
		if fb.epoch > e-breakerBuckets && fb.epoch <= e {
			fails += fb.n
		}
	}
	cur := mark{at: t, ok: b.okTotal()}
	// The window starts where its oldest failure bucket does.
	start := time.Unix(0, (e-breakerBuckets+1)*int64(breakerBucket))
	after := cur // the mark after the base, or now
	base := b.marks[(b.newest-b.nmarks+1+len(b.marks))%len(b.marks)]
	for i := range b.nmarks {
		m := b.marks[(b.newest-i+len(b.marks))%len(b.marks)]
		if !m.at.After(start) {
			base = m
			break
		}
		after = m
	}
	baseOK := float64(base.ok)
	if span := after.at.Sub(base.at); base.at.Before(start) && span > 0 {
		// The part of (base, after] that lies before the window.
		baseOK += float64(start.Sub(base.at)) / float64(span) * float64(after.ok-base.ok)
	}
	return float64(cur.ok) - baseOK, fails
}

// open reports whether the breaker refuses calls now.
func (b *breaker) open() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state.Load() {
	case breakerOpen:
		return b.now().Before(b.openUntil) || b.trial
	case breakerHalfOpen:
		return b.trial
	}
	return false
}

// health reports the breaker's state and the calls it counts now: while
// closed, those of its window (the last 8 to 10 s, successes estimated as
// windowLocked does); while open or half-open, those that opened it and
// every call recorded since. An open breaker whose cooldown has passed
// stays open here until a call asks for the trial: nothing says yet that
// the plugin works again.
func (b *breaker) health() Health {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state.Load() {
	case breakerOpen:
		return Health{Breaker: BreakerOpen, Calls: b.openCalls, Failed: b.openFailed, OpenedAt: b.openedAt}
	case breakerHalfOpen:
		return Health{Breaker: BreakerHalfOpen, Calls: b.openCalls, Failed: b.openFailed, OpenedAt: b.openedAt}
	}
	ok, fails := b.windowLocked(b.now())
	return Health{Breaker: BreakerClosed, Calls: int(max(ok, 0)+0.5) + int(fails), Failed: int(fails), Window: breakerWindow}
}

// reset closes the breaker and forgets the window (a new version).
func (b *breaker) reset() {
	b.mu.Lock()
	b.resetLocked(b.now())
	b.mu.Unlock()
}

func (b *breaker) resetLocked(t time.Time) {
	b.state.Store(breakerClosed)
	b.trial = false
	b.fails = [breakerBuckets]failBucket{}
	b.newest, b.nmarks = 0, 1
	b.marks[0] = mark{at: t, ok: b.okTotal()}
}

// why says, for the site owner's log, why the breaker opened.
func (tr transition) why() string {
	if tr.noSuccess {
		return fmt.Sprintf("%d calls in the last %v failed and none succeeded", tr.fails, breakerWindow)
	}
	return fmt.Sprintf("%d of %d calls in the last %v failed", tr.fails, tr.calls, breakerWindow)
}
