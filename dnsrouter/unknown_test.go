package dnsrouter

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/internal/beacon"
	"github.com/meridian-edge/meridian/internal/testutil"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
)

// A PoP that beacons over real NATS but is missing from the DNS
// configuration is logged once, with the fix, and counted on
// meridian_dns_unknown_beacons_total; known PoPs are neither.
func TestUnknownPoPBeaconsLoggedOnceAndCounted(t *testing.T) {
	ns := testutil.StartNATS(t)
	reg := prometheus.NewRegistry()
	logs := &testutil.SyncBuffer{}
	opts := DevOptions()
	opts.Registerer = reg
	opts.Logger = slog.New(slog.NewTextHandler(logs, nil))
	opts.BeaconInterval, opts.MissedBeacons = 20*time.Millisecond, 100
	s, _ := start(t, opts)
	if err := s.WatchBeacons(testutil.Connect(t, ns)); err != nil {
		t.Fatal(err)
	}
	startFleet(t, testutil.Connect(t, ns), opts.BeaconInterval, "us-east-1", "eu-west-9")
	eventually(t, "five beacons of the unknown PoP counted", func() bool {
		return testutil.CounterSum(t, reg, "meridian_dns_unknown_beacons_total", "pop", "eu-west-9") >= 5
	})
	if n := testutil.CounterSum(t, reg, "meridian_dns_unknown_beacons_total", "pop", "us-east-1"); n != 0 {
		t.Errorf("a known PoP's beacons counted as unknown %v times", n)
	}
	out := logs.String()
	if n := strings.Count(out, "does not know"); n != 1 {
		t.Fatalf("unknown PoP logged %d times, want once:\n%s", n, out)
	}
	if !strings.Contains(out, "pop=eu-west-9") || !strings.Contains(out, "add it to pops in the DNS configuration") {
		t.Fatalf("the log line does not name the PoP and the fix:\n%s", out)
	}
}

// The log repeats for the same id only after unknownLogEvery, and made-up
// ids cannot grow the labels or the memory past maxUnknownIDs.
func TestUnknownPoPsBounded(t *testing.T) {
	logs := &testutil.SyncBuffer{}
	count := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x"}, []string{"pop"})
	u := newUnknownPoPs(slog.New(slog.NewTextHandler(logs, nil)), count)
	now := time.Unix(1000, 0)
	u.now = func() time.Time { return now }
	u.seen(beacon.Beacon{PoP: "a"})
	now = now.Add(unknownLogEvery - time.Second)
	u.seen(beacon.Beacon{PoP: "a"})
	if n := strings.Count(logs.String(), "pop=a "); n != 1 {
		t.Fatalf("logged %d times within the interval, want 1", n)
	}
	now = now.Add(2 * time.Second)
	u.seen(beacon.Beacon{PoP: "a"})
	if n := strings.Count(logs.String(), "pop=a "); n != 2 {
		t.Fatalf("logged %d times after the interval, want 2", n)
	}
	for i := range 2 * maxUnknownIDs {
		u.seen(beacon.Beacon{PoP: fmt.Sprintf("made-up-%d", i)})
	}
	if n := promtest.CollectAndCount(count); n != maxUnknownIDs+1 {
		t.Fatalf("%d label values, want %d ids and other", n, maxUnknownIDs+1)
	}
	if v := promtest.ToFloat64(count.WithLabelValues("other")); v != maxUnknownIDs+1 {
		t.Fatalf("other = %v, want %d", v, maxUnknownIDs+1)
	}
	if len(u.logged) != maxUnknownIDs {
		t.Fatalf("remembers %d ids, want at most %d", len(u.logged), maxUnknownIDs)
	}
}
