package plugins_test

import (
	"bufio"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/meridian-edge/meridian/internal/testutil"
	"github.com/meridian-edge/meridian/plugins"
	"github.com/meridian-edge/meridian/plugins/rollout"
)

// duplicateKey returns a key that a JSON object holds twice ("" for none).
func duplicateKey(t *testing.T, line string) string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(line))
	if _, err := dec.Token(); err != nil { // {
		t.Fatalf("log line is not JSON: %v: %s", err, line)
	}
	seen := map[string]bool{}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		key := k.(string)
		if seen[key] {
			return key
		}
		seen[key] = true
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
	}
	return ""
}

// TestHostLogLinesNameWhatUsersKnow: a Host that keeps each deployed
// version in a slot of its own (rollout's "NAME@VERSION") logs the plugin
// and the deployment version the site owner knows, names the slot as such,
// and writes JSON lines without a duplicate key (the circuit breaker's line
// once had two "msg"). Uploads are validated without a slot or a line.
func TestHostLogLinesNameWhatUsersKnow(t *testing.T) {
	var buf testutil.SyncBuffer
	h, _ := newHost(t, func(o *plugins.Options) {
		o.MetricLabels = rollout.MetricLabels
		o.Logger = slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	if err := h.Validate(t.Context(), "shop", wasm["allocprobe"]); err != nil {
		t.Fatal(err)
	}
	if err := h.Validate(t.Context(), "shop", wasm["wat/noexport"]); err == nil {
		t.Fatal("Validate accepted a module without on_request")
	}
	deploy(t, h, "shop", "probe@7", "allocprobe")
	for range 5 {
		_ = callChain(h, "shop", "probe@7", true, probeBoom)
	}
	seen := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(buf.String()))
	for sc.Scan() {
		line := sc.Text()
		if k := duplicateKey(t, line); k != "" {
			t.Errorf("key %q twice in %s", k, line)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatal(err)
		}
		msg, _ := m["msg"].(string)
		seen[msg] = true
		if m["plugin"] != "probe" || m["version"] != "7" || m["slot"] != "probe@7" {
			t.Errorf("%q names plugin %v version %v slot %v, want probe, 7, probe@7: %s", msg, m["plugin"], m["version"], m["slot"], line)
		}
		if msg == "plugin circuit breaker" && !strings.Contains(m["detail"].(string), "circuit breaker opened") {
			t.Errorf("breaker line without its detail: %s", line)
		}
	}
	for _, want := range []string{"plugin version added", "plugin version active", "plugin call failed", "plugin circuit breaker"} {
		if !seen[want] {
			t.Errorf("no %q line in:\n%s", want, buf.String())
		}
	}
}
