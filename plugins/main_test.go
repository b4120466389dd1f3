package plugins_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/meridian-edge/meridian/plugins"
	"github.com/meridian-edge/meridian/plugins/plugintest"
)

// engine is shared by the tests so its compilation cache is too, as in a PoP.
var engine *plugins.SDKEngine

// wasm holds every test plugin, built once per test binary from source.
var wasm = map[string][]byte{}

// hostileNames are the WAT plugins under testdata/hostile.
var hostileNames = []string{"loop", "membomb", "trap", "garbage", "emptyoutput", "badptr",
	"unknownimport", "network", "noexport", "continue", "pluginerror",
	"badsig", "badsigresp", "noresult", "command", "stderrtrap", "growtrap", "bigalloc"}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "meridian-plugins-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	built, err := plugintest.BuildGo(ctx, dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for k, v := range built {
		wasm[k] = v
	}
	// panicprobe (how a failing Go plugin is explained), built as the
	// c-shared plugin and as the command-mode module the host refuses.
	probe, err := plugintest.BuildGo(ctx, dir, "panicprobe")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	wasm["panicprobe"] = probe["panicprobe"]
	if wasm["panicprobe-command"], err = plugintest.BuildGoCommand(ctx, dir, "panicprobe"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for _, n := range hostileNames {
		b, err := plugintest.WAT(ctx, dir, n)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		wasm["wat/"+n] = b
	}
	engine, err = plugins.NewSDKEngine(plugins.SDKOptions{CacheDir: plugintest.CacheDir()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer engine.Close(ctx)
	return m.Run()
}
