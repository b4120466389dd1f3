//go:build unix

package l2

import (
	"errors"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// The tier's fast read paths are unix-only: they keep raw descriptors open
// across hits (fdcache.go) and map files read-only (mmap), which relies on
// unix file semantics: a file renamed over or unlinked while open or mapped
// stays readable through the old descriptor, so replacing or evicting an
// object never waits for its readers. Windows refuses to rename over or
// remove a file another handle holds unless every opener asked for
// FILE_SHARE_DELETE, so there the tier opens each file for one Get only and
// reads it with plain positioned reads (sys_windows.go).

// keepDescriptors: descriptors and mappings are kept across hits (fdCache).
const keepDescriptors = true

// mapFile maps size bytes of fd read-only into *m and reports whether it
// could.
func mapFile(fd int, size int64, m *[]byte) bool {
	b, err := syscall.Mmap(fd, 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return false
	}
	*m = b
	return true
}

// unmap removes a mapping made by mapFile.
func unmap(m []byte) { _ = syscall.Munmap(m) }

// openRead opens path read-only as a raw descriptor (no os.File, so no
// poller registration attempt on the hit path).
func openRead(path string) (int, error) {
	for {
		fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != syscall.EINTR {
			return fd, err
		}
	}
}

// openShared opens path for reading as an *os.File, for the tier's reads
// off the hit path (UpdateMeta, Scan).
func openShared(path string) (*os.File, error) { return os.Open(path) }

// closeFD closes a descriptor from openRead or dupFD.
func closeFD(fd int) { _ = syscall.Close(fd) }

// fileSize returns the size of fd's file.
func fileSize(fd int) (int64, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return 0, err
	}
	return st.Size, nil
}

// dupFD returns a new close-on-exec descriptor of fd's file, or -1.
func dupFD(fd int) int {
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1
	}
	return nfd
}

// pread reads up to len(b) bytes at off, until b is full or the file ends.
func pread(fd int, b []byte, off int64) (int, error) {
	n := 0
	for n < len(b) {
		k, err := syscall.Pread(fd, b[n:], off+int64(n))
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		if k == 0 {
			break
		}
		n += k
	}
	return n, nil
}

// isDiskFull reports whether err means the disk (or the process's file
// size limit) has no room for the write.
func isDiskFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EFBIG)
}
