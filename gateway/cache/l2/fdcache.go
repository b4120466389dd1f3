package l2

import (
	"sync"
	"sync/atomic"
	"syscall"
)

// fdCacheSize is how many small object files are kept open. A hit of a
// small object then costs one pread instead of open, pread and close (the
// path walk of open is the dearest part of a small hit after the body's
// checksum); nginx's open_file_cache does the same.
const fdCacheSize = 1024

// fdCache keeps descriptors of recently read small object files. The tier
// calls drop after it renames or removes a file, so a cached descriptor
// always names the file now under the object's path (files are never
// written in place). A descriptor opened before a drop of the same path
// must not be cached; the generation, bumped by every drop, tells.
type fdCache struct {
	mu  sync.Mutex
	m   map[uint64]*openFile
	gen atomic.Uint64
}

// openFile is a cached descriptor; refs counts the cache's reference and
// one per reader, and the descriptor is closed when it reaches zero.
type openFile struct {
	fd   int
	refs atomic.Int32
}

func newFDCache() *fdCache { return &fdCache{m: make(map[uint64]*openFile, fdCacheSize)} }

func (f *openFile) release() {
	if f.refs.Add(-1) == 0 {
		_ = syscall.Close(f.fd)
	}
}

// generation is read before opening a file that may be cached.
func (c *fdCache) generation() uint64 { return c.gen.Load() }

// get returns the cached descriptor of h with a reference the caller must
// release, or nil.
func (c *fdCache) get(h uint64) *openFile {
	c.mu.Lock()
	f := c.m[h]
	if f != nil {
		f.refs.Add(1)
	}
	c.mu.Unlock()
	return f
}

// add takes fd, opened at generation gen, and caches it or closes it.
func (c *fdCache) add(h uint64, fd int, gen uint64) {
	c.mu.Lock()
	if c.m == nil || c.gen.Load() != gen || c.m[h] != nil {
		c.mu.Unlock()
		_ = syscall.Close(fd)
		return
	}
	var victim *openFile
	if len(c.m) >= fdCacheSize {
		for k, v := range c.m { // an arbitrary entry: map order is random enough
			delete(c.m, k)
			victim = v
			break
		}
	}
	f := &openFile{fd: fd}
	f.refs.Store(1)
	c.m[h] = f
	c.mu.Unlock()
	if victim != nil {
		victim.release()
	}
}

// drop forgets h's descriptor; call it after renaming or removing h's file.
func (c *fdCache) drop(h uint64) {
	c.mu.Lock()
	c.gen.Add(1)
	f := c.m[h]
	delete(c.m, h)
	c.mu.Unlock()
	if f != nil {
		f.release()
	}
}

// close releases every cached descriptor; later adds close theirs.
func (c *fdCache) close() {
	c.mu.Lock()
	m := c.m
	c.m = nil
	c.gen.Add(1)
	c.mu.Unlock()
	for _, f := range m {
		f.release()
	}
}
