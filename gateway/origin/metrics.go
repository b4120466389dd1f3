package origin

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the origin request metrics, shared by every pool of a PoP.
type Metrics struct {
	requests *prometheus.CounterVec
	checks   *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	downDesc *prometheus.Desc

	// owners is the pool serving each site (Pool.Activate), whose servers
	// meridian_origin_server_down reports when scraped. Only these: a pool
	// built by a reload that was then refused never becomes an owner, so it
	// cannot change what the serving pool's series say.
	mu     sync.Mutex
	owners map[string]*Pool
}

// NewMetrics creates and registers origin metrics on reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_origin_requests_total",
			Help: "Attempts sent to origin servers, by site, server and outcome, each counted once when it ends: " +
				"the status class (1xx..5xx) once the body was read to its end or closed by the PoP; " +
				"body_error when headers arrived but the origin's body ended early (idle or total timeout, reset), " +
				"so a truncated 200 is not counted as 2xx; connect, timeout or error when no response headers arrived; " +
				"busy when the server was at its max_conns and was not asked.",
		}, []string{"site", "server", "outcome"}),
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_origin_health_checks_total",
			Help: "Active health probes of origin servers (sites[].health_check), by site, server and result (pass: 2xx or 3xx in time; fail).",
		}, []string{"site", "server", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "meridian_origin_header_seconds",
			Help:    "Time from sending a request to an origin to receiving its response headers.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
		}, []string{"site"}),
		downDesc: prometheus.NewDesc("meridian_origin_server_down",
			"1 while an origin server is marked down (its last attempt failed to connect, timed out or broke "+
				"before headers, and it has not answered since; or its health checks failed and have not passed since); "+
				"0 when it answers. Down servers are skipped "+
				"for the site's down period, then tried by one request at a time. One series per server of "+
				"the pool serving each site, read when scraped.",
			[]string{"site", "server"}, nil),
		owners: map[string]*Pool{},
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.checks, m.latency, downCollector{m})
	}
	return m
}

// Requests returns the request counter for one label set (for tests and
// dashboards built in code).
func (m *Metrics) Requests(site, server, outcome string) prometheus.Counter {
	return m.requests.WithLabelValues(site, server, outcome)
}

// Checks returns the health probe counter for one label set (for tests
// and dashboards built in code).
func (m *Metrics) Checks(site, server, result string) prometheus.Counter {
	return m.checks.WithLabelValues(site, server, result)
}

// activate makes p its site's owner, unless p is closed (a late Activate
// must not bring back the series of a pool a reload removed).
func (m *Metrics) activate(p *Pool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !p.closed.Load() {
		if prev := m.owners[p.opts.Site]; prev != nil && prev != p {
			p.inherit(prev)
		}
		m.owners[p.opts.Site] = p
	}
}

// deactivate drops p's site from the reported ones when p is its owner.
func (m *Metrics) deactivate(p *Pool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.owners[p.opts.Site] == p {
		delete(m.owners, p.opts.Site)
	}
}

// downCollector reports meridian_origin_server_down from the owners' state
// when scraped, so the series are always those of the pools serving now.
type downCollector struct{ m *Metrics }

// Describe implements prometheus.Collector.
func (c downCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.m.downDesc }

// Collect implements prometheus.Collector.
func (c downCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	pools := make([]*Pool, 0, len(c.m.owners))
	for _, p := range c.m.owners {
		pools = append(pools, p)
	}
	c.m.mu.Unlock()
	for _, p := range pools {
		for _, h := range p.hosts {
			v := 0.0
			if h.down() {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(c.m.downDesc, prometheus.GaugeValue, v, p.opts.Site, h.host)
		}
	}
}
