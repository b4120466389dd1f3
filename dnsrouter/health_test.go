package dnsrouter

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/internal/beacon"
	"github.com/meridian-edge/meridian/internal/testutil"
	"github.com/miekg/dns"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
)

// fleet publishes beacons for the dev PoPs over real NATS; each PoP's
// health and load can be changed, or its beacons stopped.
type fleet struct {
	mu      sync.Mutex
	healthy map[string]bool
	load    map[string]float64
	stop    map[string]context.CancelFunc
}

func startFleet(t *testing.T, nc *nats.Conn, interval time.Duration, ids ...string) *fleet {
	f := &fleet{healthy: map[string]bool{}, load: map[string]float64{}, stop: map[string]context.CancelFunc{}}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		f.mu.Lock()
		for _, c := range f.stop {
			c()
		}
		f.mu.Unlock()
		wg.Wait()
	})
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, id := range ids {
		ctx, cancel := context.WithCancel(context.Background())
		f.healthy[id] = true
		f.stop[id] = cancel
		wg.Add(1)
		go func() {
			defer wg.Done()
			beacon.Publish(ctx, nc, interval, slog.New(slog.DiscardHandler), func() beacon.Beacon {
				f.mu.Lock()
				defer f.mu.Unlock()
				return beacon.Beacon{PoP: id, Region: id, Healthy: f.healthy[id], Load: f.load[id], Capacity: 100}
			})
		}()
	}
	return f
}

func (f *fleet) set(id string, healthy bool) { f.mu.Lock(); f.healthy[id] = healthy; f.mu.Unlock() }
func (f *fleet) halt(id string)              { f.mu.Lock(); f.stop[id](); f.mu.Unlock() }

// healthEndpoint is a PoP's /healthz over a real loopback HTTP server.
type healthEndpoint struct {
	status atomic.Int32
	srv    *httptest.Server
}

