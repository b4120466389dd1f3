package origin

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the origin request metrics, shared by every pool of a PoP.
type Metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	down     *prometheus.GaugeVec

	// owners is the pool whose servers each site's down series describe:
	// the last one made for the site. Closing it (the site was removed by a
	// reload) drops them; closing one it replaced does not.
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
				"so a truncated 200 is not counted as 2xx; connect, timeout or error when no response headers arrived.",
		}, []string{"site", "server", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "meridian_origin_header_seconds",
			Help:    "Time from sending a request to an origin to receiving its response headers.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
		}, []string{"site"}),
		down: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meridian_origin_server_down",
			Help: "1 while an origin server is marked down (its last attempt failed to connect, timed out or broke " +
				"before headers, and it has not answered since); 0 when it answers. Down servers are skipped " +
				"for the site's down period, then tried by one request at a time.",
		}, []string{"site", "server"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.latency, m.down)
	}
	return m
}

// Requests returns the request counter for one label set (for tests and
// dashboards built in code).
func (m *Metrics) Requests(site, server, outcome string) prometheus.Counter {
	return m.requests.WithLabelValues(site, server, outcome)
}

// ServerDown returns the down gauge of one server (for tests and dashboards
// built in code).
func (m *Metrics) ServerDown(site, server string) prometheus.Gauge {
	return m.down.WithLabelValues(site, server)
}
