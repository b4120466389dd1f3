package health

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/internal/beacon"
)

func TestKeep(t *testing.T) {
	cases := []struct {
		load, capacity, threshold, want float64
	}{
		{50, 0, 0.9, 1},     // unlimited
		{80, 100, 0.9, 1},   // below threshold
		{90, 100, 0.9, 1},   // at threshold: nothing shed yet
		{95, 100, 0.9, 0.5}, // half way to full: half shed
		{99, 100, 0.8, 0.05},
		{100, 100, 0.9, 0}, // full
		{150, 100, 0.9, 0}, // over
		{99, 100, 1, 1},
		{100, 100, 1, 0},
	}
	for _, c := range cases {
		if got := Keep(c.load, c.capacity, c.threshold); got < c.want-1e-9 || got > c.want+1e-9 {
			t.Errorf("Keep(load %g, cap %g, thr %g) = %g, want %g", c.load, c.capacity, c.threshold, got, c.want)
		}
	}
}

func served(tb *Table, id string) bool {
	for _, p := range tb.Snapshot().PoPs {
		if p.ID == id {
			return p.Served
		}
	}
	panic("no pop " + id)
}

// A PoP that reports unhealthy goes out at once; it comes back only after
// Rise healthy beacons in a row, so a flapping PoP stays out.
func TestBeaconHysteresis(t *testing.T) {
	tb := New(Config{PoPs: []PoP{{ID: "a"}}, Rise: 3})
	b := func(ok bool) { tb.Observe(beacon.Beacon{PoP: "a", Healthy: ok}) }
	if !served(tb, "a") {
		t.Fatal("cold start: an unknown PoP must be served")
	}
	b(true)
	b(false)
	if served(tb, "a") {
		t.Fatal("unhealthy beacon: still served")
	}
	for i := 0; i < 10; i++ { // flapping
		b(true)
		b(false)
		if served(tb, "a") {
			t.Fatalf("flap %d: a flapping PoP came back", i)
		}
	}
	b(true)
	b(true)
	if served(tb, "a") {
		t.Fatal("back after 2 good beacons, want 3")
	}
	b(true)
	if !served(tb, "a") {
		t.Fatal("not back after 3 good beacons")
	}
}

// Missed beacons take a PoP out after MissedBeacons intervals, only once a
// feed is attached, and never while the feed is down (stale).
func TestMissedBeaconsAndStale(t *testing.T) {
	var clock atomic.Int64
	now := func() time.Time { return time.Unix(clock.Load(), 0) }
	tick := func(d time.Duration) time.Time { clock.Add(int64(d / time.Second)); return now() }
	tb := New(Config{PoPs: []PoP{{ID: "a"}, {ID: "b"}}, BeaconInterval: time.Second, MissedBeacons: 3, Now: now})
	tb.age(tick(time.Hour))
	if !served(tb, "a") {
		t.Fatal("no feed attached: beacons must not be required")
	}
	up := atomic.Bool{}
	up.Store(true)
	tb.WatchFeed(up.Load)
	tb.Observe(beacon.Beacon{PoP: "a", Healthy: true})
	tb.age(tick(2 * time.Second))
	if !served(tb, "a") || !served(tb, "b") {
		t.Fatal("within the grace period both must be served (cold start)")
	}
	up.Store(false)
	tb.age(tick(time.Minute))
	if s := tb.Snapshot(); !s.Stale || !served(tb, "a") || !served(tb, "b") {
		t.Fatalf("feed down: want the last view kept and marked stale, got stale=%v a=%v b=%v", s.Stale, served(tb, "a"), served(tb, "b"))
	}
	up.Store(true)
	tb.age(tick(time.Minute))
	if s := tb.Snapshot(); s.Stale || !served(tb, "a") {
		t.Fatal("feed back: want live again with a fresh grace period")
	}
	tb.Observe(beacon.Beacon{PoP: "a", Healthy: true})
	tb.age(tick(2 * time.Second))
	if !served(tb, "b") {
		t.Fatal("b must get a full grace period after the feed came back")
	}
	tb.Observe(beacon.Beacon{PoP: "a", Healthy: true})
	tb.age(tick(2 * time.Second))
	if !served(tb, "a") {
		t.Fatal("a beaconed recently, must be served")
	}
	if served(tb, "b") {
		t.Fatal("b sent no beacon for 4 intervals, must be out")
	}
	if st := tb.Snapshot().PoPs[1]; st.Beacon != Down || st.Reason == "" {
		t.Fatalf("b state %+v, want beacon down with a reason", st)
	}
}

