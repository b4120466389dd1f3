package plugins

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
)

// OutputTailSize is how many bytes of a call's stdout and stderr an
// instance keeps (the last ones).
const OutputTailSize = 2 << 10

// reasonSize bounds the kept reason line (a Go panic's first line).
const reasonSize = 256

// What the Go runtime prints when its heap cannot grow (runtime/mheap.go,
// then throw in runtime/malloc.go): first the allocation that failed, then
// its fatal error. Other out-of-memory throws (stacks, GC work buffers)
// print only the fatal error.
const (
	goOOMAlloc = "runtime: out of memory: cannot allocate "
	goOOMFatal = "fatal error: out of memory"
)

// Progress through the Go runtime's out-of-memory report.
const (
	oomNone    uint8 = iota
	oomPending       // the reason is goOOMAlloc; goOOMFatal must follow
	oomSeen          // the runtime said it ran out of memory
)

// OutputTail keeps what a plugin writes to stdout and stderr during one
// call, bounded: the last OutputTailSize bytes, and the first line that
// gives a Go runtime's failure reason ("panic: ", "fatal error: "), which a
// long goroutine trace would push out of the tail. Engines give one to
// every instance as its WASI stdout and stderr, Reset it before each call
// and read it when a call fails, so that a site owner sees "panic:
// assignment to entry in nil map" instead of "wasm error: unreachable".
//
// The tail is a ring: a write copies its bytes once, whatever was written
// before, and the ring is put in order only when a failed call reads it.
// Writing never blocks, never fails and never allocates; a call that
// writes nothing costs one load. Not safe for concurrent use (an instance
// runs one call at a time).
type OutputTail struct {
	total   int   // bytes written since Reset
	start   int   // index in tail of the oldest kept byte; 0 until the ring is full
	tailN   int   // bytes kept in tail
	lineN   int   // bytes of the current line in line (at most reasonSize)
	reasonN int   // bytes in reason; 0 until a reason line was seen
	oom     uint8 // oomNone, oomPending or oomSeen
	tail    [OutputTailSize]byte
	line    [reasonSize]byte
	reason  [reasonSize]byte
}

// Reset forgets what was written.
func (t *OutputTail) Reset() {
	if t.total != 0 {
		t.total, t.start, t.tailN, t.lineN, t.reasonN, t.oom = 0, 0, 0, 0, 0, oomNone
	}
}

// Write implements io.Writer: it keeps the tail of what was written and
// the first reason line, and reports all of p written.
func (t *OutputTail) Write(p []byte) (int, error) {
	n := len(p)
	t.total += n
	t.keep(p)
	if t.reasonN == 0 && isReason(p) {
		// Go's runtime prints "panic: " with a write of its own, maybe
		// after output that did not end its line.
		t.lineN = 0
	}
	for t.scanning() && len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			t.lineN += copy(t.line[t.lineN:], p)
			break
		}
		t.lineN += copy(t.line[t.lineN:], p[:i])
		t.endLine()
		p = p[i+1:]
	}
	return n, nil
}

// keep adds p to the ring, dropping the oldest bytes once it is full.
func (t *OutputTail) keep(p []byte) {
	if len(p) >= OutputTailSize {
		t.start, t.tailN = 0, copy(t.tail[:], p[len(p)-OutputTailSize:])
		return
	}
	end := (t.start + t.tailN) % OutputTailSize
	c := copy(t.tail[end:], p)
	copy(t.tail[:], p[c:]) // the part that wraps around, over the oldest bytes
	if t.tailN += len(p); t.tailN > OutputTailSize {
		t.start = (t.start + t.tailN - OutputTailSize) % OutputTailSize
		t.tailN = OutputTailSize
	}
}

// kept returns the kept tail, oldest byte first. It rotates the ring in
// place, which costs one pass over 2 KiB and only happens once a call has
// failed; writes stay a plain copy.
func (t *OutputTail) kept() []byte {
	if t.start != 0 { // then the ring is full
		slices.Reverse(t.tail[:t.start])
		slices.Reverse(t.tail[t.start:])
		slices.Reverse(t.tail[:])
		t.start = 0
	}
	return t.tail[:t.tailN]
}

