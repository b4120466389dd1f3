package stack

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/meridian-edge/meridian/gateway"
	"github.com/meridian-edge/meridian/gateway/cache"
	"github.com/meridian-edge/meridian/gateway/headers"
	"github.com/meridian-edge/meridian/gateway/origin"
	"github.com/meridian-edge/meridian/gateway/realip"
	"github.com/meridian-edge/meridian/gateway/tlsedge/origintls"
	"github.com/meridian-edge/meridian/internal/config"
	"github.com/meridian-edge/meridian/internal/statesync"
	"github.com/prometheus/client_golang/prometheus"
)

// runningPoP is a PoP and what was built for it.
type runningPoP struct {
	*gateway.PoP
	originMetrics *origin.Metrics
	log           *slog.Logger
}

func buildSites(cfg *config.Config, metrics *origin.Metrics, log *slog.Logger) ([]gateway.Site, error) {
	var sites []gateway.Site
	for _, sc := range cfg.Sites {
		var servers []origin.Server
		for _, o := range sc.Origins {
			u, err := url.Parse(o.URL)
			if err != nil {
				return nil, fmt.Errorf("site %s: origin %s: %w", sc.Name, o.URL, err)
			}
			servers = append(servers, origin.Server{Name: o.Name, URL: u, HostHeader: o.HostHeader, Backup: o.Backup, Weight: o.Weight, MaxConns: o.MaxConns})
		}
		var tlsConf *tls.Config
		if ot := sc.OriginTLS; ot.ServerName != "" || ot.CAFile != "" || ot.ClientCertFile != "" || len(ot.PinSHA256) > 0 || ot.InsecureSkipVerify {
			c, err := origintls.Config(origintls.Options{
				ServerName: ot.ServerName, CAFile: ot.CAFile, InsecureSkipVerify: ot.InsecureSkipVerify,
				ClientCertFile: ot.ClientCertFile, ClientKeyFile: ot.ClientKeyFile, PinSHA256: ot.PinSHA256,
			})
			if err != nil {
				return nil, fmt.Errorf("site %s: origin_tls: %w", sc.Name, err)
			}
			tlsConf = c
		}
		// Validated with the configuration: an error here is a bug.
		reqHeaders, err := headers.ForRequests(sc.Headers.Request.Set, sc.Headers.Request.Remove)
		if err != nil {
			return nil, fmt.Errorf("site %s: headers.request: %w", sc.Name, err)
		}
		respHeaders, err := headers.ForResponses(sc.Headers.Response.Set, sc.Headers.Response.Remove)
		if err != nil {
			return nil, fmt.Errorf("site %s: headers.response: %w", sc.Name, err)
		}
		rules, err := pathRules(sc.Cache.Rules)
		if err != nil {
			return nil, fmt.Errorf("site %s: %w", sc.Name, err)
		}
		pool, err := origin.New(origin.Options{
			Site: sc.Name, Servers: servers, Routes: originRoutes(sc.Routes), HealthCheck: healthCheck(sc), TLS: tlsConf, RequestHeaders: reqHeaders,
			ConnectTimeout: sc.Timeouts.Connect, HeaderTimeout: sc.Timeouts.Header, IdleTimeout: sc.Timeouts.Idle, TotalTimeout: sc.Timeouts.Total,
			Logger: log, Metrics: metrics,
		})
		if err != nil {
			return nil, err
		}
		var errorPage []byte
		if sc.ErrorPage != "" {
			b, err := readErrorPage(sc.ErrorPage)
			if err != nil {
				pool.Close()
				return nil, fmt.Errorf("site %s: error_page: %w", sc.Name, err)
			}
			errorPage = b
		}
		sites = append(sites, gateway.Site{
			Name: sc.Name, Hosts: sc.Hosts, Default: sc.Default, Origin: pool,
			Cache: cache.SitePolicy{SiteID: sc.Name, IgnoreQuery: sc.Cache.IgnoreQuery, SortQuery: sc.Cache.SortQuery, MaxL1Object: int64(sc.Cache.MaxL1Object), StaleIfError: sc.Cache.StaleIfError, StaleWhileRevalidate: sc.Cache.StaleWhileRevalidate, DefaultTTL: sc.Cache.DefaultTTL, Compress: sc.Cache.Compress,
				IgnoreClientDirectives: sc.Cache.ClientCacheControl != "honor", Rules: rules, ErrorPage: errorPage, ResponseHeaders: respHeaders},
		})
	}
	return sites, nil
}

