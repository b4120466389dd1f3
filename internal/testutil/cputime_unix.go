//go:build unix

package testutil

import (
	"syscall"
	"time"
)

// ProcessCPU is the CPU time (user and system) this process has used so
// far. Benchmarks report it per operation: unlike ns/op it leaves out time
// spent waiting for a core on a shared machine, and it counts the GC and
// every goroutine an operation causes, servers in the process included.
func ProcessCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// SetReceiveBuffer sets a socket's SO_RCVBUF, from a net.Dialer's or
// net.ListenConfig's Control function: tests shrink it so that a server
// writing a large body blocks until the client reads.
func SetReceiveBuffer(fd uintptr, size int) error {
	return syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, size)
}
