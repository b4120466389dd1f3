package dnsrouter

import (
	"testing"

	"github.com/meridian-edge/meridian/dnsrouter/geo"
	"github.com/meridian-edge/meridian/dnsrouter/health"
)

func TestChooseSpillIsProportional(t *testing.T) {
	pops := []geo.Location{{Lat: 35.7, Lon: 139.7}, {Lat: 1.3, Lon: 103.8}, {Lat: 51.5, Lon: -0.1}}
	ids := []string{"tokyo", "singapore", "london"}
	rk := rankFor(pops, geo.Location{Lat: 37.6, Lon: 126.9}) // Seoul
	snap := func(keep ...float64) *health.Snapshot {
		s := &health.Snapshot{}
		for i, id := range ids {
			s.PoPs = append(s.PoPs, health.State{ID: id, Served: keep[i] >= 0, Keep: max(keep[i], 0)})
		}
		return s
	}
	cases := []struct {
		name   string
		snap   *health.Snapshot
		shares [3]float64 // expected share per PoP
		fail   bool
	}{
		{"all under threshold", snap(1, 1, 1), [3]float64{1, 0, 0}, false},
		{"Tokyo keeps 70%", snap(0.7, 1, 1), [3]float64{0.7, 0.3, 0}, false},
		{"Tokyo keeps 20%, Singapore 50%", snap(0.2, 0.5, 1), [3]float64{0.2, 0.4, 0.4}, false},
		{"Tokyo down", snap(-1, 1, 1), [3]float64{0, 1, 0}, false},
		{"every served PoP full: the nearest of them", snap(-1, 0, 0), [3]float64{0, 1, 0}, false},
		{"all down: fail open to the nearest", snap(-1, -1, -1), [3]float64{1, 0, 0}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			const n = 100000
			var got [3]float64
			for i := range n {
				ch := choose(rk, ids, c.snap, nil, 1, uint64(i)*0x2545F4914F6CDD1D)
				if ch.n != 1 || ch.failOpen != c.fail {
					t.Fatalf("choice %+v", ch)
				}
				got[ch.pops[0]]++
			}
			for i := range got {
				if d := got[i]/n - c.shares[i]; d < -0.01 || d > 0.01 {
					t.Errorf("%s got %.3f of the clients, want %.3f", ids[i], got[i]/n, c.shares[i])
				}
			}
		})
	}
}

func TestChooseSkipsUnservedForNAnswers(t *testing.T) {
	pops := []geo.Location{{Lat: 35.7, Lon: 139.7}, {Lat: 1.3, Lon: 103.8}, {Lat: 51.5, Lon: -0.1}, {Lat: 39, Lon: -77.5}}
	ids := []string{"tokyo", "singapore", "london", "virginia"}
	rk := rankFor(pops, geo.Location{Lat: 37.6, Lon: 126.9})
	s := &health.Snapshot{}
	for i, id := range ids {
		s.PoPs = append(s.PoPs, health.State{ID: id, Served: i != 1, Keep: 1})
	}
	ch := choose(rk, ids, s, nil, 3, 1)
	if ch.n != 3 || ids[ch.pops[0]] != "tokyo" || ids[ch.pops[1]] != "london" || ids[ch.pops[2]] != "virginia" {
		t.Fatalf("got %+v", ch)
	}
	// A snapshot from another generation (reload in flight) is ignored.
	stale := &health.Snapshot{PoPs: []health.State{{ID: "other"}}}
	if ch := choose(rk, ids, stale, nil, 1, 1); ch.n != 1 || ids[ch.pops[0]] != "tokyo" || ch.failOpen {
		t.Fatalf("mismatched snapshot: %+v", ch)
	}
}

func TestChooseDoesNotAllocate(t *testing.T) {
	v := buildView(worldOptionsNoT())
	snap := health.New(health.Config{PoPs: healthPoPs(v.opts.PoPs)}).Snapshot()
	rk := v.ranks.lookup(geo.Location{Lat: 37.6, Lon: 126.9})
	if n := testing.AllocsPerRun(1000, func() { v.choose(rk, snap, nil, 42) }); n != 0 {
		t.Fatalf("choose allocates %v times per call", n)
	}
}

// worldOptionsNoT is worldOptions without a database, for unit tests.
func worldOptionsNoT() Options {
	o := DevOptions()
	o.PoPs = worldPoPs()
	o.defaults()
	return o
}
