package rollout_test

import (
	"encoding/binary"
	"fmt"
	"net/url"
	"testing"
	"time"

	ntestutil "github.com/meridian-edge/meridian/internal/testutil"
	"github.com/meridian-edge/meridian/plugins"
	"github.com/meridian-edge/meridian/plugins/rollout/rollouttest"
)

// withCustomSection returns wasm with a custom section holding n appended:
// a valid module with other bytes, so a new version with a new SHA-256 and a
// compilation cache miss, like a site owner's rebuilt plugin.
func withCustomSection(wasm []byte, n uint64) []byte {
	name := "meridian-bench"
	payload := binary.LittleEndian.AppendUint64(nil, n)
	content := append(append([]byte{byte(len(name))}, name...), payload...)
	out := append([]byte(nil), wasm...)
	return append(append(out, 0, byte(len(content))), content...)
}

// BenchmarkPushToAnswering measures the time from 'meridian plugin push'
// (an upload to one PoP's admin API) to the new version running on all
// three PoPs, for the real Go headers example.
//
//   - cold: each PoP has its own engine and compilation cache, as on
//     separate machines, and every push is new bytes (a rebuilt plugin), so
//     every PoP compiles from scratch. The three PoPs share this machine's
//     cores, which a real deployment does not.
//   - warm: the same, but the bytes were compiled before on each PoP (a
//     rollback or re-deploy of a known version).
func BenchmarkPushToAnswering(b *testing.B) {
	for _, mode := range []string{"cold", "warm"} {
		b.Run(mode, func(b *testing.B) {
			srv := ntestutil.StartNATS(b)
			var pops []*rollouttest.PoP
			for _, id := range []string{"ams", "fra", "sin"} {
				e, err := plugins.NewSDKEngine(plugins.SDKOptions{}) // in-memory cache of its own
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { e.Close(b.Context()) })
				pops = append(pops, rollouttest.StartPoP(b, srv, e, id, nil))
			}
			// Version 1 with the chain entry, so later pushes only change versions.
			mustPush(b, pops[0].Admin.URL, ops, site, "headers", wasm["headers"], url.Values{"config": {"response=x-hello: world"}})
			waitAll(b, pops, 1)
			// warm: versions 2 and 3 are compiled once on every PoP, then
			// the iterations alternate between them with deploy records.
			if mode == "warm" {
				for v := 2; v <= 3; v++ {
					mustPush(b, pops[0].Admin.URL, ops, site, "headers", withCustomSection(wasm["headers"], uint64(v)), nil)
					waitAll(b, pops, v)
				}
			}
			b.ResetTimer()
			var total time.Duration
			for i := range b.N {
				start := time.Now()
				var want int
				if mode == "cold" {
					pr := mustPush(b, pops[0].Admin.URL, ops, site, "headers", withCustomSection(wasm["headers"], uint64(1000+i)), nil)
					want = pr.Version.Version
				} else {
					want = 2 + (i+1)%2 // 3, 2, 3, ... (3 runs after setup)
					r := call(b, "POST", pops[0].Admin.URL+"/admin/plugins/shop/headers/deploy", ops, fmt.Appendf(nil, `{"version":%d}`, want))
					if r.status != 200 {
						b.Fatalf("deploy: %d %s", r.status, r.body)
					}
				}
				waitAll(b, pops, want)
				total += time.Since(start)
			}
			b.ReportMetric(total.Seconds()/float64(b.N), "s/push-to-all-PoPs")
		})
	}
}

// waitAll waits until every PoP runs version v of the headers plugin and
// answers through it.
func waitAll(b *testing.B, pops []*rollouttest.PoP, v int) {
	b.Helper()
	for _, p := range pops {
		eventually(b, 2*time.Minute, fmt.Sprintf("version %d on %s", v, p.ID), func() bool {
			st := status(b, p.Admin.URL, ops, site)
			if len(st.Plugins) != 1 || st.Plugins[0].Local == nil || st.Plugins[0].Local.Stable != v {
				return false
			}
			_, h := p.Get(b)
			return h.Get("x-hello") == "world"
		})
	}
}
