//go:build !unix

package main

// cpuReport: getrusage is unix-only; bench.sh, which reads this line, runs
// on Linux and reads the server's CPU from /proc anyway.
func cpuReport() string { return "cpu: not measured on this platform (getrusage is unix-only)" }
