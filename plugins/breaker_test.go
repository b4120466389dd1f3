package plugins

import (
	"sync/atomic"
	"testing"
	"time"
)

// clock is an injected clock the tests move by hand.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }
func newTestBreaker(c *clock) *breaker   { return newBreaker(5, 10*time.Second, c.now) }
func startClock() *clock                 { return &clock{t: time.Unix(1_700_000_000, 0)} }

// call records an outcome and returns the change it made, if any.
func (b *breaker) call(ok bool) transition { return b.record(ok, 3) }

// A plugin that fails on one request in five (one path an attacker can
// reach) keeps running for everyone, at any request rate.
func TestBreakerIgnoresRequestDependentFailures(t *testing.T) {
	for _, gap := range []time.Duration{0, time.Millisecond, 50 * time.Millisecond, time.Second} {
		c := startClock()
		b := newTestBreaker(c)
		for i := range 200 {
			if !b.allow() {
				t.Fatalf("gap %v: call %d refused: the breaker opened", gap, i)
			}
			if tr := b.call(i%5 != 4); tr.ev != breakerNoChange {
				t.Fatalf("gap %v: call %d changed the breaker: %+v", gap, i, tr)
			}
			c.advance(gap)
		}
	}
}

// Nor does a burst of failures on a plugin that serves many other calls
// in the same window: 15 bad requests in a row among 100 good ones.
func TestBreakerIgnoresABurstAmongSuccesses(t *testing.T) {
	c := startClock()
	b := newTestBreaker(c)
	for range 100 {
		b.call(true)
		c.advance(10 * time.Millisecond)
	}
	for i := range 15 {
		if tr := b.call(false); tr.ev != breakerNoChange {
			t.Fatalf("failure %d of a burst opened the breaker: %+v", i, tr)
		}
	}
	if !b.allow() {
		t.Fatal("the breaker refuses calls after a burst of 15 failures among 100 successes")
	}
}

// A plugin that fails every call from its first request trips after
// threshold calls, and the transition says why.
func TestBreakerOpensFastWhenEveryCallFails(t *testing.T) {
	c := startClock()
	b := newTestBreaker(c)
	for i := range 4 {
		if tr := b.call(false); tr.ev != breakerNoChange {
			t.Fatalf("opened after %d failures, want 5", i+1)
		}
		c.advance(time.Millisecond)
	}
	tr := b.call(false)
	if tr.ev != breakerOpened || !tr.noSuccess || tr.fails != 5 || tr.cooldown != 10*time.Second {
		t.Fatalf("5th failure: want opened on the quick path, got %+v", tr)
	}
	if got, want := tr.why(), "5 calls in the last 10s failed and none succeeded"; got != want {
		t.Fatalf("why = %q, want %q", got, want)
	}
	if b.allow() || !b.open() {
		t.Fatal("an open breaker let a call through")
	}
}

// A plugin that worked and then fails nearly always (9 calls in 10) opens
// once the window holds enough calls, not after the successes age out.
func TestBreakerOpensOnFailureRatio(t *testing.T) {
	c := startClock()
	b := newTestBreaker(c)
	for range 30 {
		b.call(true)
		c.advance(100 * time.Millisecond)
	}
	opened := -1
	for i := range 100 {
		if !b.allow() {
			break
		}
		if tr := b.call(i%10 == 9); tr.ev == breakerOpened {
			if tr.noSuccess || tr.fails*2 < tr.calls || tr.calls < breakerMinCalls {
				t.Fatalf("opened for the wrong reason: %+v (%s)", tr, tr.why())
			}
			opened = i
			break
		}
		c.advance(50 * time.Millisecond)
	}
	// 30 successes in the last 3 s, then failures: at least as many
	// failures as successes are needed, so about 30 to 40 calls.
	if opened < 0 || opened > 45 {
		t.Fatalf("failing 9 calls in 10 after 30 successes: opened after %d calls, want at most 45", opened+1)
	}
}

