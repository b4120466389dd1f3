//go:build !linux

package cache

import "syscall"

// vecWriter is Linux-only; elsewhere responses go through net.Conn.
type vecWriter struct{}

// newVecWriter returns nil: the raw writev is used on Linux only.
func newVecWriter(syscall.RawConn) *vecWriter { return nil }

// write is not called: newVecWriter returns nil.
func (*vecWriter) write(a, b []byte) (int64, error) {
	panic("cache: vecWriter on a platform without it")
}
