package l3

import (
	"sync"
	"time"
)

// breaker is a circuit breaker: after threshold consecutive failures it opens
// for cooldown, during which operations are refused at once; then one probe
// is let through, and its outcome closes or re-opens the breaker.
type breaker struct {
	mu        sync.Mutex
	threshold int
	cooldown  time.Duration
	now       func() time.Time

	failures  int
	open      bool
	openUntil time.Time
	probing   bool
	opened    int64 // times the breaker opened
}

// allow reports whether an operation may run now.
func (b *breaker) allow() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.open {
		return true
	}
	if b.probing || b.now().Before(b.openUntil) {
		return false
	}
	b.probing = true
	return true
}

func (b *breaker) success() {
	b.mu.Lock()
	b.failures, b.open, b.probing = 0, false, false
	b.mu.Unlock()
}

func (b *breaker) failure() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures++
	if b.probing || (!b.open && b.failures >= b.threshold) {
		if !b.open {
			b.opened++
		}
		b.open, b.probing = true, false
		b.openUntil = b.now().Add(b.cooldown)
	}
}

// state returns whether the breaker is open and how often it opened.
func (b *breaker) state() (open bool, opened int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.open, b.opened
}

// neutral ends an operation whose outcome says nothing about the store's
// health (cancelled by the caller): a probe slot is handed back.
func (b *breaker) neutral() {
	b.mu.Lock()
	b.probing = false
	b.mu.Unlock()
}