// Failures older than the window are forgotten.
func TestBreakerForgetsOldFailures(t *testing.T) {
	c := startClock()
	b := newTestBreaker(c)
	for range 4 {
		b.call(false)
	}
	c.advance(11 * time.Second)
	mustOpenOnFifthFailure(t, b, "11 s after 4 others")
}

// mustOpenOnFifthFailure fails t unless b, counting no recent failure,
// takes 4 failures without a change and opens on the 5th (the test
// breaker's threshold). when says what came before, for the message.
func mustOpenOnFifthFailure(t *testing.T, b *breaker, when string) {
	t.Helper()
	for i := range 4 {
		if tr := b.call(false); tr.ev != breakerNoChange {
			t.Fatalf("failure %d, %s, changed the breaker: %+v", i+1, when, tr)
		}
	}
	if tr := b.call(false); tr.ev != breakerOpened {
		t.Fatalf("5th failure, %s: want opened, got %+v", when, tr)
	}
}

// After the cooldown one trial call runs; success closes the breaker with
// a fresh window, failure keeps it open for another cooldown.
func TestBreakerHalfOpenTrial(t *testing.T) {
	c := startClock()
	b := newTestBreaker(c)
	for range 5 {
		b.call(false)
	}
	if b.allow() {
		t.Fatal("open breaker allowed a call")
	}
	c.advance(9 * time.Second)
	if b.allow() {
		t.Fatal("allowed a call before the cooldown ended")
	}
	c.advance(2 * time.Second)
	if !b.allow() {
		t.Fatal("no trial call after the cooldown")
	}
	if b.allow() || !b.open() {
		t.Fatal("a second call ran while the trial is in flight")
	}
	if tr := b.call(false); tr.ev != breakerReopened || tr.cooldown != 10*time.Second {
		t.Fatalf("failed trial: want reopened, got %+v", tr)
	}
	c.advance(5 * time.Second)
	if b.allow() {
		t.Fatal("allowed a call 5 s after a failed trial")
	}
	c.advance(6 * time.Second)
	if !b.allow() {
		t.Fatal("no trial call after the second cooldown")
	}
	if tr := b.call(true); tr.ev != breakerRecovered {
		t.Fatalf("successful trial: want recovered, got %+v", tr)
	}
	if !b.allow() || !b.allow() || b.open() {
		t.Fatal("closed breaker refuses calls")
	}
	// The failures that opened it are forgotten: it takes 5 new ones.
	mustOpenOnFifthFailure(t, b, "after the trial closed it")
}

// A success of a call allowed before the breaker opened does not close it:
// only the trial call decides.
func TestBreakerIgnoresLateSuccessWhileOpen(t *testing.T) {
	c := startClock()
	b := newTestBreaker(c)
	for range 5 {
		b.call(false)
	}
	if tr := b.call(true); tr.ev != breakerNoChange || b.allow() {
		t.Fatalf("a late success changed an open breaker: %+v", tr)
	}
}

// reset (a new version activated) closes the breaker and forgets the window.
func TestBreakerReset(t *testing.T) {
	c := startClock()
	b := newTestBreaker(c)
	for range 5 {
		b.call(false)
	}
	b.reset()
	if !b.allow() || b.open() {
		t.Fatal("reset breaker refuses calls")
	}
	for i := range 4 {
		if tr := b.call(false); tr.ev != breakerNoChange {
			t.Fatalf("failure %d after reset opened it", i+1)
		}
	}
}

// BenchmarkBreakerSuccess is the healthy path: allow and record a success.
//
//	go test -run '^$' -bench BreakerSuccess ./plugins/
func BenchmarkBreakerSuccess(b *testing.B) {
	br := newBreaker(5, 10*time.Second, time.Now)
	var next atomic.Uint32
	b.RunParallel(func(pb *testing.PB) {
		shard := uint8(next.Add(1))
		for pb.Next() {
			if br.allow() {
				br.success(shard)
			}
		}
	})
}
