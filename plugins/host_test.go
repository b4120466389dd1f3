package plugins_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-edge/meridian/internal/testutil"
	"github.com/meridian-edge/meridian/plugins"
	"github.com/meridian-edge/meridian/plugins/abi"
)

func newHost(t testing.TB, mod func(*plugins.Options)) (*plugins.Host, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	opts := plugins.Options{Engine: engine, KV: plugins.NewMemoryKV(), Registerer: reg,
		// Generous: -race on two shared cores is slow. The loop tests set their own.
		Limits: plugins.Limits{Timeout: 2 * time.Second, MaxPages: 256}}
	if mod != nil {
		mod(&opts)
	}
	h, err := plugins.NewHost(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = h.Close(context.Background())
	})
	return h, reg
}

// deploy adds and activates a plugin, failing the test on error.
func deploy(t testing.TB, h *plugins.Host, site, name, key string) plugins.VersionInfo {
	t.Helper()
	ctx := context.Background()
	v, err := h.Add(ctx, site, name, wasm[key])
	if err != nil {
		t.Fatalf("add %s: %v", key, err)
	}
	if err := h.Activate(ctx, site, name, v.Version); err != nil {
		t.Fatalf("activate %s: %v", key, err)
	}
	return v
}

func req() *abi.Request {
	return &abi.Request{Method: "GET", Path: "/", Host: "example.com", ClientIP: "192.0.2.1", PoP: "fra1", Time: time.Now()}
}

// callOnce runs one on_request of a one-plugin chain.
func callOnce(h *plugins.Host, site, name string, cfg map[string]string) (abi.Actions, error) {
	x := h.Begin(&plugins.Chain{Site: site, Entries: []plugins.Entry{{Plugin: name, Config: cfg}}}, plugins.GeoInfo{})
	defer x.Close()
	var a abi.Actions
	err := x.Request(context.Background(), 0, req(), &a)
	return a, err
}

func counter(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	return testutil.MetricSum(t, reg, name, labels)
}

func TestAddRefusesBadPlugins(t *testing.T) {
	h, _ := newHost(t, func(o *plugins.Options) { o.MaxWasmBytes = 4 << 20 })
	noop := wasm["noop"]
	cases := []struct {
		name string
		wasm []byte
		want string
	}{
		{"import we do not provide", wasm["wat/unknownimport"], "imports extism:host/user.meridian_exec, which Meridian does not provide"},
		{"network import", wasm["wat/network"], "imports extism:host/env.http_request"},
		{"no on_request export", wasm["wat/noexport"], "does not export on_request"},
		{"truncated wasm", noop[:len(noop)/2], "not a valid wasm module"},
		{"not wasm at all", []byte("#!/bin/sh\nrm -rf /\n"), "not a valid wasm module"},
		{"empty", nil, "not a valid wasm module"},
		{"oversized", make([]byte, 5<<20), "over the 4194304 byte limit"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := h.Add(context.Background(), "shop", "p", c.wasm)
			var ve *plugins.ValidationError
			if !errors.As(err, &ve) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want a ValidationError containing %q, got %v", c.want, err)
			}
		})
	}
	if vs := h.Versions("shop", "p"); len(vs) != 0 {
		t.Fatalf("refused uploads must not be stored, got %+v", vs)
	}
	// A good upload after the refusals works and is version 1.
	v, err := h.Add(context.Background(), "shop", "p", noop)
	if err != nil || v.Version != 1 || len(v.SHA256) != 64 || v.OnResponse {
		t.Fatalf("good upload: %+v %v", v, err)
	}
}

