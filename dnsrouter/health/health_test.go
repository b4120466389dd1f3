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
