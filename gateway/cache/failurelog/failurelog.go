// Package failurelog reports repeated failures of the cache's storage
// without flooding the log: a full or read-only disk makes every store
// fail, and one WARN line per store would bury everything else.
//
// It owns the rate limit only (the first failure of a kind, then at most one
// line per interval with the count of those left out). It must not decide
// what is a failure or what to do about one: its callers (the tiers, the
// tier composition, the cache) do.
package failurelog

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"syscall"
	"time"
)

// DefaultEvery is the interval Log uses when given none.
const DefaultEvery = time.Minute

// Log writes WARN lines for failures, at most one per interval and kind.
// The zero value is not usable; create one with New. It is safe for
// concurrent use.
type Log struct {
	log   *slog.Logger
	every time.Duration
	now   func() time.Time

	mu    sync.Mutex
	kinds map[string]*kindState
}

type kindState struct {
	last       time.Time // when the last line was written
	suppressed int64     // failures since then that wrote none
}

// New returns a Log writing to log (nil discards) at most one line per kind
// every interval (0: DefaultEvery). now is the clock (nil: time.Now).
func New(log *slog.Logger, every time.Duration, now func() time.Time) *Log {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if every <= 0 {
		every = DefaultEvery
	}
	if now == nil {
		now = time.Now
	}
	return &Log{log: log, every: every, now: now, kinds: map[string]*kindState{}}
}

// Warn reports one failure of kind (a bounded key such as "l2/EROFS": the
// tier and ErrorKind). The first one of a kind is logged at WARN with msg
// and attrs; later ones only when the interval has passed since the last
// line, with "suppressed" telling how many were left out meanwhile. It
// reports whether it wrote a line.
func (l *Log) Warn(kind, msg string, attrs ...any) bool {
	now := l.now()
	l.mu.Lock()
	st := l.kinds[kind]
	if st == nil {
		if len(l.kinds) >= maxKinds {
			// Kinds are meant to be few; if a caller breaks that, forget
			// the old ones rather than grow without bound.
			clear(l.kinds)
		}
		st = &kindState{}
		l.kinds[kind] = st
	} else if now.Sub(st.last) < l.every {
		st.suppressed++
		l.mu.Unlock()
		return false
	}
	suppressed := st.suppressed
	st.last, st.suppressed = now, 0
	l.mu.Unlock()
	if suppressed > 0 {
		attrs = append(attrs, "suppressed", suppressed, "suppressed_over", l.every.String())
	}
	l.log.Log(context.Background(), slog.LevelWarn, msg, attrs...)
	return true
}

// maxKinds bounds the kinds remembered.
const maxKinds = 1024

// ErrorKind names the class of a storage error for Warn's kind: the errno
// for the usual file system failures (EROFS, EACCES, EPERM, ENOSPC, EDQUOT,
// EFBIG, EIO, EMFILE, ENFILE), else "other", so that a read-only disk and
// a full one are reported apart but each only once per interval.
func ErrorKind(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		switch errno {
		case syscall.EROFS:
			return "EROFS"
		case syscall.EACCES:
			return "EACCES"
		case syscall.EPERM:
			return "EPERM"
		case syscall.ENOSPC:
			return "ENOSPC"
		case syscall.EDQUOT:
			return "EDQUOT"
		case syscall.EFBIG:
			return "EFBIG"
		case syscall.EIO:
			return "EIO"
		case syscall.EMFILE:
			return "EMFILE"
		case syscall.ENFILE:
			return "ENFILE"
		}
	}
	return "other"
}