func TestHostilePluginsAreContained(t *testing.T) {
	h, reg := newHost(t, func(o *plugins.Options) {
		o.BreakerThreshold = 100
		o.Limits.Timeout = 500 * time.Millisecond // the loop plugin runs into it twice
	})
	deploy(t, h, "good", "noop", "noop")
	cases := []struct {
		plugin string
		kind   plugins.ErrorKind
	}{
		{"loop", plugins.KindTimeout},
		{"membomb", plugins.KindMemory},
		{"trap", plugins.KindTrap},
		{"garbage", plugins.KindBadOutput},
		{"emptyoutput", plugins.KindBadOutput},
		{"badptr", plugins.KindTrap},
		{"pluginerror", plugins.KindPluginError},
	}
	for _, c := range cases {
		t.Run(c.plugin, func(t *testing.T) {
			deploy(t, h, "evil", c.plugin, "wat/"+c.plugin)
			for i := range 2 { // the second call proves the failed instance was replaced
				_, err := callOnce(h, "evil", c.plugin, nil)
				if got := plugins.KindOf(err); err == nil || got != c.kind {
					t.Fatalf("call %d: want kind %s, got %v", i, c.kind, err)
				}
			}
			if n := counter(t, reg, "meridian_plugin_errors_total", map[string]string{"plugin": c.plugin, "kind": string(c.kind)}); n != 2 {
				t.Fatalf("errors_total{kind=%s} = %v, want 2", c.kind, n)
			}
			if idle := counter(t, reg, "meridian_plugin_instances", map[string]string{"plugin": c.plugin, "state": "live"}); idle != 0 {
				t.Fatalf("failed instances must be discarded, %v still live", idle)
			}
			// Another site's plugin on the same host is unaffected.
			if _, err := callOnce(h, "good", "noop", nil); err != nil {
				t.Fatalf("good plugin after %s: %v", c.plugin, err)
			}
		})
	}
	logs := h.Logs("evil")
	if len(logs) != 2*len(cases) || !strings.Contains(logs[0].Msg, "timeout") {
		t.Fatalf("want one kept log line per failure, got %d: %+v", len(logs), logs)
	}
	if len(h.Logs("good")) != 0 {
		t.Fatal("site good must not see site evil's log lines")
	}
}

func TestBreakerOpensAfterRepeatedFailures(t *testing.T) {
	now := time.Unix(1000, 0)
	h, reg := newHost(t, func(o *plugins.Options) {
		o.BreakerThreshold = 3
		o.BreakerCooldown = time.Minute
		o.Now = func() time.Time { return now }
	})
	deploy(t, h, "s", "trap", "wat/trap")
	for range 3 {
		if _, err := callOnce(h, "s", "trap", nil); plugins.KindOf(err) != plugins.KindTrap {
			t.Fatalf("want trap, got %v", err)
		}
	}
	if _, err := callOnce(h, "s", "trap", nil); plugins.KindOf(err) != plugins.KindBreakerOpen {
		t.Fatalf("4th call: want breaker_open, got %v", err)
	}
	if n := counter(t, reg, "meridian_plugin_calls_total", map[string]string{"plugin": "trap"}); n != 3 {
		t.Fatalf("an open breaker must not call the plugin: %v calls", n)
	}
	now = now.Add(2 * time.Minute) // cooldown over: one trial call reaches the plugin
	if _, err := callOnce(h, "s", "trap", nil); plugins.KindOf(err) != plugins.KindTrap {
		t.Fatalf("trial call: want trap, got %v", err)
	}
	if _, err := callOnce(h, "s", "trap", nil); plugins.KindOf(err) != plugins.KindBreakerOpen {
		t.Fatalf("after a failed trial: want breaker_open, got %v", err)
	}
}

func TestActivateRollbackAndVersions(t *testing.T) {
	h, _ := newHost(t, nil)
	ctx := context.Background()
	v1 := deploy(t, h, "s", "p", "wat/continue")
	v2 := deploy(t, h, "s", "p", "headers")
	if a, ok := h.Active("s", "p"); !ok || a.Version != v2.Version {
		t.Fatalf("active = %+v", a)
	}
	a, err := callOnce(h, "s", "p", nil)
	if err != nil || len(a.SetRequestHeaders) != 1 || a.SetRequestHeaders[0].Value != "fra1" {
		t.Fatalf("v2 answer %+v %v", a, err)
	}
	back, err := h.Rollback(ctx, "s", "p")
	if err != nil || back.Version != v1.Version || !back.Active {
		t.Fatalf("rollback: %+v %v", back, err)
	}
	if a, err := callOnce(h, "s", "p", nil); err != nil || len(a.SetRequestHeaders) != 0 {
		t.Fatalf("after rollback the continue plugin must answer: %+v %v", a, err)
	}
	// Re-adding known bytes returns the stored version.
	again, err := h.Add(ctx, "s", "p", wasm["headers"])
	if err != nil || again.Version != v2.Version {
		t.Fatalf("re-add: %+v %v", again, err)
	}
	vs := h.Versions("s", "p")
	if len(vs) != 2 || !vs[0].Active || vs[1].Active {
		t.Fatalf("versions: %+v", vs)
	}
	if err := h.Activate(ctx, "s", "p", 9); err == nil || !strings.Contains(err.Error(), "no version 9") {
		t.Fatalf("activate unknown version: %v", err)
	}
	if _, err := h.Rollback(ctx, "s", "nope"); err == nil || !strings.Contains(err.Error(), "upload it first") {
		t.Fatalf("rollback unknown plugin: %v", err)
	}
	if err := h.Remove("s", "p"); err != nil {
		t.Fatal(err)
	}
	if _, err := callOnce(h, "s", "p", nil); plugins.KindOf(err) != plugins.KindInstance {
		t.Fatalf("a removed plugin must fail as instance error, got %v", err)
	}
	if err := h.Remove("s", "p"); err == nil {
		t.Fatal("removing twice must fail")
	}
}

