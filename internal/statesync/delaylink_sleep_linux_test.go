package statesync

import (
	"syscall"
	"time"
)

// shortSleep blocks this goroutine's thread for d (at most a couple of
// milliseconds) with nanosleep, which wakes tens of microseconds late
// where a Go timer may wake a millisecond late (see delayLink).
func shortSleep(d time.Duration) {
	ts := syscall.NsecToTimespec(d.Nanoseconds())
	for syscall.Nanosleep(&ts, &ts) == syscall.EINTR {
	}
}
