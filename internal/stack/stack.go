// Package stack turns a validated configuration into running components:
// the embedded NATS server, the demo origin, PoPs and the DNS server. The
// `dev`, `pop` and `dns` commands differ only in which roles they ask for.
//
// Start binds every listener before it returns, and on any failure stops what
// it had started, so a bad address never leaves a half-started stack.
package stack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"sync/atomic"
	"time"

	"github.com/meridian-edge/meridian/dnsrouter"
	"github.com/meridian-edge/meridian/dnsrouter/geo"
	"github.com/meridian-edge/meridian/gateway"
	"github.com/meridian-edge/meridian/gateway/cache"
	"github.com/meridian-edge/meridian/gateway/tlsedge/devca"
	"github.com/meridian-edge/meridian/internal/config"
	"github.com/meridian-edge/meridian/internal/demoorigin"
	"github.com/meridian-edge/meridian/internal/natsembed"
	"github.com/meridian-edge/meridian/internal/s3embed"
	"github.com/meridian-edge/meridian/internal/statesync"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Roles selects what a process runs.
type Roles struct {
	// PoPs lists the PoP ids to run; All runs every PoP of the file.
	PoPs []string
	// AllPoPs runs every PoP in the file.
	AllPoPs bool
	// DNS runs the DNS server (the file must have a dns section).
	DNS bool
	// DemoOrigin runs the demo origin at dev.origin.
	DemoOrigin bool
	// TuneMemory lets Start set the process's Go collector from the L1
	// budgets of the PoPs it runs (cache.GCPercent) and preallocate
	// L1, unless the operator set GOGC or GOMEMLIMIT. Only a process's main
	// should ask: the settings are process-wide.
	TuneMemory bool
}

// Stack is a set of running components.
type Stack struct {
	cfg    *config.Config
	log    *slog.Logger
	nats   *natsembed.Server
	conns  []*nats.Conn
	origin *demoorigin.Origin
	srvs   []*http.Server
	pops   map[string]*runningPoP
	order  []string
	// preallocL1 reserves each L1's queues up front; only with the
	// collector settings that make that cheap (see tuneMemory).
	preallocL1 bool
	nodes      []*statesync.Node
	caches     []*cache.Cache
	// stores close the cache tiers, after the caches.
	stores []func() error
	s3     *s3embed.Server
	// closers run last at shutdown, after the components that use them.
	closers []func() error
	devCA   devca.Files
	// siteNames are the configured sites, for the plugin admin API, which
	// reads them while Reload replaces cfg.
	siteNames atomic.Pointer[[]string]
	// creds are the admin tokens (the same for every PoP), for the plugin
	// admin API; Reload replaces them and each PoP's.
	creds atomic.Pointer[gateway.Credentials]
	// reloads counts configuration reloads by result and lastReload holds
	// the time of the last applied one, on every PoP's and the DNS's
	// registry (RecordReload).
	reloads    *prometheus.CounterVec
	lastReload prometheus.Gauge
	// buildInfo is meridian_build_info, on the same registries.
	buildInfo prometheus.Gauge
	// geo locates clients for the PoPs' plugins (from dns.geo).
	geo    geo.Source
	dns    *dnsrouter.Server
	dnsReg *prometheus.Registry
}

// Start runs the roles of cfg. ctx bounds the start and the components' lives.
func Start(ctx context.Context, cfg *config.Config, roles Roles, log *slog.Logger) (*Stack, error) {
	s := &Stack{cfg: cfg, log: log, pops: map[string]*runningPoP{}}
	s.setSiteNames(cfg)
	s.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meridian_config_reloads_total",
		Help: "Configuration reloads (SIGHUP) by result: applied, or refused (the running configuration stays).",
	}, []string{"result"})
	s.lastReload = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "meridian_config_last_reload_success_timestamp_seconds",
		Help: "When the running configuration was last applied: the start, or the last reload that succeeded (Unix seconds).",
	})
	s.lastReload.SetToCurrentTime()
	// Both results exist from the start, at 0: an alert on refused reloads
	// sees a series before the first one.
	s.reloads.WithLabelValues("applied")
	s.reloads.WithLabelValues("refused")
	s.buildInfo = newBuildInfo()
	if err := s.start(ctx, roles); err != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(sctx)
		return nil, err
	}
	return s, nil
}

