//go:build windows

package l2

import (
	"errors"
	"os"

	"golang.org/x/sys/windows"
)

// Windows: no kept descriptors and no mappings (see sys_unix.go for why
// those are unix-only). Every Get opens the file with FILE_SHARE_DELETE, so
// that an install renaming a new version over it, an eviction or a
// corruption removal is not refused while a body is being read, reads it
// with positioned ReadFile calls, and closes it when the body is closed.
// The checks are the same: every byte served is verified on every hit.
// A descriptor here is a file HANDLE held in an int (handles fit in one;
// INVALID_HANDLE_VALUE is -1), so the tier's code is the same on both.

// keepDescriptors: nothing is kept across hits; fdCache closes what it is
// given.
const keepDescriptors = false

// mapFile reports that the file cannot be mapped: Get reads it instead.
func mapFile(int, int64, *[]byte) bool { return false }

// unmap is not called: mapFile never maps.
func unmap([]byte) {}

// openRead opens path for reading, shared for reading, writing and
// deleting (renaming over it included), not inherited by child processes.
func openRead(path string) (int, error) {
	p, err := windows.UTF16PtrFromString(path)
	if err != nil {
		return -1, err
	}
	h, err := windows.CreateFile(p, windows.GENERIC_READ,
		windows.FILE_SHARE_READ|windows.FILE_SHARE_WRITE|windows.FILE_SHARE_DELETE,
		nil, windows.OPEN_EXISTING, windows.FILE_ATTRIBUTE_NORMAL, 0)
	if err != nil {
		return -1, err
	}
	return int(h), nil
}

// openShared opens path for reading as an *os.File, for the tier's reads
// off the hit path (UpdateMeta, Scan), shared as openRead's are: os.Open
// does not share deleting, and UpdateMeta renames over the file it reads.
func openShared(path string) (*os.File, error) {
	fd, err := openRead(path)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// closeFD closes a handle from openRead.
func closeFD(fd int) { _ = windows.CloseHandle(windows.Handle(fd)) }

// fileSize returns the size of fd's file.
func fileSize(fd int) (int64, error) {
	var fi windows.ByHandleFileInformation
	if err := windows.GetFileInformationByHandle(windows.Handle(fd), &fi); err != nil {
		return 0, err
	}
	return int64(fi.FileSizeHigh)<<32 | int64(fi.FileSizeLow), nil
}

// dupFD is not called: nothing is mapped, so nothing is upgraded.
func dupFD(int) int { return -1 }

// pread reads up to len(b) bytes at off, until b is full or the file ends.
// ReadFile with an offset in the OVERLAPPED structure reads at that offset
// on a handle opened for synchronous I/O, as os.File.ReadAt does.
func pread(fd int, b []byte, off int64) (int, error) {
	n := 0
	for n < len(b) {
		chunk := b[n:]
		if len(chunk) > 1<<30 {
			chunk = chunk[:1<<30]
		}
		at := off + int64(n)
		o := windows.Overlapped{Offset: uint32(at), OffsetHigh: uint32(at >> 32)}
		var k uint32
		err := windows.ReadFile(windows.Handle(fd), chunk, &k, &o)
		if errors.Is(err, windows.ERROR_HANDLE_EOF) {
			break
		}
		if err != nil {
			return n, err
		}
		if k == 0 {
			break
		}
		n += int(k)
	}
	return n, nil
}

// isDiskFull reports whether err means the disk has no room for the write.
func isDiskFull(err error) bool {
	return errors.Is(err, windows.ERROR_DISK_FULL) || errors.Is(err, windows.ERROR_HANDLE_DISK_FULL)
}
