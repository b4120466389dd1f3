package plugins_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/meridian-edge/meridian/internal/testutil"
	"github.com/meridian-edge/meridian/plugins"
	"github.com/meridian-edge/meridian/plugins/abi"
	"github.com/prometheus/client_golang/prometheus"
)

// TestConcurrentRequestsShareABoundedPool sends 64 concurrent requests to a
// plugin limited to 3 live instances: all succeed, at most 3 instances ever
// exist, and the metrics count every call.
func TestConcurrentRequestsShareABoundedPool(t *testing.T) {
	h, reg := newHost(t, func(o *plugins.Options) {
		o.MaxInstances = 3
		o.IdleInstances = 3
	})
	deploy(t, h, "s", "h", "headers")
	chain := &plugins.Chain{Site: "s", Entries: []plugins.Entry{{Plugin: "h", Config: map[string]string{"request": "x-a: 1"}}}}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 64 {
		wg.Go(func() {
			x := h.Begin(chain, plugins.GeoInfo{})
			defer x.Close()
			var a abi.Actions
			if err := x.Request(context.Background(), 0, req(), &a); err != nil {
				errs <- err
				return
			}
			if len(a.SetRequestHeaders) != 2 {
				errs <- &plugins.CallError{Kind: plugins.KindBadOutput}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := counter(t, reg, "meridian_plugin_calls_total", map[string]string{"plugin": "h"}); n != 64 {
		t.Fatalf("calls_total = %v, want 64", n)
	}
	if n := counter(t, reg, "meridian_plugin_call_seconds", map[string]string{"plugin": "h", "phase": "request"}); n != 64 {
		t.Fatalf("call_seconds count = %v, want 64", n)
	}
	if n := counter(t, reg, "meridian_plugin_instances", map[string]string{"plugin": "h", "state": "live"}); n < 1 || n > 3 {
		t.Fatalf("live instances = %v, want 1..3", n)
	}
	if n := counter(t, reg, "meridian_plugin_instance_memory_bytes", map[string]string{"plugin": "h"}); n < 64<<10 {
		t.Fatalf("instance memory = %v bytes, want at least one page", n)
	}
}

// TestBusyPoolRespectsDeadline: when every instance is taken, a request
// waits only until its context ends.
func TestBusyPoolRespectsDeadline(t *testing.T) {
	h, _ := newHost(t, func(o *plugins.Options) { o.MaxInstances = 1 })
	deploy(t, h, "s", "ab", "absplit") // exports on_response: keeps its instance pinned
	chain := &plugins.Chain{Site: "s", Entries: []plugins.Entry{{Plugin: "ab"}}}
	x := h.Begin(chain, plugins.GeoInfo{})
	var a abi.Actions
	if err := x.Request(context.Background(), 0, req(), &a); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	y := h.Begin(chain, plugins.GeoInfo{})
	if err := y.Request(ctx, 0, req(), &a); plugins.KindOf(err) != plugins.KindBusy {
		t.Fatalf("want busy, got %v", err)
	}
	y.Close()
	x.Close() // frees the instance
	z := h.Begin(chain, plugins.GeoInfo{})
	defer z.Close()
	if err := z.Request(context.Background(), 0, req(), &a); err != nil {
		t.Fatalf("after release: %v", err)
	}
}

// TestInstanceKeepsItsConfig: the kit reads a config key from the host once
// per instance, so an instance must only ever serve one config. Two chains
// use the same plugin version with different configs, interleaved, with a
// pool too small for both (one idle instance) and one large enough: every
// request gets the header of its own chain, on both engines.
func TestInstanceKeepsItsConfig(t *testing.T) {
	for _, eng := range []struct {
		name string
		e    plugins.Engine
	}{{"sdk", engine}, {"native", nativeEngine(t)}} {
		for _, idle := range []int{1, 4} {
			t.Run(fmt.Sprintf("%s/idle%d", eng.name, idle), func(t *testing.T) {
				h, _ := newHost(t, func(o *plugins.Options) {
					o.Engine = eng.e
					o.MaxInstances, o.IdleInstances = 2, idle
				})
				deploy(t, h, "s", "h", "headers")
				for i := range 12 {
					site := []string{"a", "b", "c"}[i%3]
					a, err := callOnce(h, "s", "h", map[string]string{"request": "x-site: " + site})
					if err != nil {
						t.Fatal(err)
					}
					got := ""
					for _, hd := range a.SetRequestHeaders {
						if hd.Name == "x-site" {
							got = hd.Value
						}
					}
					if got != site {
						t.Fatalf("request %d with config x-site: %s got x-site %q (%v)", i, site, got, a.SetRequestHeaders)
					}
				}
			})
		}
	}
}

// TestBusyPoolHandsOverToWaiters: with every instance busy, a request
// waits; the instance returned by another request goes to it, and a
// waiting request whose context ends gives up with KindBusy without taking
// a slot from the next one.
func TestBusyPoolHandsOverToWaiters(t *testing.T) {
	h, reg := newHost(t, func(o *plugins.Options) { o.MaxInstances = 1 })
	deploy(t, h, "s", "ab", "absplit") // exports on_response: keeps its instance pinned
	chain := &plugins.Chain{Site: "s", Entries: []plugins.Entry{{Plugin: "ab"}}}
	x := h.Begin(chain, plugins.GeoInfo{})
	var a abi.Actions
	if err := x.Request(context.Background(), 0, req(), &a); err != nil {
		t.Fatal(err)
	}
	// A waiter that gives up.
	ctx, cancel := context.WithCancel(context.Background())
	gaveUp := make(chan error, 1)
	go func() {
		y := h.Begin(chain, plugins.GeoInfo{})
		defer y.Close()
		var a abi.Actions
		gaveUp <- y.Request(ctx, 0, req(), &a)
	}()
	// A waiter that stays.
	done := make(chan error, 1)
	go func() {
		z := h.Begin(chain, plugins.GeoInfo{})
		defer z.Close()
		var a abi.Actions
		done <- z.Request(context.Background(), 0, req(), &a)
	}()
	cancel()
	if err := <-gaveUp; plugins.KindOf(err) != plugins.KindBusy {
		t.Fatalf("cancelled waiter: want busy, got %v", err)
	}
	// Once the second waiter is queued (not before: the check below would
	// pass whatever the pool did), it must still be waiting.
	testutil.WaitFor(t, "the waiter to queue", func() bool { return waitingRequests(t, reg) == 1 })
	select {
	case err := <-done:
		t.Fatalf("a request ran while the only instance was pinned: %v", err)
	default:
	}
	x.Close() // returns the instance: the waiter gets it
	if err := <-done; err != nil {
		t.Fatalf("waiter after release: %v", err)
	}
}

// waitingRequests reads meridian_plugin_waiting_requests summed over versions.
func waitingRequests(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	return testutil.MetricSum(t, reg, "meridian_plugin_waiting_requests", nil)
}
