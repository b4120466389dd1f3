// Package plugintest builds plugins from source for tests: the Go examples
// (standard Go, GOOS=wasip1 -buildmode=c-shared), the hostile WAT plugins
// (Debian's wabt: wat2wasm) and the AssemblyScript example and probes
// (npm). It owns no runtime behaviour and must only be imported by tests
// and benchmarks.
package plugintest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"
)

// Dir returns the plugins/ directory of this source tree.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// GoExamples lists the Go plugins under plugins/examples: the five
// examples, the no-op and the two probes the tests use.
func GoExamples() []string {
	return []string{"noop", "headers", "bearerauth", "geoblock", "absplit", "ratelimit", "sandboxprobe", "allocprobe", "kitprobe", "pdkecho"}
}

// BuildGo builds the Go example plugins into outDir and returns their wasm
// bytes by name. It takes seconds the first time and well under a second
// once the Go build cache is warm.
func BuildGo(ctx context.Context, outDir string, names ...string) (map[string][]byte, error) {
	if len(names) == 0 {
		names = GoExamples()
	}
	out := make(map[string][]byte, len(names))
	for _, n := range names {
		b, err := buildGo(ctx, filepath.Join(outDir, n+".wasm"), n, "-buildmode=c-shared")
		if err != nil {
			return nil, fmt.Errorf("build example %s: %w", n, err)
		}
		out[n] = b
	}
	return out, nil
}

// BuildGoCommand builds plugins/examples/<name> the way a plugin author who
// forgot -buildmode=c-shared does: a WASI command exporting _start, which
// the host must refuse at upload. The file is outDir/<name>-command.wasm.
func BuildGoCommand(ctx context.Context, outDir, name string) ([]byte, error) {
	b, err := buildGo(ctx, filepath.Join(outDir, name+"-command.wasm"), name)
	if err != nil {
		return nil, fmt.Errorf("build %s without -buildmode=c-shared: %w", name, err)
	}
	return b, nil
}

// buildGo runs go build for wasip1 on plugins/examples/<name> with the
// extra flags, writes dst and returns its bytes.
func buildGo(ctx context.Context, dst, name string, flags ...string) ([]byte, error) {
	args := append(append([]string{"build"}, flags...), "-o", dst, "./"+name)
	if err := run(ctx, filepath.Join(Dir(), "examples"), []string{"GOOS=wasip1", "GOARCH=wasm", "GOWORK=off", "CGO_ENABLED=0"}, "go", args...); err != nil {
		return nil, err
	}
	return os.ReadFile(dst)
}

// CacheDir is a wazero compilation cache shared by test runs, like GOCACHE:
// compiling a Go-built plugin takes seconds (tens of seconds under -race)
// and the cache brings it to a fraction of a second. wazero keys entries by
// its version and the CPU, so sharing is safe.
func CacheDir() string {
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	return filepath.Join(base, "meridian", "wazero-test-cache")
}

// WAT compiles plugins/testdata/hostile/<name>.wat with wat2wasm
// (apt-get install wabt).
func WAT(ctx context.Context, outDir, name string) ([]byte, error) {
	src := filepath.Join(Dir(), "testdata", "hostile", name+".wat")
	dst := filepath.Join(outDir, name+".wasm")
	if err := run(ctx, outDir, nil, "wat2wasm", src, "-o", dst); err != nil {
		return nil, fmt.Errorf("wat2wasm %s (install Debian package wabt): %w", name, err)
	}
	return os.ReadFile(dst)
}

// WATSource compiles the WAT text src, a test's own plugin, with wat2wasm
// (apt-get install wabt), in outDir under name.
func WATSource(ctx context.Context, outDir, name, src string) ([]byte, error) {
	in, dst := filepath.Join(outDir, name+".wat"), filepath.Join(outDir, name+".wasm")
	if err := os.WriteFile(in, []byte(src), 0o644); err != nil {
		return nil, err
	}
	if err := run(ctx, outDir, nil, "wat2wasm", in, "-o", dst); err != nil {
		return nil, fmt.Errorf("wat2wasm %s (install Debian package wabt): %w", name, err)
	}
	return os.ReadFile(dst)
}

// AssemblyScript builds plugins/examples/as-headers with its build.sh
// (needs node and npm; the script installs the pinned packages) and returns
// the wasm.
func AssemblyScript(ctx context.Context, outDir string) ([]byte, error) {
	dst := filepath.Join(outDir, "as-headers.wasm")
	dir := filepath.Join(Dir(), "examples", "as-headers")
	if err := run(ctx, dir, nil, "sh", "build.sh", dst); err != nil {
		return nil, fmt.Errorf("build AssemblyScript example: %w", err)
	}
	return os.ReadFile(dst)
}

// AssemblyScriptProbe builds plugins/testdata/as/<name>.ts, a test probe
// that imports nothing, with the AssemblyScript example's pinned compiler
// (build.sh installs it on first use) and returns the wasm.
func AssemblyScriptProbe(ctx context.Context, outDir, name string) ([]byte, error) {
	src := filepath.Join(Dir(), "testdata", "as", name+".ts")
	dst := filepath.Join(outDir, "as-"+name+".wasm")
	dir := filepath.Join(Dir(), "examples", "as-headers")
	if err := run(ctx, dir, nil, "sh", "build.sh", dst, src); err != nil {
		return nil, fmt.Errorf("build AssemblyScript probe %s: %w", name, err)
	}
	return os.ReadFile(dst)
}

func run(ctx context.Context, dir string, env []string, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %v: %w\n%s", name, args, err, out.String())
	}
	return nil
}
