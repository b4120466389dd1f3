package statesync

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// ErrQueueFull is returned by a write made while NATS is unreachable and the
// on-disk queue of own deltas is full. The write is still applied on this
// node and spreads by anti-entropy once NATS returns; only its copy in the
// durable log is missing.
var ErrQueueFull = errors.New("statesync: degraded-mode queue is full")

// queue is the bounded, persisted FIFO of this node's own deltas that could
// not be published. One file per delta, named by a sequence number, written
// via rename so that a crash leaves either the whole delta or nothing.
type queue struct {
	dir      string
	maxItems int
	maxBytes int64

	mu    sync.Mutex
	items []queued // oldest first
	bytes int64
	next  uint64
}

type queued struct {
	seq  uint64
	size int64
}

func openQueue(dir string, maxItems int, maxBytes int64) (*queue, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("statesync: create queue directory %s: %w", dir, err)
	}
	q := &queue{dir: dir, maxItems: maxItems, maxBytes: maxBytes, next: 1}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("statesync: read queue directory %s: %w", dir, err)
	}
	for _, e := range ents {
		name := e.Name()
		if strings.HasSuffix(name, ".tmp") {
			_ = os.Remove(filepath.Join(dir, name)) // a write interrupted by a crash
			continue
		}
		seq, err := strconv.ParseUint(strings.TrimSuffix(name, ".delta"), 10, 64)
		if err != nil || !strings.HasSuffix(name, ".delta") {
			continue
		}
		info, err := e.Info()
		if err != nil {
			return nil, fmt.Errorf("statesync: stat queued delta %s: %w", name, err)
		}
		q.items = append(q.items, queued{seq: seq, size: info.Size()})
		q.bytes += info.Size()
		if seq >= q.next {
			q.next = seq + 1
		}
	}
	sort.Slice(q.items, func(i, j int) bool { return q.items[i].seq < q.items[j].seq })
	return q, nil
}

func (q *queue) path(seq uint64) string {
	return filepath.Join(q.dir, fmt.Sprintf("%020d.delta", seq))
}

// push appends data, or returns ErrQueueFull.
func (q *queue) push(data []byte) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) >= q.maxItems || q.bytes+int64(len(data)) > q.maxBytes {
		return fmt.Errorf("%w (%d deltas, %d bytes; limits %d deltas, %d bytes)", ErrQueueFull, len(q.items), q.bytes, q.maxItems, q.maxBytes)
	}
	seq := q.next
	p := q.path(seq)
	if err := writeFileAtomic(p, data); err != nil {
		return fmt.Errorf("statesync: queue delta: %w", err)
	}
	q.next++
	q.items = append(q.items, queued{seq: seq, size: int64(len(data))})
	q.bytes += int64(len(data))
	return nil
}

// peek returns the oldest delta, or ok=false when empty.
func (q *queue) peek() (seq uint64, data []byte, ok bool, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		return 0, nil, false, nil
	}
	seq = q.items[0].seq
	data, err = os.ReadFile(q.path(seq))
	if err != nil {
		return seq, nil, false, fmt.Errorf("statesync: read queued delta %d: %w", seq, err)
	}
	return seq, data, true, nil
}

// pop removes the delta seq (the oldest) after it was published.
func (q *queue) pop(seq uint64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 || q.items[0].seq != seq {
		return nil
	}
	if err := os.Remove(q.path(seq)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("statesync: remove published delta %d: %w", seq, err)
	}
	q.bytes -= q.items[0].size
	q.items = q.items[1:]
	return nil
}

func (q *queue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}

// writeFileAtomic writes data to path via a synced temporary file and rename.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
