package l2

import (
	"io"
	"sync"
	"sync/atomic"

	"github.com/meridian-edge/meridian/gateway/cache/tier"
)

const (
	// fdCacheSize is how many object files are kept open (small ones) or
	// mapped (large ones). A hit of a small object then costs one pread
	// instead of open, pread and close (the path walk of open is the
	// dearest part of a small hit after the body's checksum); nginx's
	// open_file_cache does the same.
	fdCacheSize = 1024
	// mapCacheBytes bounds the bytes of the files kept mapped (small,
	// mid-size and large; maxKeptMap bounds one file). A kept
	// mapping saves a hit of a large object open, fstat, mmap, a page
	// fault per 16 pages and munmap (whose TLB shootdown alone measured
	// 25 µs per 1 MiB hit). Its descriptor is kept with it, for sendfile
	// (tier.FileWriter). Every hit still verifies every block it serves.
	// The pages are the page cache's, so this costs address space and page
	// tables (2 MiB per GiB), not memory.
	mapCacheBytes = 4 << 30
	maxKeptMap    = mapCacheBytes / 16
)

// fdCache keeps descriptors of recently read small object files and
// mappings of large ones. The tier calls drop after it renames or removes a
// file, so a cached entry always holds the file now under the object's path
// (files are never written in place). An entry opened before a drop of the
// same path must not be cached; the generation, bumped by every drop, tells.
//
// A hit only looks an entry up and takes a reference (an atomic add), under
// the read lock, so concurrent hits do not wait for each other; an entry in
// the map always holds the cache's reference, so a reference taken there
// is never the last one's resurrection.
type fdCache struct {
	mu     sync.RWMutex
	m      map[uint64]*openFile
	mapped int64 // bytes of the cached mappings
	gen    atomic.Uint64
}

// openFile is a cached descriptor (fd, or -1), with the file's mapping
// (m) once it is mapped; refs counts the cache's reference and one per reader, and the
// descriptor is closed or the mapping removed when it reaches zero.
type openFile struct {
	fd   int
	m    []byte
	refs atomic.Int32
	// head is what the first verification of the mapping found, for the
	// hits after it (see Tier.fromMapping); nil until then.
	head atomic.Pointer[mappedHead]
}

// mappedHead is a mapped file's verified header, key, block table and
// decoded meta, copied out of the mapping. The file is never written in
// place, so they stay the file's for as long as the mapping lives; a hit
// still verifies every body byte it serves, against this table.
type mappedHead struct {
	p    parsed // key and table are private copies; meta is not kept
	meta *tier.Meta
}

// fileWriter returns w as a tier.FileWriter when f (nil: not mapped) has a
// descriptor to send ranges of, and w can send them; else nil.
func (f *openFile) fileWriter(w io.Writer) tier.FileWriter {
	if f == nil || f.fd < 0 {
		return nil
	}
	fw, _ := w.(tier.FileWriter)
	return fw
}

func newFDCache() *fdCache { return &fdCache{m: make(map[uint64]*openFile, fdCacheSize)} }

func (f *openFile) release() {
	if f.refs.Add(-1) == 0 {
		if f.m != nil {
			unmap(f.m)
		}
		if f.fd >= 0 {
			closeFD(f.fd)
		}
	}
}

// generation is read before opening a file that may be cached.
func (c *fdCache) generation() uint64 { return c.gen.Load() }

// get returns the cached entry of h with a reference the caller must
// release, or nil.
func (c *fdCache) get(h uint64) *openFile {
	c.mu.RLock()
	f := c.m[h]
	if f != nil {
		f.refs.Add(1)
	}
	c.mu.RUnlock()
	return f
}

// add takes fd, opened at generation gen, and caches it or closes it.
// Where descriptors are not kept (keepDescriptors), it closes it.
func (c *fdCache) add(h uint64, fd int, gen uint64) {
	if !keepDescriptors {
		closeFD(fd)
		return
	}
	f := &openFile{fd: fd}
	f.refs.Store(1)
	if !c.put(h, f, gen) {
		f.release()
	}
}

// addMap takes descriptor fd and mapping m of h's file, made at generation
// gen, and returns them as an entry with one reference for the caller; the
// cache keeps another when it can.
func (c *fdCache) addMap(h uint64, fd int, m []byte, gen uint64) *openFile {
	f := &openFile{fd: fd, m: m}
	f.refs.Store(2)
	if int64(len(m)) > maxKeptMap || !c.put(h, f, gen) {
		f.refs.Store(1)
	}
	return f
}

// upgrade maps the small file of old, an entry of h holding a descriptor,
// and returns the mapping as an entry with one reference for the caller;
// the mapping replaces old in the cache when old is still there. It
// returns nil when the file cannot be mapped.
func (c *fdCache) upgrade(h uint64, old *openFile) *openFile {
	var m []byte
	if size, err := fileSize(old.fd); err != nil || size <= 0 || size > maxKeptMap || !c.roomFor(size) ||
		!mapFile(old.fd, size, &m) {
		// With no room for the mapping it would be made for one hit and
		// dropped: the small file stays on pread.
		return nil
	}
	// The mapping gets a descriptor of its own (for sendfile): old's may
	// still be in a reader's hands, and closes when they let it go.
	// -1 when it cannot be had: mapped, no descriptor; hits write from
	// the mapping.
	f := &openFile{fd: dupFD(old.fd), m: m}
	f.refs.Store(1)
	c.mu.Lock()
	if c.m != nil && c.m[h] == old && c.mapped+int64(len(m)) <= mapCacheBytes {
		c.m[h] = f
		c.mapped += int64(len(m))
		f.refs.Store(2)
	} else {
		old = nil
	}
	c.mu.Unlock()
	if old != nil {
		old.release() // the cache's reference
	}
	return f
}

// roomFor reports whether a mapping of size bytes fits the mapping budget
// now (put may still evict to make room for other entries).
func (c *fdCache) roomFor(size int64) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.mapped+size <= mapCacheBytes
}

// put caches f (holding one reference for the cache) unless a drop
// happened since gen or h is cached already; it evicts arbitrary entries
// to stay within fdCacheSize and mapCacheBytes.
func (c *fdCache) put(h uint64, f *openFile, gen uint64) bool {
	var victims []*openFile
	c.mu.Lock()
	if c.m == nil || c.gen.Load() != gen || c.m[h] != nil {
		c.mu.Unlock()
		return false
	}
	for k, v := range c.m { // map order is random enough
		if len(c.m) < fdCacheSize && c.mapped+int64(len(f.m)) <= mapCacheBytes {
			break
		}
		delete(c.m, k)
		c.mapped -= int64(len(v.m))
		victims = append(victims, v)
	}
	c.m[h] = f
	c.mapped += int64(len(f.m))
	c.mu.Unlock()
	for _, v := range victims {
		v.release()
	}
	return true
}

// drop forgets h's entry; call it after renaming or removing h's file.
func (c *fdCache) drop(h uint64) {
	c.mu.Lock()
	c.gen.Add(1)
	f := c.m[h]
	if f != nil {
		delete(c.m, h)
		c.mapped -= int64(len(f.m))
	}
	c.mu.Unlock()
	if f != nil {
		f.release()
	}
}

// close releases every cached entry; later adds close theirs.
func (c *fdCache) close() {
	c.mu.Lock()
	m := c.m
	c.m = nil
	c.mapped = 0
	c.gen.Add(1)
	c.mu.Unlock()
	for _, f := range m {
		f.release()
	}
}
