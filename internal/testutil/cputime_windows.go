//go:build windows

package testutil

import (
	"syscall"
	"time"
)

// ProcessCPU is the CPU time (user and kernel) this process has used so
// far; see the unix version for why benchmarks use it.
func ProcessCPU() time.Duration {
	h, err := syscall.GetCurrentProcess()
	if err != nil {
		return 0
	}
	var created, exited, kernel, user syscall.Filetime
	if err := syscall.GetProcessTimes(h, &created, &exited, &kernel, &user); err != nil {
		return 0
	}
	// A Filetime counts 100 ns units; here it is a duration, not a date.
	units := func(f syscall.Filetime) int64 { return int64(f.HighDateTime)<<32 | int64(f.LowDateTime) }
	return time.Duration((units(kernel) + units(user)) * 100)
}

// SetReceiveBuffer sets a socket's SO_RCVBUF; see the unix version.
func SetReceiveBuffer(fd uintptr, size int) error {
	return syscall.SetsockoptInt(syscall.Handle(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, size)
}
