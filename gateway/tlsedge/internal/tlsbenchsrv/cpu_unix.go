//go:build unix

package main

import (
	"fmt"
	"syscall"
)

// cpuReport is the process's user and system CPU time so far.
func cpuReport() string {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return fmt.Sprintf("cpu: getrusage: %v", err)
	}
	return fmt.Sprintf("cpu user %.3fs sys %.3fs", float64(ru.Utime.Nano())/1e9, float64(ru.Stime.Nano())/1e9)
}
