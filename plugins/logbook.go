package plugins

import (
	"log/slog"
	"sync"
	"time"
)

// LogLine is one line a plugin logged (or the host logged about a plugin's
// failure), kept per site for the admin API.
type LogLine struct {
	Time    time.Time
	Site    string
	Plugin  string
	Version int
	Level   slog.Level
	Msg     string
}

// MaxLogLine caps one kept line.
const MaxLogLine = 1024

// logBook keeps the last n lines per site in a ring.
type logBook struct {
	n     int
	mu    sync.Mutex
	sites map[string]*ring
}

type ring struct {
	buf  []LogLine
	next int
	full bool
}

func newLogBook(n int) *logBook { return &logBook{n: n, sites: map[string]*ring{}} }

func (b *logBook) add(l LogLine) {
	if len(l.Msg) > MaxLogLine {
		l.Msg = l.Msg[:MaxLogLine] + "…"
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.sites[l.Site]
	if r == nil {
		r = &ring{buf: make([]LogLine, b.n)}
		b.sites[l.Site] = r
	}
	r.buf[r.next] = l
	r.next = (r.next + 1) % b.n
	if r.next == 0 {
		r.full = true
	}
}

func (b *logBook) lines(site string) []LogLine {
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.sites[site]
	if r == nil {
		return nil
	}
	if !r.full {
		return append([]LogLine(nil), r.buf[:r.next]...)
	}
	return append(append([]LogLine(nil), r.buf[r.next:]...), r.buf[:r.next]...)
}
