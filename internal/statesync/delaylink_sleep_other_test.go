//go:build !linux

package statesync

import "time"

// shortSleep sleeps d with a Go timer: syscall.Nanosleep is Linux-only in
// the standard library (and absent on macOS and Windows), so outside Linux
// the delaying link may be up to a millisecond late per hop, and the
// planet benchmark's figures are Linux figures.
func shortSleep(d time.Duration) { time.Sleep(d) }