// healthCheck converts a site's configured health checks to the pool's;
// the probes' Host defaults to the site's first host that is not a
// wildcard.
func healthCheck(sc config.Site) origin.HealthCheck {
	h := sc.HealthCheck
	host := h.Host
	for _, name := range sc.Hosts {
		if host == "" && !strings.HasPrefix(name, "*") {
			host = name
		}
	}
	return origin.HealthCheck{Path: h.Path, Host: host, Interval: h.Interval, Timeout: h.Timeout, Fails: h.Fails, Passes: h.Passes}
}

// originRoutes converts a site's configured routes to the pool's.
func originRoutes(routes []config.Route) []origin.Route {
	out := make([]origin.Route, len(routes))
	for i, r := range routes {
		out[i] = origin.Route{Path: r.Path, Servers: r.Origins}
	}
	return out
}

// readErrorPage reads a site's error page, at most config.MaxErrorPage
// bytes (the file may have grown since the configuration was checked).
func readErrorPage(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, config.MaxErrorPage+1))
	if err != nil {
		return nil, err
	}
	if len(b) > config.MaxErrorPage {
		return nil, fmt.Errorf("%s is over %d bytes", path, config.MaxErrorPage)
	}
	return b, nil
}

// pathRules are a site's cache rules as the cache takes them.
func pathRules(rules []config.CacheRule) ([]cache.PathRule, error) {
	if len(rules) == 0 {
		return nil, nil
	}
	out := make([]cache.PathRule, len(rules))
	for i, r := range rules {
		hd, err := headers.ForResponses(r.Headers.Set, r.Headers.Remove)
		if err != nil { // validated with the configuration
			return nil, fmt.Errorf("cache.rules[%d].headers: %w", i, err)
		}
		out[i] = cache.PathRule{Path: r.Path, Bypass: r.Bypass, TTL: r.TTL, DefaultTTL: r.DefaultTTL,
			StaleIfError: r.StaleIfError, StaleWhileRevalidate: r.StaleWhileRevalidate, ResponseHeaders: hd,
			Redirect: r.Redirect, RedirectStatus: r.RedirectStatus}
	}
	return out, nil
}

