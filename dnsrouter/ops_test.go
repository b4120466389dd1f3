package dnsrouter

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/dnsrouter/geo"
	"github.com/meridian-edge/meridian/internal/beacon"
	"github.com/meridian-edge/meridian/internal/testutil"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
)

// Response rate limiting: past the budget, every second response slips
// (TC, no answer) and the others are dropped; TCP is not limited.
func TestRRLSlip(t *testing.T) {
	reg := prometheus.NewRegistry()
	o := DevOptions()
	o.Registerer = reg
	o.RRL = RRLOptions{ResponsesPerSecond: 0.01, Burst: 4, Slip: 2}
	s, addr := start(t, o)
	pkt, _ := query("www.example.test.", dns.TypeA, "203.0.113.0/24").Pack()
	var full, slipped, dropped int
	for range 12 {
		b := rawExchange(t, addr, pkt, 250*time.Millisecond)
		if b == nil {
			dropped++
			continue
		}
		r := new(dns.Msg)
		if err := r.Unpack(b); err != nil {
			t.Fatal(err)
		}
		switch {
		case !r.Truncated && len(r.Answer) == 1:
			full++
		case r.Truncated && len(r.Answer) == 0 && len(b) <= len(pkt):
			slipped++
		default:
			t.Fatalf("unexpected answer under RRL: %v", r)
		}
	}
	if full != 4 || slipped != 4 || dropped != 4 {
		t.Fatalf("full=%d slipped=%d dropped=%d, want 4/4/4 (burst 4, then slip every 2nd)", full, slipped, dropped)
	}
	if r := exchange(t, "tcp", addr, query("www.example.test.", dns.TypeA, "203.0.113.0/24")); len(r.Answer) != 1 {
		t.Fatal("TCP must not be rate limited (it is how slipped clients get their answer)")
	}
	if got := promtest.ToFloat64(s.met.rrl.WithLabelValues("slip")); got != 4 {
		t.Errorf("rrl slip metric %v, want 4", got)
	}
	if got := promtest.ToFloat64(s.met.rrl.WithLabelValues("drop")); got != 4 {
		t.Errorf("rrl drop metric %v, want 4", got)
	}
}

func TestMetricsAndQueryLog(t *testing.T) {
	reg := prometheus.NewRegistry()
	var logBuf testutil.SyncBuffer
	o := DevOptions()
	o.Registerer = reg
	o.Logger = slog.New(slog.NewTextHandler(&logBuf, nil))
	o.QueryLogSample = 2
	s, addr := start(t, o)
	for range 3 {
		exchange(t, "udp", addr, query("www.example.test.", dns.TypeA, "203.0.113.0/24"))
	}
	exchange(t, "tcp", addr, query("nope.example.test.", dns.TypeA, ""))
	exchange(t, "udp", addr, query("www.example.org.", dns.TypeA, ""))

	if got := promtest.ToFloat64(s.met.queries.WithLabelValues("A", "NOERROR", "ap-northeast-1")); got != 3 {
		t.Errorf("queries{A,NOERROR,ap-northeast-1} = %v, want 3", got)
	}
	if got := promtest.ToFloat64(s.met.queries.WithLabelValues("A", "NXDOMAIN", "")); got != 1 {
		t.Errorf("queries{A,NXDOMAIN} = %v, want 1", got)
	}
	if got := promtest.ToFloat64(s.met.queries.WithLabelValues("A", "REFUSED", "")); got != 1 {
		t.Errorf("queries{A,REFUSED} = %v, want 1", got)
	}
	if got := promtest.ToFloat64(s.met.ecs); got != 3 {
		t.Errorf("ecs queries = %v, want 3", got)
	}
	n, err := promtest.GatherAndCount(reg, "meridian_dns_answer_duration_seconds", "meridian_dns_pop_served", "meridian_dns_health_stale")
	if err != nil || n != 5 { // 1 histogram + 3 PoP gauges + 1 stale gauge
		t.Errorf("gathered %d series (%v), want 5", n, err)
	}
	if c := strings.Count(logBuf.String(), "dns: query"); c != 2 {
		t.Errorf("query log sampled %d of 5 queries, want 2 (one in 2):\n%s", c, logBuf.String())
	}
	// A second server on the same registry fails with a clear error.
	if _, err := New(o); err == nil || !strings.Contains(err.Error(), "registering metrics") {
		t.Errorf("duplicate registration: %v", err)
	}
}