// The active probe: Fall failures take a PoP out, Rise successes bring it
// back, and an unreachable endpoint counts as a failure.
func TestProbe(t *testing.T) {
	var status atomic.Int32
	status.Store(200)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(int(status.Load()))
	}))
	defer srv.Close()
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL + "/healthz"
	dead.Close()
	tb := New(Config{PoPs: []PoP{{ID: "a", HealthURL: srv.URL + "/healthz"}, {ID: "gone", HealthURL: deadURL}}, Rise: 2, Fall: 2, ProbeTimeout: time.Second})
	ctx := context.Background()
	tb.probeAll(ctx)
	if st := tb.Snapshot().PoPs[0]; st.Probe != Up || !st.Served {
		t.Fatalf("200: %+v", st)
	}
	if st := tb.Snapshot().PoPs[1]; st.Probe != Unknown || !st.Served {
		t.Fatalf("one failure is not enough to go down: %+v", st)
	}
	status.Store(503)
	tb.probeAll(ctx)
	if !served(tb, "a") {
		t.Fatal("out after one failure, want Fall=2")
	}
	tb.probeAll(ctx)
	if served(tb, "a") || served(tb, "gone") {
		t.Fatal("two failures: both must be out")
	}
	status.Store(200)
	tb.probeAll(ctx)
	if served(tb, "a") {
		t.Fatal("back after one success, want Rise=2")
	}
	tb.probeAll(ctx)
	if !served(tb, "a") {
		t.Fatal("not back after two successes")
	}
}

// Reconfiguring keeps the state of PoPs that stay.
func TestSetPoPsKeepsState(t *testing.T) {
	tb := New(Config{PoPs: []PoP{{ID: "a"}, {ID: "b"}}})
	tb.Observe(beacon.Beacon{PoP: "a", Healthy: false})
	tb.SetPoPs([]PoP{{ID: "c"}, {ID: "a"}})
	s := tb.Snapshot()
	if len(s.PoPs) != 2 || s.PoPs[0].ID != "c" || s.PoPs[1].ID != "a" || s.PoPs[1].Served || !s.PoPs[0].Served {
		t.Fatalf("after SetPoPs: %+v", s.PoPs)
	}
}

// A stall of the DNS process itself (its ageing ticker fires seconds late)
// must not take every PoP out at once: their beacons of that time are
// queued, not missing. The stall does not count against the PoPs; one
// that then stays silent still goes out MissedBeacons intervals after its
// last beacon, not counting the stall.
func TestStalledTickerKeepsPoPs(t *testing.T) {
	var clock atomic.Int64 // milliseconds
	now := func() time.Time { return time.UnixMilli(clock.Load()) }
	step := func(d time.Duration) time.Time { clock.Add(d.Milliseconds()); return now() }
	tb := New(Config{PoPs: []PoP{{ID: "a"}, {ID: "b"}}, BeaconInterval: time.Second, MissedBeacons: 3, Now: now})
	tb.WatchFeed(func() bool { return true })
	beat := func() {
		tb.Observe(beacon.Beacon{PoP: "a", Healthy: true})
		tb.Observe(beacon.Beacon{PoP: "b", Healthy: true})
	}
	// Normal operation: a tick every 500ms, beacons every second.
	for i := 0; i < 6; i++ {
		if i%2 == 0 {
			beat()
		}
		tb.tick(step(500 * time.Millisecond))
	}
	if !served(tb, "a") || !served(tb, "b") {
		t.Fatal("beaconing PoPs must be served")
	}
	// The process stalls for 4s: the next tick comes 3.5s late and no
	// beacon has been read yet.
	tb.tick(step(4 * time.Second))
	if !served(tb, "a") || !served(tb, "b") {
		t.Fatalf("after a 4s stall of the DNS process every PoP was taken out: %+v", tb.Snapshot().PoPs)
	}
	// The queued beacons of a are read; b's never come. Normal ticks again.
	tb.Observe(beacon.Beacon{PoP: "a", Healthy: true})
	for i := 0; i < 7; i++ {
		if i%2 == 1 {
			tb.Observe(beacon.Beacon{PoP: "a", Healthy: true})
		}
		tb.tick(step(500 * time.Millisecond))
	}
	if !served(tb, "a") {
		t.Fatal("a beacons on and must be served")
	}
	if served(tb, "b") {
		t.Fatal("b sent nothing for 3.5 intervals after the stall; it must be out")
	}
}

// Without a stall, ticks on time age a silent PoP out as before: the
// stall rule must not hide a dead PoP.
func TestTimelyTicksAgeOut(t *testing.T) {
	var clock atomic.Int64
	now := func() time.Time { return time.UnixMilli(clock.Load()) }
	tb := New(Config{PoPs: []PoP{{ID: "a"}}, BeaconInterval: time.Second, MissedBeacons: 3, Now: now})
	tb.WatchFeed(func() bool { return true })
	tb.Observe(beacon.Beacon{PoP: "a", Healthy: true})
	for i := 0; i < 7; i++ {
		clock.Add(500)
		tb.tick(now())
	}
	if served(tb, "a") {
		t.Fatal("a sent nothing for 3.5 intervals with the ticker on time; it must be out")
	}
}

// Beacons of PoPs the table does not list change nothing and are handed
// to OnUnknown.
func TestUnknownBeacons(t *testing.T) {
	var got []string
	tb := New(Config{PoPs: []PoP{{ID: "a"}}, OnUnknown: func(b beacon.Beacon) { got = append(got, b.PoP) }})
	tb.Observe(beacon.Beacon{PoP: "nope", Healthy: false})
	tb.Observe(beacon.Beacon{PoP: "a", Healthy: true})
	if len(got) != 1 || got[0] != "nope" {
		t.Fatalf("OnUnknown saw %v, want [nope]", got)
	}
	if s := tb.Snapshot(); len(s.PoPs) != 1 || !s.PoPs[0].Served {
		t.Fatalf("snapshot %+v", s.PoPs)
	}
}
