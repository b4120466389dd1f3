package gateway

import (
	"math"
	"sync"
	"time"
)

// loadTracker summarises the requests of one beacon interval: rate, error
// share and latency percentiles (from log-spaced buckets, exact enough for
// routing decisions and cheap on the request path).
type loadTracker struct {
	mu      sync.Mutex
	start   time.Time
	count   uint64
	errors  uint64
	buckets [latencyBuckets]uint64
}

// Buckets are 2^(i/4) microseconds wide steps: 1µs .. ~70s.
const latencyBuckets = 104

func bucketOf(d time.Duration) int {
	us := float64(d) / float64(time.Microsecond)
	if us <= 1 {
		return 0
	}
	return min(int(4*math.Log2(us)), latencyBuckets-1)
}

func bucketUpper(i int) time.Duration {
	return time.Duration(math.Exp2(float64(i+1)/4) * float64(time.Microsecond))
}

func newLoadTracker(now time.Time) *loadTracker { return &loadTracker{start: now} }

func (t *loadTracker) observe(status int, d time.Duration) {
	b := bucketOf(d)
	t.mu.Lock()
	t.count++
	if status >= 500 {
		t.errors++
	}
	t.buckets[b]++
	t.mu.Unlock()
}

// loadSnapshot is one interval's summary.
type loadSnapshot struct {
	RPS       float64
	ErrorRate float64
	P50, P99  time.Duration
}

// snapshot summarises the interval since the last snapshot and starts anew.
func (t *loadTracker) snapshot(now time.Time) loadSnapshot {
	t.mu.Lock()
	count, errs, buckets, start := t.count, t.errors, t.buckets, t.start
	t.count, t.errors, t.buckets, t.start = 0, 0, [latencyBuckets]uint64{}, now
	t.mu.Unlock()
	var s loadSnapshot
	if secs := now.Sub(start).Seconds(); secs > 0 {
		s.RPS = float64(count) / secs
	}
	if count == 0 {
		return s
	}
	s.ErrorRate = float64(errs) / float64(count)
	var seen uint64
	p50, p99 := (count+1)/2, (count*99+99)/100
	for i, n := range buckets {
		seen += n
		if s.P50 == 0 && seen >= p50 {
			s.P50 = bucketUpper(i)
		}
		if seen >= p99 {
			s.P99 = bucketUpper(i)
			break
		}
	}
	return s
}
