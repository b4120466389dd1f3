// Package plugintest builds plugins from source for tests: the Go examples
// (standard Go, GOOS=wasip1 -buildmode=c-shared), the hostile WAT plugins
// (Debian's wabt: wat2wasm) and the AssemblyScript example (npm). It owns
// no runtime behaviour and must only be imported by tests and benchmarks.
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
	src := filepath.Join(Dir(), "examples")
	out := make(map[string][]byte, len(names))
	for _, n := range names {
		dst := filepath.Join(outDir, n+".wasm")
		if err := run(ctx, src, []string{"GOOS=wasip1", "GOARCH=wasm", "GOWORK=off", "CGO_ENABLED=0"},
			"go", "build", "-buildmode=c-shared", "-o", dst, "./"+n); err != nil {
			return nil, fmt.Errorf("build example %s: %w", n, err)
		}
		b, err := os.ReadFile(dst)
		if err != nil {
			return nil, err
		}
		out[n] = b
	}
	return out, nil
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
