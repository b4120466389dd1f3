package plugins_test

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/internal/testutil"
	"github.com/meridian-edge/meridian/plugins"
	"github.com/meridian-edge/meridian/plugins/abi"
)

// Tests of features that had none: Exchange.Time with an injected clock,
// the kit's bound on its config cache, and the pool's hand-over of a slot
// to a waiter whose context ends as it is handed over.

// deployProbe adds and activates the probe plugin (bytes not in wasm).
func deployProbe(t *testing.T, h *plugins.Host, site, name string, b []byte) {
	t.Helper()
	v, err := h.Add(t.Context(), site, name, b)
	if err != nil {
		t.Fatalf("add %s: %v", name, err)
	}
	if err := h.Activate(t.Context(), site, name, v.Version); err != nil {
		t.Fatalf("activate %s: %v", name, err)
	}
}

// probeHeader is the value of request header name the plugin set.
func probeHeader(a *abi.Actions, name string) (string, bool) {
	for _, h := range a.SetRequestHeaders {
		if h.Name == name {
			return h.Value, true
		}
	}
	return "", false
}

// TestKitProbe runs the tests that need the probe plugin, built once.
func TestKitProbe(t *testing.T) {
	probe := wasm["kitprobe"]
	t.Run("ExchangeTimeUsesInjectedClock", func(t *testing.T) { testExchangeTimeUsesInjectedClock(t, probe) })
	t.Run("ConfigCacheBounded", func(t *testing.T) { testKitConfigCacheBounded(t, probe) })
	t.Run("KV", func(t *testing.T) { testKitKV(t, probe) })
}

// testKitKV: the kit's KVSet, KVSetTTL and KVGet reach the host's KV as a
// plugin author reads them: a value set is read back, an empty value
// deletes (with or without a TTL), a TTL value reads until its time and is
// missing after, and a TTL the host refuses fails the call with a reason.
func testKitKV(t *testing.T, probe []byte) {
	clock := &testutil.Clock{}
	h, _ := newHost(t, func(o *plugins.Options) { o.KV = plugins.NewMemoryKVClock(clock.Now) })
	deployProbe(t, h, "s", "probe", probe)
	run := func(path string) (string, error) {
		t.Helper()
		x := h.Begin(&plugins.Chain{Site: "s", Entries: []plugins.Entry{{Plugin: "probe", Config: map[string]string{"kv": "on"}}}}, plugins.GeoInfo{})
		defer x.Close()
		r := req()
		r.Path = path
		var a abi.Actions
		if err := x.Request(t.Context(), 0, r, &a); err != nil {
			return "", err
		}
		v, ok := probeHeader(&a, "x-kv")
		if !ok {
			t.Fatalf("%s: the plugin set no x-kv", path)
		}
		return v, nil
	}
	steps := []struct{ path, want string }{
		{"/get/a", "(missing)"},
		{"/set/a/one", "one"},
		{"/get/a", "one"},
		{"/set/a/-", "(missing)"},
		{"/ttl/b/two/600000", "two"},
		{"/get/a", "(missing)"},
		{"/get/b", "two"},
		{"advance 9m30s", ""},
		{"/get/b", "two"},
		{"advance 1m", ""},
		{"/get/b", "(missing)"},
		{"/set/c/three", "three"},
		{"/ttl/c/-/60000", "(missing)"},
	}
	for i, s := range steps {
		if d, ok := strings.CutPrefix(s.path, "advance "); ok {
			dur, err := time.ParseDuration(d)
			if err != nil {
				t.Fatal(err)
			}
			clock.Advance(dur)
			continue
		}
		got, err := run(s.path)
		if err != nil {
			t.Fatalf("step %d %s: %v", i, s.path, err)
		}
		if got != s.want {
			t.Fatalf("step %d %s: the plugin read %q, want %q", i, s.path, got, s.want)
		}
	}
	if _, err := run("/ttl/d/v/0"); err == nil || !strings.Contains(err.Error(), "ttl_ms must be 1..") {
		t.Fatalf("a TTL of 0: %v, want the host's refusal naming ttl_ms", err)
	}
	if got, err := run("/get/d"); err != nil || got != "(missing)" {
		t.Fatalf("after a refused TTL: %q, %v; want the key missing", got, err)
	}
}