// Reload swaps zones, PoPs and geo source while queries keep flowing: no
// query is lost, and new queries see the new configuration. A bad reload
// changes nothing.
func TestReloadWithoutDroppingQueries(t *testing.T) {
	s, addr := start(t, DevOptions())
	ctx, cancel := context.WithCancel(context.Background())
	var failures, answered atomic.Int64
	var wg sync.WaitGroup
	for _, netw := range []string{"udp", "tcp"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &dns.Client{Net: netw, Timeout: 2 * time.Second}
			for ctx.Err() == nil {
				r, _, err := c.Exchange(query("www.example.test.", dns.TypeA, "203.0.113.0/24"), addr)
				if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
					failures.Add(1)
					continue
				}
				answered.Add(1)
			}
		}()
	}
	// New configuration: an mmdb instead of the table, a Seoul PoP, and a
	// second served name.
	// The server owns each source it is given, so every reload brings
	// its own.
	mmdb := worldMMDB(t)
	next := func() Options {
		db, err := geo.OpenMMDB(mmdb)
		if err != nil {
			t.Fatal(err)
		}
		o := DevOptions()
		o.Geo = db
		o.PoPs = append(o.PoPs, PoP{ID: "ap-northeast-2", Region: "ap-northeast-2", IPv4: []netip.Addr{netip.MustParseAddr("127.0.0.14")}})
		o.Zones[0].Names = []string{"www", "img"}
		return o
	}
	for i := range 20 {
		time.Sleep(5 * time.Millisecond)
		o := DevOptions()
		if i%2 == 1 {
			o = next()
		}
		if err := s.Reload(o); err != nil {
			t.Fatal(err)
		}
	}
	bad := DevOptions()
	bad.PoPs[0].Lat = 123
	if err := s.Reload(bad); err == nil || !strings.Contains(err.Error(), "PoPs[0].Lat") || !strings.Contains(err.Error(), "keeping the running configuration") {
		t.Fatalf("bad reload: %v", err)
	}
	time.Sleep(20 * time.Millisecond)
	cancel()
	wg.Wait()
	if failures.Load() != 0 || answered.Load() == 0 {
		t.Fatalf("%d queries failed, %d answered during reloads", failures.Load(), answered.Load())
	}
	// The last good reload was `next`: Seoul's PoP and img exist now.
	r := exchange(t, "udp", addr, query("img.example.test.", dns.TypeA, "211.0.0.0/24"))
	if got := addrs(r); len(got) != 1 || got[0] != "127.0.0.14" {
		t.Fatalf("after reload, Seoul gets %v, want the new Seoul PoP 127.0.0.14", got)
	}
}

func TestExplain(t *testing.T) {
	ns := testutil.StartNATS(t)
	o := DevOptions()
	o.BeaconInterval, o.MissedBeacons = 50*time.Millisecond, 6
	s, _ := start(t, o)
	if err := s.WatchBeacons(testutil.Connect(t, ns)); err != nil {
		t.Fatal(err)
	}
	pub := testutil.Connect(t, ns)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, id := range []string{"us-east-1", "eu-west-2"} {
		go beacon.Publish(ctx, pub, o.BeaconInterval, slog.New(slog.DiscardHandler), func() beacon.Beacon {
			return beacon.Beacon{PoP: id, Healthy: true, Load: 10, Capacity: 100}
		})
	}
	eventually(t, "Tokyo out (no beacons)", func() bool { return !s.Health().PoPs[2].Served })
	e, err := s.Explain(netip.MustParsePrefix("203.0.113.7/24"), "WWW.example.test")
	if err != nil {
		t.Fatal(err)
	}
	if e.Name != "www.example.test." || e.Client.String() != "203.0.113.0/24" || e.Scope != 24 || e.LocationSource != "table dev" {
		t.Errorf("explanation header: %+v", e)
	}
	if len(e.Candidates) != 3 || e.Candidates[0].PoP != "ap-northeast-1" || e.Candidates[0].Served || e.Candidates[1].PoP != "eu-west-2" {
		t.Fatalf("candidates %+v, want Tokyo (down) first, then London", e.Candidates)
	}
	if e.Candidates[0].DistanceKm > 10 || e.Candidates[1].DistanceKm < 9000 || e.Candidates[1].DistanceKm > 10000 {
		t.Errorf("distances %v / %v km", e.Candidates[0].DistanceKm, e.Candidates[1].DistanceKm)
	}
	if len(e.Chosen) != 1 || e.Chosen[0] != "eu-west-2" {
		t.Errorf("chosen %v, want eu-west-2", e.Chosen)
	}
	out := e.String()
	for _, want := range []string{"ap-northeast-1", "no beacon for 6 intervals", "chosen: eu-west-2", "ECS scope /24"} {
		if !strings.Contains(out, want) {
			t.Errorf("explain output lacks %q:\n%s", want, out)
		}
	}
	for _, c := range []struct{ name, want string }{
		{"www.example.org", "not in any zone"},
		{"nope.example.test", "nope.example.test. does not exist in zone example.test. (NXDOMAIN)"},
	} {
		if _, err := s.Explain(netip.MustParsePrefix("203.0.113.0/24"), c.name); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Explain(%s): %v, want %q", c.name, err, c.want)
		}
	}
}

func TestAdminHandler(t *testing.T) {
	s, _ := start(t, DevOptions())
	hs := httptest.NewServer(s.AdminHandler())
	defer hs.Close()
	get := func(path, accept string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, hs.URL+path, nil)
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("/explain?subnet=203.0.113.0/24&name=www.example.test", "")
	var e Explanation
	if code != 200 || json.Unmarshal([]byte(body), &e) != nil || len(e.Chosen) != 1 || e.Chosen[0] != "ap-northeast-1" || e.Candidates[0].PoP != "ap-northeast-1" {
		t.Fatalf("explain JSON: %d %s", code, body)
	}
	if code, body := get("/explain?subnet=203.0.113.9&name=www.example.test", "text/plain"); code != 200 || !strings.Contains(body, "chosen: ap-northeast-1") {
		t.Fatalf("explain text: %d %s", code, body)
	}
	for _, c := range []struct {
		path string
		code int
		want string
	}{
		{"/explain?name=www.example.test", 400, "subnet: required"},
		{"/explain?subnet=300.1.1.1/8&name=www.example.test", 400, "want a prefix like"},
		{"/explain?subnet=203.0.113.0/24", 400, "name: required"},
		{"/explain?subnet=203.0.113.0/24&name=www.example.org", 404, "not in any zone"},
	} {
		if code, body := get(c.path, ""); code != c.code || !strings.Contains(body, c.want) {
			t.Errorf("%s: %d %q, want %d containing %q", c.path, code, body, c.code, c.want)
		}
	}
	code, body = get("/health", "")
	if code != 200 || !strings.Contains(body, `"pop": "eu-west-2"`) || !strings.Contains(body, `"served": true`) {
		t.Fatalf("health: %d %s", code, body)
	}
}
