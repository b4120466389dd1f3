package testutil

import (
	"bytes"
	"sync"
)

// maxBuffer bounds a SyncBuffer: enough to diagnose a failure, and a chatty
// child process cannot grow a test's memory without bound.
const maxBuffer = 4 << 20

// SyncBuffer collects output (a logger's, a child process's) that other
// goroutines write while the test reads it. It keeps the first 4 MiB.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p, or drops it once the buffer holds 4 MiB.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len() >= maxBuffer {
		return len(p), nil
	}
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