// testExchangeTimeUsesInjectedClock: with Options.Now, Exchange.Time is
// that clock's time (not the wall clock's), and a plugin given it as the
// request time sees exactly it.
func testExchangeTimeUsesInjectedClock(t *testing.T, probe []byte) {
	var mu sync.Mutex
	now := time.Date(2031, 3, 4, 5, 6, 7, 891_000_000, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	h, _ := newHost(t, func(o *plugins.Options) { o.Now = clock })
	deployProbe(t, h, "s", "probe", probe)
	chain := &plugins.Chain{Site: "s", Entries: []plugins.Entry{{Plugin: "probe"}}}
	for i := range 3 {
		x := h.Begin(chain, plugins.GeoInfo{})
		want := clock()
		if got := x.Time(); !got.Equal(want) {
			x.Close()
			t.Fatalf("request %d: Exchange.Time = %v, want the injected clock's %v", i, got, want)
		}
		r := req()
		r.Time = x.Time()
		var a abi.Actions
		err := x.Request(t.Context(), 0, r, &a)
		x.Close()
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := probeHeader(&a, "x-time-ms"); got != strconv.FormatInt(want.UnixMilli(), 10) {
			t.Fatalf("request %d: the plugin saw request time %s ms, want %d (the injected clock)", i, got, want.UnixMilli())
		}
		mu.Lock()
		now = now.Add(90 * time.Minute)
		mu.Unlock()
	}
}

// testKitConfigCacheBounded: the kit caches an instance's config answers,
// but at most 64 keys: a plugin that asks for new keys on every request
// (here 4 KiB each, 100 per request, on one instance with 16 MiB of
// memory) keeps serving, and every answer, cached or not, is right. An
// unbounded cache would hold 20 MiB of keys after these 50 requests: the
// instance would run out of memory.
func testKitConfigCacheBounded(t *testing.T, probe []byte) {
	h, _ := newHost(t, func(o *plugins.Options) {
		o.MaxInstances, o.IdleInstances = 1, 1 // one instance sees every request
		o.Limits.Timeout = 10 * time.Second    // a hundred config lookups per request under -race
	})
	deployProbe(t, h, "s", "probe", probe)
	cfg := map[string]string{"keys": "100", "size": "4096"}
	for i := range 10 {
		cfg["present-"+strconv.Itoa(i)] = "value-" + strconv.Itoa(i)
	}
	chain := &plugins.Chain{Site: "s", Entries: []plugins.Entry{{Plugin: "probe", Config: cfg}}}
	for i := range 50 {
		x := h.Begin(chain, plugins.GeoInfo{})
		r := req()
		r.Path = "/r" + strconv.Itoa(i)
		var a abi.Actions
		err := x.Request(t.Context(), 0, r, &a)
		x.Close()
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if got, ok := probeHeader(&a, "x-config-wrong"); !ok || got != "0" {
			t.Fatalf("request %d: %q config answers wrong (present %v)", i, got, ok)
		}
	}
}

// TestPoolHandOverToCancelledWaiter: the only instance is returned while
// the first of two waiting requests has its context ended, over and over,
// so that both orders happen (that waiter gives up first, or the slot
// reaches it as its context ends and it must use it and pass it on). Either
// way no slot may be lost: the second waiter always gets the instance, and
// afterwards the plugin still serves, nobody is left waiting, and no
// instance beyond the limit lives.
func TestPoolHandOverToCancelledWaiter(t *testing.T) {
	h, reg := newHost(t, func(o *plugins.Options) { o.MaxInstances, o.IdleInstances = 1, 1 })
	deploy(t, h, "s", "ab", "absplit") // exports on_response: keeps its instance pinned
	chain := &plugins.Chain{Site: "s", Entries: []plugins.Entry{{Plugin: "ab"}}}
	// run starts a request that keeps its instance until done is closed;
	// its result arrives on the returned channel. Its context is bounded: a
	// lost slot shows as a request never getting one.
	run := func(ctx context.Context, done <-chan struct{}) <-chan error {
		res := make(chan error, 1)
		go func() {
			x := h.Begin(chain, plugins.GeoInfo{})
			var a abi.Actions
			err := x.Request(ctx, 0, req(), &a)
			res <- err
			if err == nil {
				<-done
			}
			x.Close()
		}()
		return res
	}
	bounded := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(t.Context(), 10*time.Second)
	}
	var gaveUp, ran int
	for i := range 100 {
		ctx, cancel := bounded()
		x := h.Begin(chain, plugins.GeoInfo{})
		var a abi.Actions
		if err := x.Request(ctx, 0, req(), &a); err != nil {
			t.Fatalf("round %d: with the instance free, a request got %v", i, err)
		}
		yctx, ycancel := context.WithCancel(ctx)
		y := run(yctx, nil) // returns its instance as soon as it has run
		testutil.WaitFor(t, "the first waiter to queue", func() bool { return waitingRequests(t, reg) == 1 })
		zdone := make(chan struct{})
		z := run(ctx, zdone)
		testutil.WaitFor(t, "the second waiter to queue", func() bool { return waitingRequests(t, reg) == 2 })
		// End the first waiter's context and return the instance at once:
		// the waiter, woken by its context, often finds the slot already
		// handed to it.
		ycancel()
		x.Close()
		if err := <-y; plugins.KindOf(err) == plugins.KindBusy {
			gaveUp++
		} else {
			ran++ // it had the slot: ran (or failed on its context) and passed it on
		}
		if err := <-z; err != nil {
			t.Fatalf("round %d: the second waiter did not get the instance: %v", i, err)
		}
		close(zdone)
		cancel()
	}
	t.Logf("the first waiter gave up %d times and got the slot %d times", gaveUp, ran)
	ctx, cancel := bounded()
	defer cancel()
	done := make(chan struct{})
	if err := <-run(ctx, done); err != nil { // the slot is still there
		t.Fatalf("after the rounds, a request got %v", err)
	}
	close(done)
	testutil.WaitFor(t, "no request waiting", func() bool { return waitingRequests(t, reg) == 0 })
	if n := counter(t, reg, "meridian_plugin_instances", map[string]string{"plugin": "ab", "state": "live"}); n > 1 {
		t.Errorf("%v live instances, over the limit of 1", n)
	}
}

