package testutil

import (
	"testing"
	"time"
)

// WaitFor polls cond until it holds, failing t after a generous bound: for
// an event another goroutine makes happen (a metric after the reply left, a
// write-down), never as a measure of time.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
