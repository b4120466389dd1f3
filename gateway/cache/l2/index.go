package l2

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
)

// The index (hash -> size, in eviction order) survives restarts as a
// snapshot plus an append-only journal:
//
//	index.snap    "MRIX" | version | count u64 | count x (hash u64, size u64, queue u8, freq u8) | crc32c
//	index.log     records (op u8, hash u64, size u64, crc32c u32); a torn tail is ignored
//	index.log.old the journal being folded into a new snapshot (replayed first)
//
// Replaying a journal onto a snapshot that already contains its effects is
// harmless: records are "this hash now has this size" or "this hash is gone",
// applied in order. The index is advisory: the object files are
// self-verifying, so an index entry without a file is dropped on the first
// miss, and files missing from the index (after a crash between rename and
// journal append) are found by the reconcile walk that runs after an
// unclean shutdown.
const (
	snapName    = "index.snap"
	logName     = "index.log"
	oldLogName  = "index.log.old"
	dirtyName   = "dirty"
	snapMagic   = "MRIX"
	snapVersion = 1
	snapRecSize = 18
	logRecSize  = 21
	opAdd       = 1
	opDel       = 2
)

type snapRec struct {
	hash  uint64
	size  int64
	queue uint8
	freq  uint8
}

// writeSnapshot writes recs to dir/index.snap atomically (temp + fsync + rename).
func writeSnapshot(dir string, recs []snapRec) error {
	tmp, err := os.CreateTemp(dir, "index.snap.*")
	if err != nil {
		return fmt.Errorf("l2: write index snapshot: %w", err)
	}
	defer os.Remove(tmp.Name())
	crc := crc32.New(castagnoli)
	w := bufio.NewWriterSize(io.MultiWriter(tmp, crc), 1<<20)
	var hdr [13]byte
	copy(hdr[:], snapMagic)
	hdr[4] = snapVersion
	binary.LittleEndian.PutUint64(hdr[5:], uint64(len(recs)))
	_, _ = w.Write(hdr[:])
	var b [snapRecSize]byte
	for _, r := range recs {
		binary.LittleEndian.PutUint64(b[0:], r.hash)
		binary.LittleEndian.PutUint64(b[8:], uint64(r.size))
		b[16], b[17] = r.queue, r.freq
		_, _ = w.Write(b[:])
	}
	if err := w.Flush(); err != nil {
		tmp.Close()
		return fmt.Errorf("l2: write index snapshot: %w", err)
	}
	var sum [4]byte
	binary.LittleEndian.PutUint32(sum[:], crc.Sum32())
	if _, err := tmp.Write(sum[:]); err != nil {
		tmp.Close()
		return fmt.Errorf("l2: write index snapshot: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("l2: sync index snapshot: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("l2: close index snapshot: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, snapName)); err != nil {
		return fmt.Errorf("l2: install index snapshot: %w", err)
	}
	return nil
}

// errNoSnapshot: the directory has no index snapshot (new, or lost).
var errNoSnapshot = errors.New("l2: no index snapshot")

// readSnapshot returns the snapshot's records; a missing file is
// errNoSnapshot and a damaged one another error (the caller then rebuilds
// from the files).
func readSnapshot(dir string) ([]snapRec, error) {
	b, err := os.ReadFile(filepath.Join(dir, snapName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, errNoSnapshot
	}
	if err != nil {
		return nil, fmt.Errorf("l2: read index snapshot: %w", err)
	}
	if len(b) < 17 || string(b[:4]) != snapMagic || b[4] != snapVersion {
		return nil, errors.New("l2: index snapshot has a bad header")
	}
	body, sum := b[:len(b)-4], binary.LittleEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return nil, errors.New("l2: index snapshot checksum mismatch")
	}
	n := binary.LittleEndian.Uint64(b[5:])
	recs := body[13:]
	if uint64(len(recs)) != n*snapRecSize {
		return nil, errors.New("l2: index snapshot length does not match its count")
	}
	out := make([]snapRec, n)
	for i := range out {
		r := recs[i*snapRecSize:]
		out[i] = snapRec{
			hash:  binary.LittleEndian.Uint64(r),
			size:  int64(binary.LittleEndian.Uint64(r[8:])),
			queue: r[16], freq: r[17],
		}
	}
	return out, nil
}

// replayLog applies the journal at path; it stops at the first torn or
// damaged record (the tail of a journal cut by a crash).
func replayLog(path string, fn func(op uint8, hash uint64, size int64)) (int, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("l2: read index journal: %w", err)
	}
	n := 0
	for len(b) >= logRecSize {
		r := b[:logRecSize]
		if crc32.Checksum(r[:17], castagnoli) != binary.LittleEndian.Uint32(r[17:]) {
			break
		}
		fn(r[0], binary.LittleEndian.Uint64(r[1:]), int64(binary.LittleEndian.Uint64(r[9:])))
		b = b[logRecSize:]
		n++
	}
	// An empty journal file still means the process ran: compact anyway.
	return max(n, 1), nil
}

// journal appends index records. Appends are small unbuffered writes: a
// process crash (not a power loss) keeps every record written before it.
type journal struct {
	f       *os.File
	records int64
	buf     [logRecSize]byte
}

func openJournal(dir string) (*journal, error) {
	f, err := os.OpenFile(filepath.Join(dir, logName), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("l2: open index journal: %w", err)
	}
	return &journal{f: f}, nil
}

func (j *journal) append(op uint8, hash uint64, size int64) error {
	b := j.buf[:]
	b[0] = op
	binary.LittleEndian.PutUint64(b[1:], hash)
	binary.LittleEndian.PutUint64(b[9:], uint64(size))
	binary.LittleEndian.PutUint32(b[17:], crc32.Checksum(b[:17], castagnoli))
	_, err := j.f.Write(b)
	j.records++
	return err
}

func (j *journal) close() error { return j.f.Close() }