// TestExchangeTimeIsBeginTimeWithInjectedClock: Exchange.Time is documented
// as "the wall-clock time the exchange began"; with Options.Now it must be
// the injected clock's time at Begin, and the same on every call (as it is
// with the real clock), not the clock's time when Time is called.
func TestExchangeTimeIsBeginTimeWithInjectedClock(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2031, 3, 4, 5, 6, 7, 0, time.UTC)
	h, _ := newHost(t, func(o *plugins.Options) {
		o.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	})
	begin := now
	x := h.Begin(&plugins.Chain{Site: "s"}, plugins.GeoInfo{})
	defer x.Close()
	mu.Lock()
	now = now.Add(time.Hour)
	mu.Unlock()
	if got := x.Time(); !got.Equal(begin) {
		t.Fatalf("Exchange.Time = %v after the clock moved on; want the time at Begin, %v", got, begin)
	}
}

// TestBeginAtCountsFromTheGivenStart: BeginAt's request began at start (a
// reading the fast path took when the request's head arrived), so the
// exchange's time is start's, not the time BeginAt ran.
func TestBeginAtCountsFromTheGivenStart(t *testing.T) {
	h, _ := newHost(t, nil)
	start := time.Now().Add(-300 * time.Millisecond)
	x := h.BeginAt(&plugins.Chain{Site: "s"}, plugins.GeoInfo{}, start)
	defer x.Close()
	if d := x.Time().Sub(start); d < -time.Millisecond || d > time.Millisecond {
		t.Fatalf("Exchange.Time is %v from the start given, want the start", d)
	}
	y := h.BeginAt(&plugins.Chain{Site: "s"}, plugins.GeoInfo{}, time.Time{})
	defer y.Close()
	if d := time.Since(y.Time()); d < 0 || d > time.Second {
		t.Fatalf("without a start, Exchange.Time is %v ago, want now", d)
	}
}
