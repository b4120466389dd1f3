package native

import (
	"sync/atomic"
	"testing"
	"time"
)

// TestWatchdogSleepsWhileIdle: the deadline watchdog stops ticking once no
// call is armed, wakes for a call that is armed while it sleeps, still
// marks that call expired after its deadline, sleeps again, and stops
// cleanly while asleep.
func TestWatchdogSleepsWhileIdle(t *testing.T) {
	var ticks atomic.Int64
	events := make(chan watchEvent, 1024)
	w := startWatchdog(func(ev watchEvent) {
		if ev == watchTicked {
			ticks.Add(1)
			return
		}
		events <- ev
	})
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			w.close()
		}
	})
	next := func(want watchEvent) {
		t.Helper()
		select {
		case ev := <-events:
			if ev != want {
				t.Fatalf("watchdog event %v, want %v", ev, want)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("no watchdog event %v within 30s (%d ticks so far)", want, ticks.Load())
		}
	}
	next(watchSlept) // nothing armed since it started

	// Asleep: not one tick, however long we look.
	before := ticks.Load()
	time.Sleep(25 * watchTick)
	if n := ticks.Load() - before; n != 0 {
		t.Fatalf("the idle watchdog ticked %d times while asleep", n)
	}

	// A call armed while it sleeps wakes it, and is stopped at its deadline.
	in := &instance{p: &program{e: &Engine{wd: w}}}
	w.add(in)
	in.arm(time.Millisecond)
	next(watchWoke)
	for !in.cc.expired.Load() {
		time.Sleep(time.Millisecond) // bounded by the test's timeout
	}
	if !in.disarm() {
		t.Fatal("disarm after the watchdog expired the call: want expired")
	}
	w.remove(in)
	next(watchSlept)

	w.close()
	stopped = true
	select {
	case <-w.done:
	default:
		t.Fatal("close returned before the watchdog's goroutine ended")
	}
}

// TestWatchdogDeadlineWhileAsleep: a deadline taken while the watchdog
// sleeps counts from the real clock, not from the coarse clock it stopped
// updating.
func TestWatchdogDeadlineWhileAsleep(t *testing.T) {
	slept := make(chan struct{}, 1)
	w := startWatchdog(func(ev watchEvent) {
		if ev == watchSlept {
			select {
			case slept <- struct{}{}:
			default:
			}
		}
	})
	defer w.close()
	<-slept
	time.Sleep(10 * watchTick)
	before := w.clock()
	dl := w.deadline(time.Second)
	if dl < before+int64(time.Second) {
		t.Fatalf("deadline %d is before now %d + 1s: taken from a stale clock", dl, before)
	}
}
