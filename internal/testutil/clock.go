package testutil

import (
	"sync"
	"time"
)

// Clock is a wall clock a test moves forward: components that take a
// Now func (replicated state, plugin hosts) share one, so expiry is decided
// by the clock, never by how long the test takes. The zero value reads the
// real time.
type Clock struct {
	mu     sync.Mutex
	offset time.Duration
}

// Now returns the real time plus every Advance so far.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}
