package plugins_test

import (
	"context"
	"sync"
	"testing"

	"github.com/meridian-edge/meridian/plugins"
	"github.com/meridian-edge/meridian/plugins/abi"
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