func (s *Stack) start(ctx context.Context, roles Roles) error {
	cfg := s.cfg
	if e := cfg.NATS.Embedded; e != nil {
		srv, err := natsembed.Start(natsembed.Options{Addr: e.Listen, StoreDir: filepath.Join(cfg.DataDir, "nats"), ServerName: "meridian-embedded"})
		if err != nil {
			return err
		}
		s.nats = srv
		s.log.Info("embedded NATS serving", "url", srv.ClientURL(), "store", filepath.Join(cfg.DataDir, "nats"))
	}
	if roles.DemoOrigin {
		addr := cfg.Dev.Origin
		if addr == "" {
			addr = config.DefaultDevOrigin
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("demo origin: listen %s: %w", addr, err)
		}
		s.origin = demoorigin.New()
		srv := &http.Server{Handler: s.origin, ReadHeaderTimeout: 10 * time.Second}
		s.srvs = append(s.srvs, srv)
		go func() { _ = srv.Serve(ln) }()
		s.log.Info("demo origin serving", "addr", ln.Addr().String())
	}
	if (roles.AllPoPs || len(roles.PoPs) > 0) && cfg.DNS != nil {
		src, err := geoSource(cfg.DNS.Geo)
		if err != nil {
			return err
		}
		if src != nil {
			s.geo = src
			s.closers = append(s.closers, src.Close)
		}
	}
	if roles.AllPoPs || len(roles.PoPs) > 0 {
		f, ok, err := devCAFiles(cfg)
		if err != nil {
			return err
		}
		if ok {
			s.devCA = f
		}
	}
	if roles.AllPoPs || len(roles.PoPs) > 0 {
		var run []config.PoP
		for _, pc := range cfg.PoPs {
			if roles.AllPoPs || slices.Contains(roles.PoPs, pc.ID) {
				run = append(run, pc)
			}
		}
		if err := s.startEmbeddedS3(run); err != nil {
			return err
		}
		if roles.TuneMemory {
			s.tuneMemory(run)
		}
	}
	want := map[string]bool{}
	for _, id := range roles.PoPs {
		want[id] = true
	}
	for _, pc := range cfg.PoPs {
		if !roles.AllPoPs && !want[pc.ID] {
			continue
		}
		delete(want, pc.ID)
		if err := s.startPoP(ctx, pc); err != nil {
			return err
		}
	}
	for id := range want {
		return fmt.Errorf("no PoP %q in the configuration", id)
	}
	if roles.DNS {
		if cfg.DNS == nil {
			return errors.New("the configuration has no dns section")
		}
		if err := s.startDNS(ctx); err != nil {
			return err
		}
	}
	return nil
}

// PoP returns a running PoP by id.
func (s *Stack) PoP(id string) *gateway.PoP {
	if p, ok := s.pops[id]; ok {
		return p.PoP
	}
	return nil
}

// PoPIDs lists the running PoPs in configuration order.
func (s *Stack) PoPIDs() []string { return s.order }

// DNS returns the running DNS server, or nil.
func (s *Stack) DNS() *dnsrouter.Server { return s.dns }

// NATSURL is the embedded server's URL, or "".
func (s *Stack) NATSURL() string {
	if s.nats == nil {
		return ""
	}
	return s.nats.ClientURL()
}

// Origin returns the demo origin, or nil.
func (s *Stack) Origin() *demoorigin.Origin { return s.origin }

// DrainForShutdown marks every PoP of this process as draining for the
// rest of its life: their health beacons and /healthz report unhealthy, so
// the DNS sends clients elsewhere, while they go on serving whoever still
// comes. It is not remembered across a restart (an operator's drain is).
func (s *Stack) DrainForShutdown() {
	for _, id := range s.order {
		s.pops[id].DrainForShutdown()
	}
}

