package config

import (
	"net"
	"strings"
	"time"
)

// Defaults, in one place. deploy/reference.yaml shows them to readers (a test
// loads it, so it stays a valid file; keep its values in step by hand).
const (
	DefaultDataDir         = "./.meridian"
	DefaultNATSListen      = "127.0.0.1:4222"
	DefaultL1Size          = ByteSize(512 << 20)
	DefaultL2Size          = ByteSize(10 << 30)
	DefaultL3Size          = ByteSize(100 << 30)
	DefaultMaxL1Object     = ByteSize(4 << 20)
	DefaultConnectTimeout  = 5 * time.Second
	DefaultHeaderTimeout   = 30 * time.Second
	DefaultIdleTimeout     = 60 * time.Second
	DefaultTotalTimeout    = 5 * time.Minute
	DefaultDNSListen       = "127.0.0.1:5353"
	DefaultAnswerTTL       = 30 * time.Second
	DefaultSOATTL          = time.Hour
	DefaultSOARefresh      = time.Hour
	DefaultSOARetry        = 10 * time.Minute
	DefaultSOAExpire       = 7 * 24 * time.Hour
	DefaultSOAMinimum      = 60 * time.Second
	DefaultGeoRegion       = "us-east-1"
	DefaultBeaconInterval  = time.Second
	DefaultMissedBeacons   = 3
	DefaultProbeInterval   = 2 * time.Second
	DefaultDevOrigin       = "127.0.0.1:8081"
	DefaultAnswersPerQuery = 1
	DefaultACMEDirectory   = "https://acme-v02.api.letsencrypt.org/directory"
	DefaultShutdownGrace   = 10 * time.Second
	DefaultPluginTimeout   = 50 * time.Millisecond
	DefaultPluginMemory    = ByteSize(32 << 20)
	// DefaultProxyHeaderTimeout is pops[].proxy_protocol.header_timeout's.
	DefaultProxyHeaderTimeout = 10 * time.Second
	// DefaultRealIPHeader is pops[].real_ip.header's.
	DefaultRealIPHeader = "X-Forwarded-For"
)

func applyDefaults(c *Config) {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	defDur := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.DataDir, DefaultDataDir)
	def(&c.Log.Level, "info")
	def(&c.Log.Format, "text")
	def(&c.TLS.UnknownSNI, "reject")
	def(&c.Plugins.Engine, "native")
	defDur(&c.Shutdown.Grace, DefaultShutdownGrace)
	defDur(&c.Plugins.Timeout, DefaultPluginTimeout)
	if c.Plugins.Memory == 0 {
		c.Plugins.Memory = DefaultPluginMemory
	}
	def(&c.TLS.ACME.Directory, DefaultACMEDirectory)
	if c.NATS.StreamReplicas == 0 {
		c.NATS.StreamReplicas = 1
	}
	if c.NATS.Embedded != nil {
		def(&c.NATS.Embedded.Listen, DefaultNATSListen)
	}
	for i := range c.PoPs {
		p := &c.PoPs[i]
		if pp := p.ProxyProtocol; pp != nil {
			defDur(&pp.HeaderTimeout, DefaultProxyHeaderTimeout)
		}
		if ri := p.RealIP; ri != nil {
			def(&ri.Header, DefaultRealIPHeader)
		}
		if p.Cache.L1Size == 0 {
			p.Cache.L1Size = DefaultL1Size
		}
		if p.Cache.L2.Size == 0 {
			p.Cache.L2.Size = DefaultL2Size
		}
		if l3 := &p.Cache.L3; l3.Endpoint != "" {
			def(&l3.Bucket, "meridian-cache")
			def(&l3.Prefix, p.Region)
			def(&l3.Prefix, p.ID)
			def(&l3.Region, "us-east-1")
			if l3.Size == 0 {
				l3.Size = DefaultL3Size
			}
			defDur(&l3.Timeout, 2*time.Second)
		}
		if len(p.Addresses) == 0 {
			if host, _, err := net.SplitHostPort(p.HTTP); err == nil && net.ParseIP(host) != nil && !net.ParseIP(host).IsUnspecified() {
				p.Addresses = []string{host}
			}
		}
	}
	for i := range c.Sites {
		s := &c.Sites[i]
		for j, h := range s.Hosts {
			s.Hosts[j] = strings.ToLower(strings.TrimSuffix(h, "."))
		}
		defDur(&s.Timeouts.Connect, DefaultConnectTimeout)
		defDur(&s.Timeouts.Header, DefaultHeaderTimeout)
		defDur(&s.Timeouts.Idle, DefaultIdleTimeout)
		defDur(&s.Timeouts.Total, DefaultTotalTimeout)
		if s.Cache.ClientCacheControl == "" {
			s.Cache.ClientCacheControl = "ignore"
		}
		if s.Cache.MaxL1Object == 0 {
			s.Cache.MaxL1Object = DefaultMaxL1Object
		}
	}
	if d := c.DNS; d != nil {
		def(&d.Listen, DefaultDNSListen)
		def(&d.Geo.DefaultRegion, DefaultGeoRegion)
		defDur(&d.Health.BeaconInterval, DefaultBeaconInterval)
		if d.Health.MissedBeacons == 0 {
			d.Health.MissedBeacons = DefaultMissedBeacons
		}
		defDur(&d.Health.ProbeInterval, DefaultProbeInterval)
		if d.Answers == 0 {
			d.Answers = DefaultAnswersPerQuery
		}
		for i := range d.Zones {
			z := &d.Zones[i]
			z.Apex = strings.ToLower(strings.TrimSuffix(z.Apex, "."))
			defDur(&z.TTL, DefaultAnswerTTL)
			if len(z.NS) == 0 && z.Apex != "" {
				ns := NameServer{Name: "ns1." + z.Apex}
				if host, _, err := net.SplitHostPort(d.Listen); err == nil && net.ParseIP(host) != nil {
					ns.Addresses = []string{host}
				}
				z.NS = []NameServer{ns}
			}
			if z.SOA.MName == "" && len(z.NS) > 0 {
				z.SOA.MName = z.NS[0].Name
			}
			def(&z.SOA.RName, "hostmaster."+z.Apex)
			if z.SOA.Serial == 0 {
				z.SOA.Serial = 1
			}
			defDur(&z.SOA.TTL, DefaultSOATTL)
			defDur(&z.SOA.Refresh, DefaultSOARefresh)
			defDur(&z.SOA.Retry, DefaultSOARetry)
			defDur(&z.SOA.Expire, DefaultSOAExpire)
			defDur(&z.SOA.Minimum, DefaultSOAMinimum)
		}
	}
}
