package rollout_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/internal/natsembed"
	ntestutil "github.com/meridian-edge/meridian/internal/testutil"
	"github.com/meridian-edge/meridian/plugins"
	"github.com/meridian-edge/meridian/plugins/rollout/rollouttest"
)

// edgeGet sends one request to p's edge: status, header and body.
func edgeGet(t *testing.T, p *rollouttest.PoP) (int, http.Header, string) {
	t.Helper()
	resp, err := http.Get(p.Edge.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

// gatedEngine compiles with Engine once open is closed.
type gatedEngine struct {
	plugins.Engine
	open chan struct{}
}

func (g *gatedEngine) Compile(ctx context.Context, wasm []byte, lim plugins.Limits) (plugins.Program, error) {
	select {
	case <-g.open:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return g.Engine.Compile(ctx, wasm, lim)
}

// gauge is the value of an unlabelled gauge on p's registry.
func gauge(t *testing.T, p *rollouttest.PoP, name string) float64 {
	t.Helper()
	mfs, err := p.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// setChain replaces site shop's chain through p's admin API.
func setChain(t *testing.T, p *rollouttest.PoP, body string) {
	t.Helper()
	if r := call(t, http.MethodPut, p.Admin.URL+"/admin/plugins/shop/chain", shop, []byte(body)); r.status != http.StatusOK {
		t.Fatalf("set chain: %d %s", r.status, r.body)
	}
}

// notLoaded is how the fail-closed 503 of a plugin not loaded yet begins.
const notLoaded = `site "shop" runs a plugin that this PoP has not loaded yet`

// TestRestartNeverServesWithoutItsPlugin: a PoP restarted with a plugin
// deployed in a fail-closed chain answers no request without it, from the
// first request its edge accepts: once it waits for its plugins before
// serving as a PoP does (WaitReady), every answer ran the plugin; an edge
// opened at once (NoWait) answers 503 until the plugin is active, never the
// origin's page without it.
func TestRestartNeverServesWithoutItsPlugin(t *testing.T) {
	srv := ntestutil.StartNATS(t)
	cfg := rollouttest.Config{ID: "ams", NATSURL: srv.ClientURL(), DataDir: t.TempDir(), CacheDir: t.TempDir()}
	p := rollouttest.Start(t, engine, cfg)
	mustPush(t, p.Admin.URL, shop, site, "tag", rollouttest.VersionWAT(t, "1"), nil)
	setChain(t, p, `{"fail_closed":true,"entries":[{"plugin":"tag"}]}`)
	eventually(t, 30*time.Second, "v1 answering in a fail-closed chain", func() bool {
		c := p.Manager.Chain(site)
		return c != nil && c.FailClosed && answersWith(t, p, "1")
	})
	p.Stop()

	for _, noWait := range []bool{false, true} {
		c := cfg
		c.NoWait = noWait
		// Compiling is held until the first answers are in (NoWait), or
		// for a moment (the PoP waits for it), so that the requests
		// surely come while the plugin is not active yet.
		gate := &gatedEngine{Engine: engine, open: make(chan struct{})}
		if !noWait {
			time.AfterFunc(300*time.Millisecond, func() { close(gate.open) })
		}
		p := rollouttest.Start(t, gate, c)
		ran, refused := 0, 0
		if noWait {
			for i := range 10 {
				if code, h, body := edgeGet(t, p); code != http.StatusServiceUnavailable || !strings.Contains(body, notLoaded) {
					t.Fatalf("request %d while the plugin compiles: %d x-v=%q %q, want the fail-closed 503", i, code, h.Get("x-v"), body)
				}
				refused++
			}
			close(gate.open)
		}
		deadline := time.Now().Add(30 * time.Second)
		for ran < 20 {
			if time.Now().After(deadline) {
				t.Fatalf("NoWait %v: the plugin is not answering after 30s (%d answers with it, %d 503s)", noWait, ran, refused)
			}
			code, h, body := edgeGet(t, p)
			switch {
			case code == http.StatusOK && h.Get("x-v") == "1":
				ran++
			case noWait && code == http.StatusServiceUnavailable && strings.Contains(body, notLoaded):
				refused++
			default:
				t.Fatalf("NoWait %v: answer %d after %d with the plugin: %d x-v=%q %q: served without the site's plugin",
					noWait, ran+refused+1, ran, code, h.Get("x-v"), body)
			}
		}
		t.Logf("NoWait %v: %d 503s before the plugin was active", noWait, refused)
		p.Stop()
	}
}

// TestRestartWithoutThePluginBytes: a PoP restarted while JetStream is
// down and without its copy of a deployed plugin's bytes cannot run it. A
// fail-closed site answers 503 (saying why) instead of serving without it,
// the site owner's logs and a gauge say so; a fail-open site is served
// without it. Once JetStream is back the plugin runs again.
func TestRestartWithoutThePluginBytes(t *testing.T) {
	for _, failClosed := range []bool{true, false} {
		name := "fail open"
		if failClosed {
			name = "fail closed"
		}
		t.Run(name, func(t *testing.T) {
			natsDir := t.TempDir()
			srv, err := natsembed.Start(natsembed.Options{Addr: "127.0.0.1:0", StoreDir: natsDir, ServerName: "n1"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(srv.Shutdown)
			addr := strings.TrimPrefix(srv.ClientURL(), "nats://")
			cfg := rollouttest.Config{ID: "ams", NATSURL: srv.ClientURL(), DataDir: t.TempDir(), CacheDir: t.TempDir()}
			p := rollouttest.Start(t, engine, cfg)
			mustPush(t, p.Admin.URL, shop, site, "tag", rollouttest.VersionWAT(t, "1"), nil)
			if failClosed {
				setChain(t, p, `{"fail_closed":true,"entries":[{"plugin":"tag"}]}`)
			}
			eventually(t, 30*time.Second, "v1 answering", func() bool {
				c := p.Manager.Chain(site)
				return c != nil && c.FailClosed == failClosed && answersWith(t, p, "1")
			})
			p.Stop()
			srv.Shutdown()
			if err := os.RemoveAll(filepath.Join(cfg.CacheDir, "blobs")); err != nil {
				t.Fatal(err)
			}

			p = rollouttest.Start(t, engine, cfg)
			code, h, body := edgeGet(t, p)
			if failClosed {
				if code != http.StatusServiceUnavailable || h.Get("x-v") != "" || !strings.Contains(body, notLoaded) ||
					!strings.Contains(body, "meridian plugin logs --site shop") {
					t.Fatalf("fail closed without the plugin's bytes: %d x-v=%q %q, want the 503 saying the plugin is not loaded", code, h.Get("x-v"), body)
				}
			} else if code != http.StatusOK || h.Get("x-v") != "" || !strings.HasPrefix(body, "origin of ams") {
				t.Fatalf("fail open without the plugin's bytes: %d x-v=%q %q, want the origin's page", code, h.Get("x-v"), body)
			}
			if g := gauge(t, p, "meridian_plugin_deployments_missing"); g != 1 {
				t.Errorf("meridian_plugin_deployments_missing = %v, want 1", g)
			}
			said := false
			for _, l := range p.Host.Logs("shop") {
				if l.Plugin == "tag@1" && strings.Contains(l.Msg, "could not load the plugin when it started") && strings.Contains(l.Msg, "no copy") {
					said = true
				}
			}
			if !said {
				t.Errorf("the site's plugin logs do not say the plugin could not be loaded: %+v", p.Host.Logs("shop"))
			}

			// JetStream comes back on the same address with its files.
			srv2, err := natsembed.Start(natsembed.Options{Addr: addr, StoreDir: natsDir, ServerName: "n1"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(srv2.Shutdown)
			eventually(t, 30*time.Second, "v1 answering once JetStream is back", func() bool { return answersWith(t, p, "1") })
			if g := gauge(t, p, "meridian_plugin_deployments_missing"); g != 0 {
				t.Errorf("meridian_plugin_deployments_missing = %v once loaded, want 0", g)
			}
		})
	}
}