// Shutdown stops everything, front to back: DNS, PoPs (letting in-flight
// requests finish until ctx ends), origin, NATS.
func (s *Stack) Shutdown(ctx context.Context) error {
	var errs []error
	if s.dns != nil {
		errs = append(errs, s.dns.Close())
	}
	for _, id := range s.order {
		errs = append(errs, s.pops[id].Shutdown(ctx))
	}
	for _, srv := range s.srvs {
		errs = append(errs, srv.Shutdown(ctx))
	}
	for _, c := range s.caches {
		errs = append(errs, c.Close())
	}
	for _, c := range s.stores {
		errs = append(errs, c())
	}
	if s.s3 != nil {
		errs = append(errs, s.s3.Close())
	}
	for _, n := range s.nodes {
		errs = append(errs, n.Close())
	}
	for i := len(s.closers) - 1; i >= 0; i-- {
		errs = append(errs, s.closers[i]()) // last made, first closed
	}
	for _, nc := range s.conns {
		nc.Close()
	}
	if s.nats != nil {
		s.nats.Shutdown()
	}
	return errors.Join(errs...)
}

// tuneMemory applies cache.GCPercent for the L1 budgets of the PoPs in
// run. Preallocated L1 queues count as live heap from the start: with the
// default GOGC=100 garbage could grow to the whole reservation (7.2 KB per
// cached 1 KiB object measured), with these settings 1.6 KB.
func (s *Stack) tuneMemory(run []config.PoP) {
	if os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" {
		s.log.Info("GOGC or GOMEMLIMIT set: keeping the operator's collector settings; L1 grows on demand")
		return
	}
	var l1 int64
	for _, pc := range run {
		l1 += int64(pc.Cache.L1Size)
	}
	pct := cache.GCPercent(l1) // no memory limit: see GCPercent; operators who want one set GOMEMLIMIT
	debug.SetGCPercent(pct)
	s.preallocL1 = true
	s.log.Info("memory tuned for the L1 budget", "l1_bytes", l1, "gogc", pct)
}

// setSiteNames records cfg's site names for SiteNames.
func (s *Stack) setSiteNames(cfg *config.Config) {
	names := make([]string, len(cfg.Sites))
	for i, sc := range cfg.Sites {
		names[i] = sc.Name
	}
	s.siteNames.Store(&names)
}

// siteNamesNow returns the sites of the running configuration.
func (s *Stack) siteNamesNow() []string { return *s.siteNames.Load() }

// Config is the running configuration: the one Start was given, or the
// last a Reload applied. Do not call it while a Reload runs.
func (s *Stack) Config() *config.Config { return s.cfg }

// RecordReload counts a reload attempt that ended with err (nil: applied),
// for meridian_config_reloads_total and the last-success time. The caller
// records failures that never reached Reload too (a file that does not
// parse).
func (s *Stack) RecordReload(err error) {
	if err != nil {
		s.reloads.WithLabelValues("refused").Inc()
		return
	}
	s.reloads.WithLabelValues("applied").Inc()
	s.lastReload.SetToCurrentTime()
}

// registerReloadMetrics puts the process-wide series on reg (a PoP's or
// the DNS's registry): the reload series (one SIGHUP reloads every role, so
// they carry no pop label), meridian_build_info, and the Go runtime's and
// the process's collectors, which the DNS's /metrics has nowhere else (a
// PoP's gateway registers them too; the second registration is skipped).
func (s *Stack) registerReloadMetrics(reg prometheus.Registerer) {
	reg.MustRegister(s.reloads, s.lastReload, s.buildInfo)
	for _, c := range []prometheus.Collector{collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				panic(err) // as MustRegister: a programming error
			}
		}
	}
}

// newBuildInfo is meridian_build_info{version,go_version,revision} = 1, from
// the binary's build information: version is the module version
// ("devel" for a build from a source tree), revision the VCS commit
// ("unknown" without one; "-dirty" appended for modified sources).
func newBuildInfo() prometheus.Gauge {
	version, goVersion, revision := "devel", runtime.Version(), "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			version = bi.Main.Version
		}
		if bi.GoVersion != "" {
			goVersion = bi.GoVersion
		}
		dirty := false
		for _, st := range bi.Settings {
			switch st.Key {
			case "vcs.revision":
				revision = st.Value
			case "vcs.modified":
				dirty = st.Value == "true"
			}
		}
		if dirty && revision != "unknown" {
			revision += "-dirty"
		}
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "meridian_build_info",
		Help:        "Always 1; the labels say which build of meridian runs (version, the Go release, the VCS revision).",
		ConstLabels: prometheus.Labels{"version": version, "go_version": goVersion, "revision": revision},
	})
	g.Set(1)
	return g
}
