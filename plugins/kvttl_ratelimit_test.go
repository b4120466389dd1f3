package plugins_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meridian-edge/meridian/internal/statesync"
	"github.com/meridian-edge/meridian/internal/testutil"
	"github.com/meridian-edge/meridian/plugins"
	"github.com/meridian-edge/meridian/plugins/abi"
)

// syncKV is the plugins' KV on a replicated statesync node, as a PoP wires
// it (values LWW, counters PN-counters, both with expiry).
type syncKV struct{ n *statesync.Node }

func (k syncKV) Get(_ context.Context, site, key string) ([]byte, bool, error) {
	v, ok := k.n.KVGet(site, key)
	return v, ok, nil
}

func (k syncKV) Set(ctx context.Context, site, key string, value []byte) error {
	return k.n.KVSet(ctx, site, key, value)
}

func (k syncKV) SetTTL(ctx context.Context, site, key string, value []byte, ttl time.Duration) error {
	return k.n.KVSetTTL(ctx, site, key, value, ttl)
}

func (k syncKV) Delete(ctx context.Context, site, key string) error {
	return k.n.KVDelete(ctx, site, key)
}

func (k syncKV) CounterAdd(ctx context.Context, site, key string, delta int64) (int64, error) {
	return k.n.CounterAdd(ctx, site, key, delta)
}

func (k syncKV) CounterAddTTL(ctx context.Context, site, key string, delta int64, ttl time.Duration) (int64, error) {
	return k.n.CounterAddTTL(ctx, site, key, delta, ttl)
}

var _ plugins.ExpiringKV = syncKV{}

// ttlClock is the wall clock of a test PoP: the plugin host's request time
// and the replicated state's expiry both follow it, and the test moves it
// window by window instead of waiting.
type ttlClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *ttlClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *ttlClock) advance(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

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
			clock := &ttlClock{}
			node, err := statesync.Open(context.Background(), statesync.Options{NodeID: "ams", Conn: nc, DataDir: t.TempDir(),
				Now: clock.now, AntiEntropyInterval: 50 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { node.Close() })
			h, _ := newHost(t, func(o *plugins.Options) {
				o.Engine, o.KV, o.Now = eng, syncKV{node}, clock.now
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
				clock.advance(time.Minute)
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
