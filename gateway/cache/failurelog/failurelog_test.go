package failurelog_test

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway/cache/failurelog"
	"github.com/meridian-edge/meridian/internal/testutil"
)

// TestWarnRateLimitsPerKind: the first failure of a kind is logged, the
// next ones within the interval are counted, and the first one after it is
// logged with that count; kinds do not hold each other back.
func TestWarnRateLimitsPerKind(t *testing.T) {
	logs := &testutil.SyncBuffer{}
	now := time.Date(2026, 11, 28, 6, 0, 0, 0, time.UTC)
	l := failurelog.New(slog.New(slog.NewTextHandler(logs, nil)), time.Minute, func() time.Time { return now })
	steps := []struct {
		advance time.Duration
		kind    string
		logged  bool
	}{
		{0, "l2/EROFS", true},
		{time.Second, "l2/EROFS", false},
		{time.Second, "l2/EROFS", false},
		{time.Second, "l2/ENOSPC", true}, // another kind
		{time.Second, "l3/other", true},  // another tier
		{time.Minute, "l2/EROFS", true},  // the interval passed: logged, with 2 suppressed
		{time.Second, "l2/EROFS", false},
	}
	for i, s := range steps {
		now = now.Add(s.advance)
		if got := l.Warn(s.kind, "store failed", "kind", s.kind); got != s.logged {
			t.Errorf("step %d (%s): logged %v, want %v", i, s.kind, got, s.logged)
		}
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d lines, want 4:\n%s", len(lines), logs.String())
	}
	for _, l := range lines {
		if !strings.Contains(l, "level=WARN") {
			t.Errorf("not a WARN line: %s", l)
		}
	}
	if !strings.Contains(lines[3], "kind=l2/EROFS") || !strings.Contains(lines[3], "suppressed=2") || !strings.Contains(lines[3], "suppressed_over=1m0s") {
		t.Errorf("line after the interval lacks the suppressed count: %s", lines[3])
	}
	if strings.Contains(lines[0], "suppressed") {
		t.Errorf("first line claims suppressed failures: %s", lines[0])
	}
}

func TestErrorKind(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{&fs.PathError{Op: "open", Path: "/l2/tmp/put-1", Err: syscall.EROFS}, "EROFS"},
		{fmt.Errorf("l2: create temp file: %w", &fs.PathError{Op: "open", Path: "/x", Err: syscall.EACCES}), "EACCES"},
		{&fs.PathError{Op: "write", Path: "/x", Err: syscall.ENOSPC}, "ENOSPC"},
		{errors.New("l3: 503 from S3"), "other"},
	} {
		if got := failurelog.ErrorKind(c.err); got != c.want {
			t.Errorf("ErrorKind(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}
