package realip

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// newRejected registers (or, when another listener of the PoP did already,
// reuses) the refused-connections counter and returns one child per reason,
// each present from the start so that a dashboard sees zeros, not gaps.
func newRejected(reg prometheus.Registerer, pop string) (map[string]prometheus.Counter, error) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meridian_proxy_protocol_rejected_total",
		Help: "Connections closed by the PROXY protocol check, by reason: untrusted (a header from a peer outside trusted), missing (required and none), timeout, malformed.",
	}, []string{"pop", "reason"})
	if reg != nil {
		if err := reg.Register(vec); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, fmt.Errorf("realip: register metrics: %w", err)
			}
			existing, ok := are.ExistingCollector.(*prometheus.CounterVec)
			if !ok {
				return nil, fmt.Errorf("realip: register metrics: %w", err)
			}
			vec = existing
		}
	}
	out := make(map[string]prometheus.Counter, len(reasons))
	for _, r := range reasons {
		out[r] = vec.WithLabelValues(pop, r)
	}
	return out, nil
}

// logLimiter lets one log line per key through each interval and counts the
// ones it held back.
type logLimiter struct {
	every time.Duration
	mu    sync.Mutex
	last  map[string]time.Time
	held  map[string]int
}

func newLogLimiter(every time.Duration) *logLimiter {
	return &logLimiter{every: every, last: map[string]time.Time{}, held: map[string]int{}}
}

// allow reports whether a line for key may be logged now and, if so, how
// many were held back since the last one.
func (l *logLimiter) allow(key string, now time.Time) (int, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if last, ok := l.last[key]; ok && now.Sub(last) < l.every {
		l.held[key]++
		return 0, false
	}
	n := l.held[key]
	l.last[key], l.held[key] = now, 0
	return n, true
}