// scanning reports whether lines are still read: until the reason line,
// and after Go's out-of-memory line until the line that follows it.
func (t *OutputTail) scanning() bool { return t.reasonN == 0 || t.oom == oomPending }

// endLine ends the current line: it keeps it as the reason if it is one,
// and follows the Go runtime's out-of-memory report.
func (t *OutputTail) endLine() {
	l := bytes.TrimSpace(t.line[:t.lineN])
	t.lineN = 0
	switch {
	case t.reasonN == 0:
		if !isReason(l) {
			return
		}
		t.reasonN = copy(t.reason[:], l)
		if string(l) == goOOMFatal {
			t.oom = oomSeen
		} else if bytes.HasPrefix(l, []byte(goOOMAlloc)) {
			t.oom = oomPending
		}
	case t.oom == oomPending:
		t.oom = oomNone
		if string(l) == goOOMFatal {
			t.oom = oomSeen
		}
	}
}

// flushLine ends a line still being read when output stopped without its
// newline.
func (t *OutputTail) flushLine() {
	if t.lineN > 0 && t.scanning() {
		t.endLine()
	}
}

// Written reports whether anything was written since Reset.
func (t *OutputTail) Written() bool { return t.total != 0 }

// Output returns the kept tail as text: at most OutputTailSize bytes (and
// a leading "…" when more was written), trimmed, with control bytes other
// than newline and tab replaced.
func (t *OutputTail) Output() string {
	if t.total == 0 {
		return ""
	}
	s := printable(bytes.TrimSpace(t.kept()))
	if t.total > t.tailN {
		s = "…" + s
	}
	return s
}

// Summary returns the line of the output that says why the call failed,
// on one line and at most reasonSize bytes: the reason of a Go panic or
// fatal error, else the last line written. It is "" when nothing was
// written.
func (t *OutputTail) Summary() string {
	if t.total == 0 {
		return ""
	}
	t.flushLine() // a reason without its newline
	line := t.reason[:t.reasonN]
	if len(line) == 0 {
		trimmed := bytes.TrimRight(t.kept(), " \t\r\n")
		line = bytes.TrimSpace(trimmed[bytes.LastIndexByte(trimmed, '\n')+1:])
		if len(line) > reasonSize {
			line = line[:reasonSize]
		}
	}
	return printable(line)
}

// OutOfMemory reports whether the Go runtime said, in the failure report
// that ended the call, that it ran out of memory: the line "fatal error:
// out of memory" as its first failure line, or right after its
// "runtime: out of memory: cannot allocate N-byte block" line. The words
// elsewhere (a plugin logging "cache out of memory", or logging Go's
// runtime line without the fatal error after it) do not count.
//
// Other guests say nothing: AssemblyScript's allocator and hand-written
// wasm trap with unreachable when memory.grow returns -1, which wazero
// returns silently at the cap; engines tell those apart by how close the
// instance's memory is to its cap.
func (t *OutputTail) OutOfMemory() bool {
	if t.total == 0 {
		return false
	}
	t.flushLine()
	return t.oom == oomSeen
}

// Explain puts what the plugin wrote into the error of a failed call:
// the telling line first (what a site owner reads in the plugin logs),
// then err. It returns err unchanged when the plugin wrote nothing.
func (t *OutputTail) Explain(err error) error {
	sum := t.Summary()
	if sum == "" {
		return err
	}
	if t.total > len(sum)+2 { // more than that line and its newline
		return fmt.Errorf("%s (more in the plugin's output): %w", sum, err)
	}
	return fmt.Errorf("%s: %w", sum, err)
}

// isReason reports whether line starts with a Go runtime's failure reason.
func isReason(line []byte) bool {
	for _, p := range [...]string{"panic: ", "fatal error: ", goOOMAlloc} {
		if bytes.HasPrefix(line, []byte(p)) {
			return true
		}
	}
	return false
}

// printable turns b into valid UTF-8 text without control bytes other than
// newline and tab, which a log line must not carry.
func printable(b []byte) string {
	s := strings.ToValidUTF8(string(b), "?")
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' {
			return r
		}
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}
