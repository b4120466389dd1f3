package plugins_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/plugins"
	"github.com/meridian-edge/meridian/plugins/plugintest"
)

// pdkEchoSource is an ordinary Extism plugin written with go-pdk alone (no
// kit): it reads its whole input, a config value and a var through the
// PDK, logs, keeps a call counter in a var, and answers one request header
// summing all it saw. The PDK moves bytes with input_load_u64/u8,
// load_u64/u8 and store_u64/u8 (partial words byte by byte), and finds
// blocks with length: every per-word path of a kernel.
const pdkEchoSource = `package main

import (
	"strconv"

	"github.com/extism/go-pdk"
)

//go:wasmexport on_request
func onRequest() int32 {
	in := pdk.Input()
	suffix, _ := pdk.GetConfig("suffix")
	n := 0
	if b := pdk.GetVar("calls"); b != nil {
		n, _ = strconv.Atoi(string(b))
	}
	n++
	pdk.SetVar("calls", []byte(strconv.Itoa(n)))
	pdk.Log(pdk.LogInfo, "seen "+strconv.Itoa(len(in))+" bytes")
	sum := 0
	for i, c := range in {
		sum += (i + 1) * int(c)
	}
	v := strconv.Itoa(len(in)) + "/" + strconv.Itoa(sum) + "/" + suffix + "/" + strconv.Itoa(n)
	name := "x-echo"
	l := 1 + len(name) + len(v)
	out := []byte{1, 0x01, byte(l), byte(l >> 8), byte(len(name))}
	out = append(out, name...)
	out = append(out, v...)
	pdk.Output(out)
	return 0
}

func main() {}
`

// buildPDKEcho builds pdkEchoSource with the examples' pinned go-pdk.
func buildPDKEcho(t *testing.T) []byte {
	t.Helper()
	dir := t.TempDir()
	sum, err := os.ReadFile(filepath.Join(plugintest.Dir(), "examples", "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	gomod := "module pdkecho\n\ngo 1.26.0\n\nrequire github.com/extism/go-pdk v1.1.3\n"
	for name, b := range map[string][]byte{"go.mod": []byte(gomod), "go.sum": sum, "main.go": []byte(pdkEchoSource)} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(dir, "pdkecho.wasm")
	cmd := exec.CommandContext(t.Context(), "go", "build", "-buildmode=c-shared", "-o", out, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "GOWORK=off", "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the go-pdk plugin: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestNativeRunsPlainPDKPlugins: a plugin written with go-pdk alone gives
// the same answers and log lines on the native host as on the go-sdk, for
// inputs of every length around the 8-byte word (the kernel's per-word
// functions run in wasm on the native host, see plugins/native/kernel.wat)
// and up to a few KiB, on one instance called again and again (vars and
// blocks from earlier calls must not leak into later ones).
func TestNativeRunsPlainPDKPlugins(t *testing.T) {
	ctx := context.Background()
	wasm := buildPDKEcho(t)
	var inputs [][]byte
	for _, n := range []int{0, 1, 2, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1000, 5000} {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*7 + n)
		}
		inputs = append(inputs, b)
	}
	run := func(e plugins.Engine) (outs [][]byte, logs []string) {
		p, err := e.Compile(ctx, wasm, plugins.Limits{Timeout: time.Second})
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
