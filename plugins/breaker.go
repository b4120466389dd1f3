package plugins

import (
	"sync"
	"sync/atomic"
	"time"
)

// breaker is a per-plugin circuit breaker. After Threshold consecutive
// failed calls it opens for Cooldown: calls are refused without touching the
// plugin (and the site's failure policy applies). After the cooldown one
// trial call is let through; success closes it, failure opens it again.
//
// The healthy case (no failure since the last success) costs one atomic
// load per call and per outcome; the lock is taken only once a call failed.
type breaker struct {
	threshold int32
	cooldown  time.Duration
	now       func() time.Time

	// failures is written under mu and read without it on the fast path.
	failures atomic.Int32

	mu        sync.Mutex
	openUntil time.Time
	trial     bool // a half-open trial call is in flight
}

func newBreaker(threshold int, cooldown time.Duration, now func() time.Time) *breaker {
	return &breaker{threshold: int32(threshold), cooldown: cooldown, now: now}
}

// allow reports whether a call may proceed.
func (b *breaker) allow() bool {
	if b.failures.Load() < b.threshold {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failures.Load() < b.threshold {
		return true
	}
	if b.now().Before(b.openUntil) || b.trial {
		return false
	}
	b.trial = true
	return true
}

// record notes the outcome of an allowed call.
func (b *breaker) record(ok bool) {
	// trial is only set while failures >= threshold, and a success resets
	// failures to 0 under mu: with no failure counted there is nothing to do.
	if ok && b.failures.Load() == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.trial = false
	if ok {
		b.failures.Store(0)
		return
	}
	f := b.failures.Add(1)
	if f >= b.threshold {
		b.openUntil = b.now().Add(b.cooldown)
	}
}

// open reports whether the breaker refuses calls now.
func (b *breaker) open() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.failures.Load() >= b.threshold && (b.now().Before(b.openUntil) || b.trial)
}

func (b *breaker) reset() {
	b.mu.Lock()
	b.failures.Store(0)
	b.trial = false
	b.mu.Unlock()
}
