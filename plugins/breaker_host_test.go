package plugins_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/plugins"
	"github.com/meridian-edge/meridian/plugins/abi"
)

// The allocprobe plugin fails with config "fail"'s message: a plugin that
// fails on some requests only (think: panics on /boom, serves /echo).
var (
	probeOK   = map[string]string{"kib": "1"}
	probeBoom = map[string]string{"kib": "1", "fail": "boom"}
)

// callChain runs one on_request of a one-plugin chain with the site's
// failure policy.
func callChain(h *plugins.Host, site, name string, failClosed bool, cfg map[string]string) error {
	x := h.Begin(&plugins.Chain{Site: site, FailClosed: failClosed, Entries: []plugins.Entry{{Plugin: name, Config: cfg}}}, plugins.GeoInfo{})
	defer x.Close()
	var a abi.Actions
	return x.Request(context.Background(), 0, req(), &a)
}

// breakerLines are the site's plugin log lines about the circuit breaker.
func breakerLines(h *plugins.Host, site string) []plugins.LogLine {
	var out []plugins.LogLine
	for _, l := range h.Logs(site) {
		if strings.Contains(l.Msg, "circuit breaker") {
			out = append(out, l)
		}
	}
	return out
}

// A real plugin that fails on one request in five, and on a burst of ten
// requests in a row, keeps serving the others with the default options:
// one attacker-reachable failure path is not a site-wide outage.
func TestBreakerRequestDependentFailuresKeepPluginRunning(t *testing.T) {
	// An injected clock, 10 ms per request, so a slow machine cannot
	// spread the calls over more than one window.
	var mu sync.Mutex
	now := time.Unix(1_700_000_000, 0)
	h, reg := newHost(t, func(o *plugins.Options) {
		o.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	})
	deploy(t, h, "shop", "p", "allocprobe")
	fails := 0
	for i := range 200 {
		mu.Lock()
		now = now.Add(10 * time.Millisecond)
		mu.Unlock()
		cfg := probeOK
		if i%5 == 4 || (i >= 100 && i < 110) {
			cfg = probeBoom
		}
		err := callChain(h, "shop", "p", true, cfg)
		switch {
		case plugins.KindOf(err) == plugins.KindBreakerOpen:
			t.Fatalf("call %d: the breaker opened (%d failures so far): %v", i, fails, err)
		case cfg["fail"] != "" && plugins.KindOf(err) != plugins.KindPluginError:
			t.Fatalf("call %d: want the plugin's error, got %v", i, err)
		case cfg["fail"] == "" && err != nil:
			t.Fatalf("call %d: a good request failed: %v", i, err)
		}
		if err != nil {
			fails++
		}
	}
	if n := counter(t, reg, "meridian_plugin_errors_total", map[string]string{"plugin": "p", "kind": "breaker_open"}); n != 0 {
		t.Fatalf("errors_total{kind=breaker_open} = %v, want 0", n)
	}
	if l := breakerLines(h, "shop"); len(l) != 0 {
		t.Fatalf("no breaker transition expected, the log says %+v", l)
	}
	if fails != 48 { // 40 one-in-five plus the 8 of the burst not already on a fifth
		t.Fatalf("%d calls failed, want 48", fails)
	}
}

// A real plugin that fails every call opens its breaker after 5 calls; the
// site owner's log says so, why and for how long, and says when the trial
// call after the cooldown failed or closed it again. Fail open and fail
// closed each get their own wording.
func TestBreakerTransitionsAreInTheSiteLog(t *testing.T) {
	for _, failClosed := range []bool{false, true} {
		policy := "skipped (fail open)"
		if failClosed {
			policy = "answered 503 (fail closed)"
		}
		t.Run(policy, func(t *testing.T) {
			var mu sync.Mutex
			now := time.Unix(1_700_000_000, 0)
			h, reg := newHost(t, func(o *plugins.Options) {
				o.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
			})
			advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
			v := deploy(t, h, "shop", "p", "allocprobe")
			for i := range 5 {
				if err := callChain(h, "shop", "p", failClosed, probeBoom); plugins.KindOf(err) != plugins.KindPluginError {
					t.Fatalf("call %d: want the plugin's error, got %v", i+1, err)
				}
			}
			// Open: even a good request is refused without running the plugin.
			err := callChain(h, "shop", "p", failClosed, probeOK)
			if plugins.KindOf(err) != plugins.KindBreakerOpen || !strings.Contains(err.Error(), "plugin logs") {
				t.Fatalf("6th call: want breaker_open pointing at the plugin logs, got %v", err)
			}
			if n := counter(t, reg, "meridian_plugin_calls_total", map[string]string{"plugin": "p"}); n != 5 {
				t.Fatalf("an open breaker must not call the plugin: %v calls", n)
			}
			lines := breakerLines(h, "shop")
			if len(lines) != 1 {
				t.Fatalf("want one breaker line, got %+v", lines)
			}
			l := lines[0]
			want := "host: circuit breaker opened: 5 calls in the last 10s failed and none succeeded; requests are " + policy +
				" without running the plugin for 10s, then one trial call decides"
			if l.Msg != want || l.Level != slog.LevelWarn || l.Plugin != "p" || l.Version != v.Version || l.Site != "shop" || !l.Time.Equal(now) {
				t.Fatalf("opened line = %+v\nwant Msg %q, warn, plugin p version %d", l, want, v.Version)
			}
			// The line comes after the failure that opened it.
			all := h.Logs("shop")
			if all[len(all)-1] != l || !strings.Contains(all[len(all)-2].Msg, "boom") {
				t.Fatalf("want the 5th failure then the breaker line last, got %+v", all)
			}

			advance(11 * time.Second) // cooldown over: the trial call fails
			if err := callChain(h, "shop", "p", failClosed, probeBoom); plugins.KindOf(err) != plugins.KindPluginError {
				t.Fatalf("trial call: want the plugin's error, got %v", err)
			}
			if err := callChain(h, "shop", "p", failClosed, probeOK); plugins.KindOf(err) != plugins.KindBreakerOpen {
				t.Fatalf("after a failed trial: want breaker_open, got %v", err)
			}
			lines = breakerLines(h, "shop")
			want = "host: circuit breaker stays open: the trial call failed; requests are " + policy + " without running the plugin for another 10s"
			if len(lines) != 2 || lines[1].Msg != want || lines[1].Level != slog.LevelWarn {
				t.Fatalf("after a failed trial: want %q, got %+v", want, lines)
			}

			advance(11 * time.Second) // the next trial succeeds
			if err := callChain(h, "shop", "p", failClosed, probeOK); err != nil {
				t.Fatalf("trial call: %v", err)
			}
			lines = breakerLines(h, "shop")
			want = "host: circuit breaker closed: the trial call succeeded; the plugin runs on every request again"
			if len(lines) != 3 || lines[2].Msg != want || lines[2].Level != slog.LevelInfo || lines[2].Version != v.Version {
				t.Fatalf("after a good trial: want %q, got %+v", want, lines)
			}
			if err := callChain(h, "shop", "p", failClosed, probeOK); err != nil {
				t.Fatalf("closed breaker: %v", err)
			}
		})
	}
}
