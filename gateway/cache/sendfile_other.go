//go:build !linux

package cache

import (
	"syscall"
)

// fileSender is Linux-only; elsewhere bodies are written from memory.
type fileSender struct{}

// connSender returns nil: sendfile is used on Linux only.
func connSender(syscall.RawConn) *fileSender { return nil }

// sendFile is not called: connSender returns nil.
func (*fileSender) sendFile(*[]byte, int, int64, int64) (int64, error) {
	return 0, syscall.ENOSYS
}
