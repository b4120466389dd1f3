package stack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/meridian-edge/meridian/gateway/cache/l1"
	"github.com/meridian-edge/meridian/gateway/cache/l2"
	"github.com/meridian-edge/meridian/gateway/cache/l3"
	"github.com/meridian-edge/meridian/gateway/cache/tier"
	"github.com/meridian-edge/meridian/gateway/cache/tiered"
	"github.com/meridian-edge/meridian/internal/config"
	"github.com/meridian-edge/meridian/internal/s3embed"
	"github.com/prometheus/client_golang/prometheus"
)

// startEmbeddedS3 runs the in-process S3-compatible server when a PoP's L3
// says endpoint: embedded (the dev stack).
func (s *Stack) startEmbeddedS3(pops []config.PoP) error {
	var buckets []string
	for _, p := range pops {
		if p.Cache.L3.Endpoint == "embedded" {
			buckets = append(buckets, p.Cache.L3.Bucket)
		}
	}
	if len(buckets) == 0 {
		return nil
	}
	srv, err := s3embed.Start(s3embed.Options{Addr: "127.0.0.1:0", Dir: filepath.Join(s.cfg.DataDir, "s3"), Buckets: buckets, Logger: s.log})
	if err != nil {
		return fmt.Errorf("embedded S3: %w", err)
	}
	s.s3 = srv
	s.log.Info("embedded S3 serving", "endpoint", srv.Endpoint(), "dir", filepath.Join(s.cfg.DataDir, "s3"))
	return nil
}

// cacheStore builds a PoP's tiers below the cache. It returns nil when the
// PoP has only L1 (the cache then makes its own); the returned closer stops
// the composition and then the tiers.
func (s *Stack) cacheStore(pc config.PoP, reg prometheus.Registerer, log *slog.Logger) (tier.Tier, func() error, error) {
	c := pc.Cache
	if c.L2.Disabled && c.L3.Endpoint == "" {
		return nil, nil, nil
	}
	// Every cache series names the PoP, as the cache's own do
	// (cache.Options.PoPID), so dashboards join them with the DNS's.
	reg = prometheus.WrapRegistererWith(prometheus.Labels{"pop": pc.ID}, reg)
	var tiers []tier.Tier
	var closers []func() error
	closeAll := func() error {
		var errs []error
		for i := len(closers) - 1; i >= 0; i-- {
			errs = append(errs, closers[i]())
		}
		return errors.Join(errs...)
	}
	largeBody, largeBytes := l1Large(c)
	t1, err := l1.New(l1.Options{Bytes: int64(c.L1Size), MaxObject: l1MaxObject(s.cfg.Sites), LargeBody: largeBody, LargeBytes: largeBytes, Preallocate: s.preallocL1, Logger: log})
	if err != nil {
		return nil, nil, fmt.Errorf("pop %s: L1: %w", pc.ID, err)
	}
	tiers, closers = append(tiers, t1), append(closers, t1.Close)
	if !c.L2.Disabled {
		if c.L2.Dir == "" {
			c.L2.Dir = filepath.Join(s.cfg.DataDir, "pops", pc.ID, "l2")
		}
		t2, err := l2.Open(l2.Options{Dir: c.L2.Dir, Bytes: int64(c.L2.Size), Logger: log, Registerer: reg})
		if err != nil {
			_ = closeAll()
			return nil, nil, fmt.Errorf("pop %s: L2 in %s: %w", pc.ID, c.L2.Dir, err)
		}
		tiers, closers = append(tiers, t2), append(closers, t2.Close)
	}
	if c.L3.Endpoint != "" {
		endpoint, access, secret := c.L3.Endpoint, c.L3.AccessKey, ""
		if endpoint == "embedded" {
			if s.s3 == nil {
				_ = closeAll()
				return nil, nil, fmt.Errorf("pop %s: cache.l3.endpoint is embedded, but no embedded S3 server runs", pc.ID)
			}
			endpoint, access, secret = s.s3.Endpoint(), "meridian-dev", "meridian-dev"
		} else {
			b, err := os.ReadFile(c.L3.SecretKeyFile)
			if err != nil {
				_ = closeAll()
				return nil, nil, fmt.Errorf("pop %s: cache.l3.secret_key_file: %w", pc.ID, err)
			}
			secret = strings.TrimSpace(string(b))
		}
		sweep := time.Duration(0)
		if !c.L3.Sweep {
			sweep = -1
		}
		t3, err := l3.New(l3.Options{
			Endpoint: endpoint, Region: c.L3.Region, Bucket: c.L3.Bucket, Prefix: c.L3.Prefix,
			AccessKey: access, SecretKey: secret, Timeout: c.L3.Timeout, Bytes: int64(c.L3.Size),
			SweepInterval: sweep, SpoolDir: filepath.Join(s.cfg.DataDir, "pops", pc.ID, "l3-spool"),
			Logger: log, Registerer: reg,
		})
		if err != nil {
			_ = closeAll()
			return nil, nil, fmt.Errorf("pop %s: L3: %w", pc.ID, err)
		}
		tiers, closers = append(tiers, t3), append(closers, t3.Close)
	}
	comp, err := tiered.New(tiered.Options{Tiers: tiers, Logger: log, Registerer: reg})
	if err != nil {
		_ = closeAll()
		return nil, nil, fmt.Errorf("pop %s: cache tiers: %w", pc.ID, err)
	}
	closers = append(closers, func() error {
		// Write-downs still queued would be lost: give them a moment, as
		// long as a few L3 writes under load may take (5 s was seen to
		// expire on a loaded CI box with three PoPs flushing at once).
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		ferr := comp.Flush(ctx)
		return errors.Join(ferr, comp.Close())
	})
	return comp, closeAll, nil
}

// l1Large maps pops[].cache.l1_large_bodies onto L1's options: unset keeps
// L1's default split, 0B keeps every body in BigCache.
func l1Large(c config.CacheTiers) (largeBody, largeBytes int64) {
	switch {
	case c.L1LargeBodies == nil:
		return 0, 0
	case *c.L1LargeBodies == 0:
		return -1, 0
	default:
		return 0, int64(*c.L1LargeBodies)
	}
}

// l1Headroom is what L1 counts beyond a body (it limits encoded objects:
// metadata, headers and body): a site's max_l1_object limits bodies.
const l1Headroom = 64 << 10

// l1MaxObject sizes the L1 of a composition for the sites' max_l1_object:
// the largest of them (each site's own limit is applied per object, see
// cache.SitePolicy.MaxL1Object) plus the room of the headers, so that
// responses up to a site's limit fit in memory, as configured, rather than
// stopping at L1's 1 MiB default. 0 (L1's default) without sites. L1 still
// caps it to what its budget allows (an eighth of the large-body pool). A
// reload that raises a site's limit beyond this takes effect at the next
// start, as changes of l1_size do.
func l1MaxObject(sites []config.Site) int64 {
	var n int64
	for _, sc := range sites {
		n = max(n, int64(sc.Cache.MaxL1Object))
	}
	if n == 0 {
		return 0
	}
	return n + l1Headroom
}