func (s *Stack) startPoP(ctx context.Context, pc config.PoP) error {
	log := s.log.With("pop", pc.ID)
	reg := prometheus.NewRegistry()
	s.registerReloadMetrics(reg)
	// Per-PoP components that do not label their series themselves get
	// the pop label here, as every PoP series has it (README: /metrics).
	popReg := prometheus.WrapRegistererWith(prometheus.Labels{"pop": pc.ID}, reg)
	metrics := origin.NewMetrics(popReg)
	sites, err := buildSites(s.cfg, metrics, log)
	if err != nil {
		return err
	}
	nc, err := s.connect("pop-" + pc.ID)
	if err != nil {
		return err
	}
	creds, err := credentials(s.cfg)
	if err != nil {
		return err
	}
	s.creds.Store(&creds)
	node, err := statesync.Open(ctx, statesync.Options{
		NodeID: pc.ID, Conn: nc, DataDir: filepath.Join(s.cfg.DataDir, "pops", pc.ID, "sync"),
		Stream: "MERIDIAN_SYNC", StreamReplicas: s.cfg.NATS.StreamReplicas,
		Logger: s.log, Registerer: popReg,
	})
	if err != nil {
		return fmt.Errorf("pop %s: state sync: %w", pc.ID, err)
	}
	s.nodes = append(s.nodes, node)
	store, closeStore, err := s.cacheStore(pc, reg, log)
	if err != nil {
		return err
	}
	largeBody, largeBytes := l1Large(pc.Cache)
	c, err := cache.New(cache.Options{
		Store:   store,
		L1Bytes: int64(pc.Cache.L1Size), L1LargeBody: largeBody, L1LargeBytes: largeBytes, L1Preallocate: s.preallocL1, PoPID: pc.ID, Logger: log, Registerer: reg,
		// For a PoP whose L1 is its only tier; a tiered store sizes its own.
		L1MaxObject: l1MaxObject(s.cfg.Sites),
		PurgeCheck: func(site, url string, keys []string, storedAt time.Time) (bool, bool) {
			v := node.CheckPurged(site, url, keys, storedAt)
			return v.Purged, v.Stale
		},
	})
	if err != nil {
		if closeStore != nil {
			_ = closeStore()
		}
		return fmt.Errorf("pop %s: cache: %w", pc.ID, err)
	}
	s.caches = append(s.caches, c)
	if closeStore != nil {
		s.stores = append(s.stores, closeStore)
	}
	tls, err := s.popTLS(ctx, pc, nc, reg, log)
	if err != nil {
		return err
	}
	pl, err := s.startPlugins(ctx, pc, nc, node, reg, log)
	if err != nil {
		return err
	}
	p, err := gateway.New(gateway.Options{
		Plugins: pl.middleware, PluginHooks: pl.hooks, PluginSites: pl.runs, AdminRoutes: pl.adminRoutes,
		TLS: tls, Cache: c, Sync: node, Credentials: creds, NoFastPath: pc.FastHits != nil && !*pc.FastHits, ProxyProtocol: proxyProtocol(pc.ProxyProtocol), RealIP: realIP(pc.RealIP),
		ID: pc.ID, Region: pc.Region, HTTPAddr: pc.HTTP, AdminAddr: pc.Admin,
		Sites: sites, DrainFile: filepath.Join(s.cfg.DataDir, "pops", pc.ID, "drained"), Capacity: pc.Capacity, NATS: nc, BeaconInterval: s.beaconInterval(),
		Logger: s.log, Registry: reg,
	})
	if err != nil {
		return err
	}
	if err := p.Start(ctx); err != nil {
		return err
	}
	s.pops[pc.ID] = &runningPoP{PoP: p, originMetrics: metrics, log: log}
	s.order = append(s.order, pc.ID)
	return nil
}

// proxyProtocol turns a PoP's proxy_protocol section into the listeners'
// options; without it, the zero value leaves them unwrapped.
func proxyProtocol(pp *config.ProxyProtocol) realip.Options {
	if pp == nil {
		return realip.Options{}
	}
	return realip.Options{Trusted: pp.TrustedPrefixes(), Required: pp.Required, HeaderTimeout: pp.HeaderTimeout}
}

// realIP turns a PoP's real_ip section into the resolver's options;
// without it, the zero value is off.
func realIP(ri *config.RealIP) realip.HeaderOptions {
	if ri == nil {
		return realip.HeaderOptions{}
	}
	return realip.HeaderOptions{Trusted: ri.TrustedPrefixes(), Header: ri.Header}
}

func credentials(cfg *config.Config) (gateway.Credentials, error) {
	owners := map[string]string{}
	for _, sc := range cfg.Sites {
		owners[sc.Name] = sc.OwnerTokenSHA256
	}
	return gateway.NewCredentials(cfg.Admin.OpsTokenSHA256, owners)
}

// healthURL is where the DNS probes a PoP: its bound admin address when
// this process runs it, else the configured one.
func (s *Stack) healthURL(pc config.PoP) string {
	addr := pc.Admin
	if p, ok := s.pops[pc.ID]; ok {
		addr = p.AdminAddr()
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		if len(pc.Addresses) == 0 {
			return ""
		}
		host = pc.Addresses[0]
	}
	return "http://" + net.JoinHostPort(host, port) + "/healthz"
}
