package plugin_test

import (
	"syscall"
	"testing"
	"time"
)

// processCPU is the CPU time (user + system) the process has used: unlike
// ns/op it does not count time spent waiting for a core on a shared machine,
// and it does count GC and every other goroutine a request causes.
func processCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
