package plugins_test

import (
	"strconv"
	"testing"
	"time"
)

// TestSandbox: through WASI a plugin reads no host file, sees no directory,
// no environment and no real clock (only the request time the host grants).
func TestSandbox(t *testing.T) {
	h, _ := newHost(t, nil)
	deploy(t, h, "s", "probe", "sandboxprobe")
	a, err := callOnce(h, "s", "probe", nil)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, hd := range a.SetRequestHeaders {
		got[hd.Name] = hd.Value
	}
	if got["x-probe-file"] != "error" || got["x-probe-dir"] != "error" || got["x-probe-env"] != "0" {
		t.Fatalf("plugin reached the host: %v", got)
	}
	clock, err := strconv.ParseInt(got["x-probe-clock"], 10, 64)
	if err != nil {
		t.Fatalf("clock %q: %v", got["x-probe-clock"], err)
	}
	if d := time.Since(time.Unix(clock, 0)); d < 24*time.Hour && d > -24*time.Hour {
		t.Fatalf("plugin saw the real time %v", time.Unix(clock, 0))
	}
}