// TestSwapKeepsInFlightRequests activates a new version between on_request
// and on_response of a request: that request finishes on the old instance,
// new requests use the new version, and the old version is freed after.
func TestSwapKeepsInFlightRequests(t *testing.T) {
	h, reg := newHost(t, nil)
	ctx := context.Background()
	deploy(t, h, "s", "ab", "absplit")
	chain := &plugins.Chain{Site: "s", Entries: []plugins.Entry{{Plugin: "ab", Config: map[string]string{"percent_b": "100"}}}}
	x := h.Begin(chain, plugins.GeoInfo{})
	var a abi.Actions
	if err := x.Request(ctx, 0, req(), &a); err != nil || a.Origin != "b" {
		t.Fatalf("on_request: %+v %v", a, err)
	}
	deploy(t, h, "s", "ab", "headers") // v2 takes traffic now
	if n := counter(t, reg, "meridian_plugin_calls_total", map[string]string{"version": "1"}); n != 1 {
		t.Fatalf("version 1 must live while its request is in flight, calls=%v", n)
	}
	ran, err := x.Response(ctx, 0, &abi.Response{Status: 200}, &a)
	if err != nil || !ran || len(a.SetResponseHeaders) == 0 || !strings.HasPrefix(a.SetResponseHeaders[0].Value, "mrd_ab=b;") {
		t.Fatalf("on_response on the old version: ran=%v %+v %v", ran, a, err)
	}
	x.Close()
	if n := counter(t, reg, "meridian_plugin_calls_total", map[string]string{"version": "1"}); n != 0 {
		t.Fatalf("version 1 must be freed (series deleted) after its last request, calls=%v", n)
	}
	if a, err := callOnce(h, "s", "ab", nil); err != nil || len(a.SetRequestHeaders) != 1 || a.SetRequestHeaders[0].Name != "x-meridian-pop" {
		t.Fatalf("new requests must run v2: %+v %v", a, err)
	}
}

func TestKVIsPerSite(t *testing.T) {
	kv := plugins.NewMemoryKV()
	h, _ := newHost(t, func(o *plugins.Options) { o.KV = kv })
	deploy(t, h, "a", "rl", "ratelimit")
	deploy(t, h, "b", "rl", "ratelimit")
	cfg := map[string]string{"limit": "2"}
	for i := range 3 {
		a, err := callOnce(h, "a", "rl", cfg)
		if err != nil || a.Respond != (i == 2) {
			t.Fatalf("site a call %d: respond=%v %v", i, a.Respond, err)
		}
	}
	if a, err := callOnce(h, "b", "rl", cfg); err != nil || a.Respond {
		t.Fatalf("site b must have its own counters: %+v %v", a, err)
	}
}

func TestInputLimit(t *testing.T) {
	h, reg := newHost(t, func(o *plugins.Options) { o.Limits.MaxInput = 1024 })
	deploy(t, h, "s", "noop", "noop")
	r := req()
	r.Headers = []abi.Header{{Name: "cookie", Value: strings.Repeat("c", 2000)}}
	x := h.Begin(&plugins.Chain{Site: "s", Entries: []plugins.Entry{{Plugin: "noop"}}}, plugins.GeoInfo{})
	defer x.Close()
	var a abi.Actions
	if err := x.Request(context.Background(), 0, r, &a); plugins.KindOf(err) != plugins.KindInput || !strings.Contains(err.Error(), "limit 1024") {
		t.Fatalf("want input error, got %v", err)
	}
	if n := counter(t, reg, "meridian_plugin_errors_total", map[string]string{"kind": "input"}); n != 1 {
		t.Fatalf("input errors = %v", n)
	}
}
