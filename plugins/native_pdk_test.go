package plugins_test

import (
	"bytes"
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/plugins"
)

// TestNativeRunsPlainPDKPlugins: a plugin written with go-pdk alone gives
// the same answers and log lines on the native host as on the go-sdk, for
// inputs of every length around the 8-byte word (the kernel's per-word
// functions run in wasm on the native host, see plugins/native/kernel.wat)
// and up to a few KiB, on one instance called again and again (vars and
// blocks from earlier calls must not leak into later ones).
func TestNativeRunsPlainPDKPlugins(t *testing.T) {
	ctx := context.Background()
	echo := wasm["pdkecho"]
	var inputs [][]byte
	for _, n := range []int{0, 1, 2, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1000, 5000} {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*7 + n)
		}
		inputs = append(inputs, b)
	}
	run := func(e plugins.Engine) (outs [][]byte, logs []string) {
		p, err := e.Compile(ctx, echo, plugins.Limits{Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close(ctx)
		in, err := p.Instantiate(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer in.Close(ctx)
		env := &plugins.CallEnv{Site: "s", Config: map[string]string{"suffix": "cfg-value-longer-than-a-word"},
			Log: func(_ slog.Level, msg string) { logs = append(logs, msg) }}
		for round := range 2 {
			for _, input := range inputs {
				out, err := in.Call(ctx, "on_request", input, env)
				if err != nil {
					t.Fatalf("round %d, input of %d bytes: %v", round, len(input), err)
				}
				outs = append(outs, slices.Clone(out))
			}
		}
		return outs, logs
	}
	sdkOut, sdkLogs := run(engine)
	natOut, natLogs := run(nativeEngine(t))
	if len(natOut) != len(sdkOut) {
		t.Fatalf("%d answers on native, %d on the go-sdk", len(natOut), len(sdkOut))
	}
	for i := range sdkOut {
		if !bytes.Equal(natOut[i], sdkOut[i]) {
			t.Errorf("call %d: native answered %q, go-sdk %q", i, natOut[i], sdkOut[i])
		}
	}
	if !slices.Equal(natLogs, sdkLogs) {
		t.Errorf("log lines differ:\nnative %q\ngo-sdk %q", natLogs, sdkLogs)
	}
	// The last answer counts every call (the var lives across calls) and
	// holds the config value read through the PDK.
	last := string(natOut[len(natOut)-1])
	if want := "5000/"; !bytes.Contains(natOut[len(natOut)-1], []byte(want)) ||
		!bytes.HasSuffix(natOut[len(natOut)-1], []byte("/cfg-value-longer-than-a-word/28")) {
		t.Fatalf("last answer %q", last)
	}
}
