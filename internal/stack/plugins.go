package stack

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/meridian-edge/meridian/dnsrouter/geo"
	"github.com/meridian-edge/meridian/dnsrouter/region"
	"github.com/meridian-edge/meridian/gateway"
	"github.com/meridian-edge/meridian/gateway/cache"
	"github.com/meridian-edge/meridian/gateway/origin"
	"github.com/meridian-edge/meridian/internal/config"
	"github.com/meridian-edge/meridian/internal/statesync"
	pluginmw "github.com/meridian-edge/meridian/middleware/plugin"
	"github.com/meridian-edge/meridian/plugins"
	"github.com/meridian-edge/meridian/plugins/native"
	"github.com/meridian-edge/meridian/plugins/rollout"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
)

// pluginStartWait bounds how long a starting PoP waits for the plugins its
// sites already ran before it opens its listeners (rollout WaitReady).
const pluginStartWait = 15 * time.Second

// popPlugins is what a PoP runs its site owners' plugins with.
type popPlugins struct {
	host    *plugins.Host
	rollout *rollout.Manager
}

// popPluginSetup is what a PoP's gateway needs from its plugins.
type popPluginSetup struct {
	middleware  func(http.Handler) http.Handler
	hooks       func(site string) cache.FastHooks // the fast path's
	adminRoutes map[string]http.Handler
	runs        func(site string) bool // whether a site runs plugins now
}

// startPlugins builds the plugin host and the rollout manager of one PoP and
// returns the per-site middleware and the admin routes for uploads.
func (s *Stack) startPlugins(ctx context.Context, pc config.PoP, nc *nats.Conn, node *statesync.Node, reg *prometheus.Registry, log *slog.Logger) (popPluginSetup, error) {
	engine, siteEngine, err := s.pluginEngines()
	if err != nil {
		return popPluginSetup{}, err
	}
	// The plugin series carry the pop label as every PoP series does; the
	// canary reads them back through reg, by label name.
	popReg := prometheus.WrapRegistererWith(prometheus.Labels{"pop": pc.ID}, reg)
	host, err := plugins.NewHost(plugins.Options{Engine: engine, SiteEngine: siteEngine, KV: statesync.PluginKV{Node: node}, Registerer: popReg, Logger: log,
		MetricLabels: rollout.MetricLabels,
		Limits:       plugins.Limits{Timeout: s.cfg.Plugins.Timeout, MaxPages: uint32(s.cfg.Plugins.Memory / (64 << 10))}})
	if err != nil {
		return popPluginSetup{}, fmt.Errorf("pop %s: plugins: %w", pc.ID, err)
	}
	// A config that lists several PoPs names those a logs request should
	// hear from (the dev stack, a file for a whole cluster); a PoP's own
	// file lists itself only, and its requests learn the others as they
	// answer.
	var expected func() []string
	if len(s.cfg.PoPs) > 1 {
		ids := make([]string, len(s.cfg.PoPs))
		for i, p := range s.cfg.PoPs {
			ids[i] = p.ID
		}
		expected = func() []string { return ids }
	}
	mg, err := rollout.New(rollout.Options{
		PoPID: pc.ID, Host: host, Sync: node, Conn: nc,
		// The credentials a reload installed (Stack.creds), as the PoP's own
		// admin routes use.
		Authenticate: func(r *http.Request) (bool, string, bool) {
			p, ok := s.creds.Load().Authenticate(r)
			return p.Ops, p.Site, ok
		},
		Refusal: func(r *http.Request) (int, string, string) {
			if _, d := s.creds.Load().Check(r, false); d != nil {
				return d.Status, d.Challenge, d.Message
			}
			// Authenticate refused what Check accepts: not expected.
			return http.StatusUnauthorized, "", "the token was not accepted"
		},
		Metrics: reg, Registerer: popReg, StoreReplicas: s.cfg.NATS.StreamReplicas,
		CacheDir: filepath.Join(s.cfg.DataDir, "pops", pc.ID, "plugins"), Logger: log,
		Sites: s.siteNamesNow, PoPs: expected,
	})
	if err != nil {
		_ = host.Close(ctx)
		return popPluginSetup{}, fmt.Errorf("pop %s: plugin rollout: %w", pc.ID, err)
	}
	if err := mg.Start(ctx); err != nil {
		_ = host.Close(ctx)
		return popPluginSetup{}, fmt.Errorf("pop %s: plugin rollout: %w", pc.ID, err)
	}
	s.closers = append(s.closers, func() error {
		err := mg.Close()
		if cerr := host.Close(context.Background()); err == nil {
			err = cerr
		}
		return err
	})
	// The PoP opens its listeners after this returns: wait until the
	// plugins its sites ran before the restart are active (or failed to
	// load), so that an auth plugin is never skipped while it compiles.
	// Bounded: a fail-closed site whose plugin is still missing then
	// answers 503 for it, a fail-open site is served without it.
	began := time.Now()
	wctx, cancel := context.WithTimeout(ctx, pluginStartWait)
	err = mg.WaitReady(wctx)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return popPluginSetup{}, fmt.Errorf("pop %s: plugins: %w", pc.ID, ctx.Err())
		}
		log.Warn("PoP serves before all its plugins are loaded", "waited", time.Since(began).Round(time.Millisecond), "err", err)
	} else if d := time.Since(began); d > 50*time.Millisecond {
		log.Info("plugins loaded before serving", "waited", d.Round(time.Millisecond))
	}
	var g plugins.Geo
	if s.geo != nil {
		g = geoForPlugins{s.geo}
	}
	rn := pluginmw.NewRunner(pluginmw.Options{
		Host: host, PoP: pc.ID, PoPRegion: pc.Region, Geo: g, Logger: log,
		Chain:     func(r *http.Request) *plugins.Chain { return mg.Chain(gateway.SiteFromContext(r.Context())) },
		ErrorPage: func(r *http.Request) []byte { return gateway.SiteErrorPage(r.Context()) },
	})
	wrap := func(next http.Handler) http.Handler { return rn.Middleware(pluginDirectives(next)) }
	hooks := func(site string) cache.FastHooks {
		return rn.FastHooks(func() *plugins.Chain { return mg.Chain(site) })
	}
	return popPluginSetup{middleware: wrap, hooks: hooks, adminRoutes: map[string]http.Handler{"/admin/plugins/*": mg.Handler()}, runs: mg.Runs}, nil
}

