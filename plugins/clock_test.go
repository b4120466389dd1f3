package plugins_test

import (
	"strings"
	"testing"

	"github.com/meridian-edge/meridian/plugins"
)

// TestGoPluginMemoryStaysBounded: a Go plugin that makes 1 MiB of garbage
// per request keeps serving on one instance, on both engines. With wazero's
// default fake clock (a millisecond per reading) the plugin's collector
// stopped collecting after about 2000 clock readings, and this plugin ran
// out of its 16 MiB and trapped at its 329th request on either engine;
// WithVirtualClock fixes it.
func TestGoPluginMemoryStaysBounded(t *testing.T) {
	for _, eng := range []struct {
		name string
		e    plugins.Engine
	}{{"sdk", engine}, {"native", nativeEngine(t)}} {
		t.Run(eng.name, func(t *testing.T) {
			h, _ := newHost(t, func(o *plugins.Options) {
				o.Engine = eng.e
				o.MaxInstances, o.IdleInstances, o.WarmInstances = 1, 1, 1
			})
			deploy(t, h, "s", "alloc", "allocprobe")
			for i := range 1500 {
				if _, err := callOnce(h, "s", "alloc", map[string]string{"kib": "1024"}); err != nil {
					t.Fatalf("request %d (1 MiB of garbage each): %v", i+1, err)
				}
			}
		})
	}
}

// TestGoPluginErrorMessage: the message of an error a Go plugin returns
// reaches the host whole, whatever its length (the kit writes blocks of
// under 8 bytes byte by byte and longer ones in words), on both engines.
func TestGoPluginErrorMessage(t *testing.T) {
	for _, eng := range []struct {
		name string
		e    plugins.Engine
	}{{"sdk", engine}, {"native", nativeEngine(t)}} {
		t.Run(eng.name, func(t *testing.T) {
			h, _ := newHost(t, func(o *plugins.Options) { o.Engine = eng.e })
			deploy(t, h, "s", "p", "allocprobe")
			for _, msg := range []string{"no", "exactly8", "a longer message, 29 bytes.."} {
				_, err := callOnce(h, "s", "p", map[string]string{"kib": "1", "fail": msg})
				if plugins.KindOf(err) != plugins.KindPluginError || !strings.HasSuffix(err.Error(), ": "+msg) {
					t.Fatalf("plugin failing with %q: got %v", msg, err)
				}
			}
		})
	}
}
