// Package rollouttest starts real PoPs for the rollout tests: a statesync
// node on a real NATS server, a plugins.Host, a rollout.Manager with its
// admin API on a loopback HTTP server, and an edge HTTP server that runs the
// site's plugin chain (middleware/plugin) in front of a small origin. It
// owns no runtime behaviour and must only be imported by tests.
package rollouttest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-edge/meridian/gateway"
	"github.com/meridian-edge/meridian/internal/natsembed"
	"github.com/meridian-edge/meridian/internal/statesync"
	pluginmw "github.com/meridian-edge/meridian/middleware/plugin"
	"github.com/meridian-edge/meridian/plugins"
	"github.com/meridian-edge/meridian/plugins/plugintest"
	"github.com/meridian-edge/meridian/plugins/rollout"
)

// Tokens the test PoPs accept.
const (
	OpsToken   = "ops-token-for-tests"
	ShopToken  = "shop-owner-token"  // owns site "shop"
	OtherToken = "other-owner-token" // owns site "other"
)

// Site is the site whose chain the edge servers run.
const Site = "shop"

// Sites are the sites the test PoPs serve (rollout.Options.Sites); the
// admin API answers 404 for any other.
func Sites() []string { return []string{"shop", "other"} }

// PoP is one started test PoP.
type PoP struct {
	ID       string
	Node     *statesync.Node
	Host     *plugins.Host
	Manager  *rollout.Manager
	Registry *prometheus.Registry
	// Admin serves Manager.Handler; Edge serves site traffic.
	Admin, Edge *httptest.Server

	stops []func()
}

func hash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// StartPoP starts PoP id against srv. tweak may change the Manager's
// options before New. Everything stops at the end of the test.
func StartPoP(t testing.TB, srv *natsembed.Server, engine plugins.Engine, id string, tweak func(*rollout.Options)) *PoP {
	t.Helper()
	return Start(t, engine, Config{ID: id, NATSURL: srv.ClientURL(), Tweak: tweak})
}

// Config says how to start a PoP.
type Config struct {
	ID string
	// NATSURL is dialled with retries: the PoP starts even when no server
	// answers there (degraded mode).
	NATSURL string
	// DataDir (statesync) and CacheDir (rollout); empty: fresh temp dirs
	// and no rollout cache.
	DataDir, CacheDir string
	// Tweak may change the Manager's options before New.
	Tweak func(*rollout.Options)
	// NoWait opens the edge right after Manager.Start, without waiting for
	// the plugins known at start (Manager.WaitReady), as a PoP must not:
	// for tests of what a request sees meanwhile.
	NoWait bool
}

// Start starts a PoP. Everything stops at the end of the test, or at Stop.
func Start(t testing.TB, engine plugins.Engine, c Config) *PoP {
	t.Helper()
	ctx := context.Background()
	creds, err := gateway.NewCredentials(hash(OpsToken), map[string]string{"shop": hash(ShopToken), "other": hash(OtherToken)})
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir == "" {
		c.DataDir = t.TempDir()
	}
	p := &PoP{ID: c.ID}
	conn := func() *nats.Conn {
		nc, err := nats.Connect(c.NATSURL, nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		p.stops = append(p.stops, nc.Close)
		return nc
	}
	node, err := statesync.Open(ctx, statesync.Options{NodeID: c.ID, Conn: conn(), DataDir: c.DataDir,
		AntiEntropyInterval: 500 * time.Millisecond, ReplayTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	p.stops = append(p.stops, func() { node.Close() })
	reg := prometheus.NewRegistry()
	host, err := plugins.NewHost(plugins.Options{Engine: engine, Registerer: reg, MetricLabels: rollout.MetricLabels})
	if err != nil {
		t.Fatal(err)
	}
	p.stops = append(p.stops, func() { host.Close(context.Background()) })
	opts := rollout.Options{
		PoPID: c.ID, Host: host, Sync: node, Conn: conn(), CacheDir: c.CacheDir,
		Authenticate: func(r *http.Request) (bool, string, bool) {
			p, ok := creds.Authenticate(r)
			return p.Ops, p.Site, ok
		},
		Sites:   Sites,
		Metrics: reg, Registerer: reg, CheckInterval: 100 * time.Millisecond,
	}
	if c.Tweak != nil {
		c.Tweak(&opts)
	}
	mg, err := rollout.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := mg.Start(ctx); err != nil {
		t.Fatal(err)
	}
	p.stops = append(p.stops, func() { mg.Close() })
	if !c.NoWait {
		// As a PoP does before it opens its listeners. Generous: compiling
		// under -race on a loaded machine is slow.
		wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		err := mg.WaitReady(wctx)
		cancel()
		if err != nil {
			t.Logf("PoP %s: %v", c.ID, err)
		}
	}
	admin := httptest.NewServer(mg.Handler())
	p.stops = append(p.stops, admin.Close)
	origin := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "origin of %s\n", c.ID)
	})
	edge := httptest.NewServer(pluginmw.New(pluginmw.Options{Host: host, PoP: c.ID,
		Chain: func(*http.Request) *plugins.Chain { return mg.Chain(Site) }})(origin))
	p.stops = append(p.stops, edge.Close)
	p.Node, p.Host, p.Manager, p.Registry, p.Admin, p.Edge = node, host, mg, reg, admin, edge
	t.Cleanup(p.Stop)
	return p
}

// Stop stops the PoP (servers, manager, host, state, connections), last
// started first. Calling it again does nothing.
func (p *PoP) Stop() {
	for i := len(p.stops) - 1; i >= 0; i-- {
		p.stops[i]()
	}
	p.stops = nil
}

// Get sends one request to the PoP's edge and returns the response header
// (the body is read and closed).
func (p *PoP) Get(t testing.TB) (int, http.Header) {
	t.Helper()
	resp, err := http.Get(p.Edge.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header
}

// VersionWAT returns a plugin that sets response header "x-v: <tag>",
// built with wat2wasm (Debian package wabt). tag is 1-9 ASCII bytes.
func VersionWAT(t testing.TB, tag string) []byte {
	t.Helper()
	if len(tag) < 1 || len(tag) > 9 {
		t.Fatalf("tag %q: 1-9 bytes", tag)
	}
	// output: version 1, action 0x0C (set response header), u16 length,
	// header record: name length, name, value.
	rec := append([]byte{3}, "x-v"+tag...)
	out := append([]byte{1, 0x0c, byte(len(rec)), 0}, rec...)
	var data strings.Builder
	for _, b := range out {
		fmt.Fprintf(&data, "\\%02x", b)
	}
	src := fmt.Sprintf(`(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output (param i64 i64)))
  (memory 1)
  (data (i32.const 0) "%s")
  (func (export "on_request") (result i32)
    (local $p i64) (local $i i32)
    (local.set $p (call $alloc (i64.const %d)))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (i32.const %d)))
      (call $store (i64.add (local.get $p) (i64.extend_i32_u (local.get $i))) (i32.load8_u (local.get $i)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    (call $output (local.get $p) (i64.const %d))
    (i32.const 0)))
`, data.String(), len(out), len(out), len(out))
	b, err := plugintest.WATSource(context.Background(), t.TempDir(), "v", src)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