// pluginEngines makes the configured plugin engine and, when some sites run
// on the go-sdk, that one too. Both share the compilation cache directory.
// Engines are closed at shutdown, after the hosts.
func (s *Stack) pluginEngines() (plugins.Engine, func(string) plugins.Engine, error) {
	dir := filepath.Join(s.cfg.DataDir, "wazero-cache")
	var sdk plugins.Engine
	newSDK := func() (plugins.Engine, error) {
		if sdk != nil {
			return sdk, nil
		}
		e, err := plugins.NewSDKEngine(plugins.SDKOptions{CacheDir: filepath.Join(dir, "sdk")})
		if err != nil {
			return nil, err
		}
		sdk = checkedEngine{e}
		s.closers = append(s.closers, func() error { return e.Close(context.Background()) })
		return sdk, nil
	}
	var engine plugins.Engine
	if s.cfg.Plugins.Engine == "sdk" {
		e, err := newSDK()
		if err != nil {
			return nil, nil, err
		}
		engine = e
	} else {
		e, err := native.New(native.Options{CacheDir: filepath.Join(dir, "native")})
		if err != nil {
			return nil, nil, err
		}
		s.closers = append(s.closers, func() error { return e.Close(context.Background()) })
		engine = e
	}
	if len(s.cfg.Plugins.SDKSites) == 0 {
		return engine, nil, nil
	}
	e, err := newSDK()
	if err != nil {
		return nil, nil, err
	}
	sdkSites := map[string]bool{}
	for _, name := range s.cfg.Plugins.SDKSites {
		sdkSites[name] = true
	}
	return engine, func(site string) plugins.Engine {
		if sdkSites[site] {
			return e
		}
		return nil
	}, nil
}

// checkedEngine guards the go-sdk against hostile module headers: wazero
// trusts the sizes a module declares, so a tiny upload could make it
// allocate gigabytes or panic. The native engine's structural check runs
// first, and a panic while compiling becomes an error.
type checkedEngine struct{ plugins.Engine }

func (c checkedEngine) Compile(ctx context.Context, wasm []byte, lim plugins.Limits) (p plugins.Program, err error) {
	if err := native.CheckBinary(wasm); err != nil {
		return nil, err
	}
	defer func() {
		if v := recover(); v != nil {
			p, err = nil, fmt.Errorf("plugin: the module could not be compiled (%v)", v)
		}
	}()
	return c.Engine.Compile(ctx, wasm, lim)
}

// pluginDirectives hands a plugin's origin choice to the origin pool.
// (Cache key and TTL reach the cache through its own context values.)
func pluginDirectives(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d := pluginmw.DirectivesFrom(r.Context()); d != nil && d.Origin != "" {
			r = r.WithContext(origin.WithServer(r.Context(), d.Origin))
		}
		next.ServeHTTP(w, r)
	})
}

// A PoP's plugins may set keys and counters that expire.
var _ plugins.ExpiringKV = statesync.PluginKV{}

// geoForPlugins answers the plugins' geo host function from the DNS geo
// source of the configuration. The region is the nearest catalog region to
// the client's location; the country is known only to sources that carry it.
type geoForPlugins struct{ src geo.Source }

func (g geoForPlugins) GeoLookup(addr netip.Addr) (country, reg string, lat, lon float64, ok bool) {
	m := g.src.Lookup(addr)
	if !m.Found {
		return "", "", 0, 0, false
	}
	best, dist := "", 1e18
	for _, r := range region.All() {
		if d := region.Distance(m.Loc.Lat, m.Loc.Lon, r.Lat, r.Lon); d < dist {
			best, dist = r.ID, d
		}
	}
	return "", best, m.Loc.Lat, m.Loc.Lon, true
}
