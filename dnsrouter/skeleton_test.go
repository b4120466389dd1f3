package dnsrouter

import (
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/internal/beacon"
	"github.com/meridian-edge/meridian/internal/testutil"
	"github.com/miekg/dns"
)

// The walking skeleton of `meridian dev`: ECS 203.0.113.0/24 (Tokyo) gets
// ap-northeast-1 (127.0.0.13) over UDP and TCP, and the other dev networks
// get their PoPs.
func TestDevDefaultsAnswerNearestPoP(t *testing.T) {
	_, addr := start(t, DevOptions())
	cases := []struct {
		ecs  string
		want string
	}{
		{"203.0.113.0/24", "127.0.0.13"},
		{"198.51.100.0/24", "127.0.0.12"},
		{"192.0.2.0/24", "127.0.0.11"},
		{"2001:db8:3::/48", "127.0.0.13"},
		{"2001:db8:2::/48", "127.0.0.12"},
		{"2001:db8:1::/48", "127.0.0.11"},
	}
	for _, netw := range []string{"udp", "tcp"} {
		for _, c := range cases {
			r := exchange(t, netw, addr, query("www.example.test.", dns.TypeA, c.ecs))
			if r.Rcode != dns.RcodeSuccess || !r.Authoritative {
				t.Fatalf("%s %s: rcode %s aa=%v, want NOERROR with AA", netw, c.ecs, dns.RcodeToString[r.Rcode], r.Authoritative)
			}
			if got := addrs(r); !slices.Equal(got, []string{c.want}) {
				t.Errorf("%s ECS %s: answer %v, want [%s]", netw, c.ecs, got, c.want)
			}
		}
	}
}

// When a PoP's beacons stop, its clients move to the next nearest PoP.
func TestStoppedBeaconsMoveClients(t *testing.T) {
	ns := testutil.StartNATS(t)
	opts := DevOptions()
	opts.BeaconInterval = 50 * time.Millisecond
	opts.MissedBeacons = 6
	s, addr := start(t, opts)
	if err := s.WatchBeacons(testutil.Connect(t, ns)); err != nil {
		t.Fatal(err)
	}
	pub := testutil.Connect(t, ns)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	tokyoCtx, stopTokyo := context.WithCancel(ctx)
	for _, id := range []string{"us-east-1", "eu-west-2", "ap-northeast-1"} {
		c := ctx
		if id == "ap-northeast-1" {
			c = tokyoCtx
		}
		go beacon.Publish(c, pub, opts.BeaconInterval, slog.New(slog.DiscardHandler), func() beacon.Beacon {
			return beacon.Beacon{PoP: id, Region: id, Healthy: true}
		})
	}
	ask := func() []string {
		return addrs(exchange(t, "udp", addr, query("www.example.test.", dns.TypeA, "203.0.113.0/24")))
	}
	// With beacons flowing, Tokyo is served (and stays so past the
	// cold-start grace period).
	eventually(t, "Tokyo beacons seen", func() bool { return s.Health().PoPs[2].Beacon.String() == "up" })
	time.Sleep(time.Duration(opts.MissedBeacons+1) * opts.BeaconInterval)
	if got := ask(); !slices.Equal(got, []string{"127.0.0.13"}) {
		t.Fatalf("with all beacons: %v, want [127.0.0.13]", got)
	}
	stopTokyo()
	// Tokyo → London is 9,560 km, Tokyo → Virginia 10,900 km: London next.
	eventually(t, "Tokyo clients moved to eu-west-2", func() bool {
		return slices.Equal(ask(), []string{"127.0.0.12"})
	})
}
