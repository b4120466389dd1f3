package plugins_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meridian-edge/meridian/internal/statesync"
	"github.com/meridian-edge/meridian/internal/testutil"
	"github.com/meridian-edge/meridian/plugins"
	"github.com/meridian-edge/meridian/plugins/abi"
)

// TestRateLimitKeysExpire runs the ratelimit example (built from source) on
// both engines against the replicated KV of a real statesync node on an
// embedded NATS server, for many windows of many clients. It still limits
// each client per window, and the node keeps a bounded number of counters:
// the windows that are over expire and are compacted away, where before
// every client and window stayed forever.
func TestRateLimitKeysExpire(t *testing.T) {
	engines := map[string]plugins.Engine{"go-sdk": engine, "native": nativeEngine(t)}
	for name, eng := range engines {
		t.Run(name, func(t *testing.T) {
			srv := testutil.StartNATS(t)
			nc, err := nats.Connect(srv.ClientURL())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(nc.Close)
			clock := &testutil.Clock{}
			node, err := statesync.Open(context.Background(), statesync.Options{NodeID: "ams", Conn: nc, DataDir: t.TempDir(),
				Now: clock.Now, AntiEntropyInterval: 50 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { node.Close() })
			h, _ := newHost(t, func(o *plugins.Options) {
				o.Engine, o.KV, o.Now = eng, statesync.PluginKV{Node: node}, clock.Now
			})
			deploy(t, h, "shop", "rl", "ratelimit")
			chain := &plugins.Chain{Site: "shop", Entries: []plugins.Entry{{Plugin: "rl", Config: map[string]string{"limit": "2", "window_seconds": "60"}}}}
			call := func(ip string) abi.Actions {
				t.Helper()
				x := h.Begin(chain, plugins.GeoInfo{})
				defer x.Close()
				r := req()
				r.ClientIP, r.Time = ip, x.Time()
				var a abi.Actions
				if err := x.Request(context.Background(), 0, r, &a); err != nil {
					t.Fatalf("ratelimit call: %v", err)
				}
				return a
			}
			const clients, windows = 8, 24
			// A counter lives two windows after its last add, plus the
			// expiry grace (1 min) and a compaction tick: at most four
			// windows' counters are ever held, five for a tick's slack.
			const bound = 5 * clients
			for w := range windows {
				for c := range clients {
					ip := fmt.Sprintf("198.51.100.%d", c)
					for i := range 3 {
						if got := call(ip); got.Respond != (i == 2) {
							t.Fatalf("window %d client %d request %d: 429=%v, want it only on the third", w, c, i, got.Respond)
						}
					}
				}
				clock.Advance(time.Minute)
				// Compaction runs on the node's anti-entropy tick: wait
				// for it (a liveness bound, not a timing assertion).
				deadline := time.Now().Add(10 * time.Second)
				for node.Status().Keys > bound {
					if time.Now().After(deadline) {
						t.Fatalf("the node holds %d counters after window %d, want at most %d (%d without expiry)",
							node.Status().Keys, w, bound, (w+1)*clients)
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
			if live := node.Keys("ctr/shop/"); len(live) > 2*clients {
				t.Fatalf("%d live counters, want at most two windows' (%d): %v", len(live), 2*clients, live[:min(len(live), 5)])
			}
			for _, k := range node.Keys("ctr/shop/") {
				if !strings.HasPrefix(k, "ctr/shop/rl:198.51.100.") {
					t.Fatalf("unexpected key %q", k)
				}
			}
		})
	}
}
