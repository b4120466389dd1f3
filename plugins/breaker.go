package plugins

import (
	"sync"
	"time"
)

// breaker is a per-plugin circuit breaker. After Threshold consecutive
// failed calls it opens for Cooldown: calls are refused without touching the
// plugin (and the site's failure policy applies). After the cooldown one
// trial call is let through; success closes it, failure opens it again.
type breaker struct {
	threshold int
	cooldown  time.Duration
	now       func() time.Time

	mu        sync.Mutex
	failures  int
	openUntil time.Time
	trial     bool // a half-open trial call is in flight
}

func newBreaker(threshold int, cooldown time.Duration, now func() time.Time) *breaker {
	return &breaker{threshold: threshold, cooldown: cooldown, now: now}
}

// allow reports whether a call may proceed.
func (b *breaker) allow() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failures < b.threshold {
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
	b.mu.Lock()
	defer b.mu.Unlock()
	b.trial = false
	if ok {
		b.failures = 0
		return
	}
	b.failures++
	if b.failures >= b.threshold {
		b.openUntil = b.now().Add(b.cooldown)
	}
}

// open reports whether the breaker refuses calls now.
func (b *breaker) open() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.failures >= b.threshold && (b.now().Before(b.openUntil) || b.trial)
}