func newHealthEndpoint(t *testing.T) *healthEndpoint {
	h := &healthEndpoint{}
	h.status.Store(http.StatusOK)
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(int(h.status.Load()))
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func tokyoAnswer(t *testing.T, addr string) string {
	r := exchange(t, "udp", addr, query("www.example.test.", dns.TypeA, "203.0.113.0/24"))
	if got := addrs(r); len(got) == 1 {
		return got[0]
	}
	return ""
}

// Beacons and the active probe must agree: either one saying "down" takes
// Tokyo out, and Tokyo's clients go to London.
func TestBeaconsAndProbeMustAgree(t *testing.T) {
	ns := testutil.StartNATS(t)
	opts := DevOptions()
	opts.BeaconInterval, opts.MissedBeacons = 50*time.Millisecond, 10
	opts.ProbeInterval, opts.Rise, opts.Fall = 30*time.Millisecond, 2, 2
	hz := newHealthEndpoint(t)
	opts.PoPs[2].HealthURL = hz.srv.URL + "/healthz"
	s, addr := start(t, opts)
	if err := s.WatchBeacons(testutil.Connect(t, ns)); err != nil {
		t.Fatal(err)
	}
	f := startFleet(t, testutil.Connect(t, ns), opts.BeaconInterval, "us-east-1", "eu-west-2", "ap-northeast-1")

	eventually(t, "Tokyo served with beacons and probe up", func() bool { return tokyoAnswer(t, addr) == "127.0.0.13" })

	hz.status.Store(http.StatusServiceUnavailable)
	eventually(t, "probe failing takes Tokyo out", func() bool { return tokyoAnswer(t, addr) == "127.0.0.12" })
	hz.status.Store(http.StatusOK)
	eventually(t, "probe back brings Tokyo back", func() bool { return tokyoAnswer(t, addr) == "127.0.0.13" })

	f.set("ap-northeast-1", false)
	eventually(t, "self-reported unhealthy takes Tokyo out", func() bool { return tokyoAnswer(t, addr) == "127.0.0.12" })
	st := s.Health().PoPs[2]
	if st.Beacon.String() != "down" || st.Probe.String() != "up" || st.Served {
		t.Fatalf("Tokyo state %+v, want beacon down, probe up, not served", st)
	}
	f.set("ap-northeast-1", true)
	eventually(t, "Tokyo back after Rise good beacons", func() bool { return tokyoAnswer(t, addr) == "127.0.0.13" })
}

// Before the first beacon, the server answers as if every PoP were up: a
// cold start is not "all down", and it is not counted as fail-open.
func TestColdStartIsNotAllDown(t *testing.T) {
	ns := testutil.StartNATS(t)
	reg := prometheus.NewRegistry()
	opts := DevOptions()
	opts.Registerer = reg
	opts.BeaconInterval = time.Hour // the grace period will not end in this test
	s, addr := start(t, opts)
	if err := s.WatchBeacons(testutil.Connect(t, ns)); err != nil {
		t.Fatal(err)
	}
	if got := tokyoAnswer(t, addr); got != "127.0.0.13" {
		t.Fatalf("cold start: %q, want Tokyo", got)
	}
	if n := promtest.ToFloat64(s.met.failOpen); n != 0 {
		t.Fatalf("fail-open counted %v times during cold start", n)
	}
}

// With every PoP down, the nearest is answered anyway and it is counted.
func TestFailOpenWhenAllDown(t *testing.T) {
	ns := testutil.StartNATS(t)
	reg := prometheus.NewRegistry()
	opts := DevOptions()
	opts.Registerer = reg
	opts.BeaconInterval, opts.MissedBeacons = 50*time.Millisecond, 2
	s, addr := start(t, opts)
	if err := s.WatchBeacons(testutil.Connect(t, ns)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "all PoPs out (no beacons)", func() bool {
		for _, p := range s.Health().PoPs {
			if p.Served {
				return false
			}
		}
		return true
	})
	r := exchange(t, "udp", addr, query("www.example.test.", dns.TypeA, "203.0.113.0/24"))
	if r.Rcode != dns.RcodeSuccess || !slices.Equal(addrs(r), []string{"127.0.0.13"}) {
		t.Fatalf("all down: %s %v, want NOERROR with the nearest (Tokyo)", dns.RcodeToString[r.Rcode], addrs(r))
	}
	if n := promtest.ToFloat64(s.met.failOpen); n != 1 {
		t.Fatalf("meridian_dns_fail_open_total = %v, want 1", n)
	}
}

// NATS going away: the last view is kept (Tokyo stays out, the others stay
// in although their beacons stopped too) and the staleness is visible.
func TestNATSLossKeepsLastView(t *testing.T) {
	ns := testutil.StartNATS(t)
	reg := prometheus.NewRegistry()
	opts := DevOptions()
	opts.Registerer = reg
	opts.BeaconInterval, opts.MissedBeacons = 50*time.Millisecond, 10
	s, addr := start(t, opts)
	nc := testutil.Connect(t, ns)
	if err := s.WatchBeacons(nc); err != nil {
		t.Fatal(err)
	}
	f := startFleet(t, testutil.Connect(t, ns), opts.BeaconInterval, "us-east-1", "eu-west-2", "ap-northeast-1")
	f.halt("ap-northeast-1")
	eventually(t, "Tokyo out", func() bool { return tokyoAnswer(t, addr) == "127.0.0.12" })

	ns.Shutdown()
	eventually(t, "stale view reported", func() bool { return promtest.ToFloat64(s.met.stale) == 1 })
	time.Sleep(time.Duration(2*opts.MissedBeacons) * opts.BeaconInterval) // far past MissedBeacons without any beacon
	if got := tokyoAnswer(t, addr); got != "127.0.0.12" {
		t.Fatalf("while NATS is down: %q, want London from the last view", got)
	}
	for _, p := range s.Health().PoPs {
		if want := p.ID != "ap-northeast-1"; p.Served != want {
			t.Errorf("%s served=%v while stale, want %v", p.ID, p.Served, want)
		}
	}
	if !s.Health().Stale {
		t.Error("snapshot not marked stale")
	}
}
