package plugins

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// metrics are the plugin series, labelled by site, plugin and version.
//
// Call time and errors are counted on the request path (one histogram
// observation per call, on series resolved at activation). The call counts
// are the histogram's, read when the registry is scraped, as are instance
// counts and memory, so a request does not pay for them.
type metrics struct {
	calls   *callsCollector
	errors  *prometheus.CounterVec
	seconds *prometheus.HistogramVec
	pools   *poolCollector
}

// versionMetrics are one version's series, resolved once at activation so
// the request path does no label lookups.
type versionMetrics struct {
	secondsReq, secondsResp prometheus.Observer
	errors                  *prometheus.CounterVec // curried by site, plugin, version
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	l := []string{"site", "plugin", "version"}
	m := &metrics{
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_plugin_errors_total", Help: "Failed or skipped plugin calls by kind (timeout, trap, memory, plugin_error, bad_output, input, instance, breaker_open, busy).",
		}, append(l, "kind")),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "meridian_plugin_call_seconds", Help: "Time per plugin call, including input and output copies.",
			// From 1 µs: a small plugin's call on the native engine takes
			// about 0.3–2 µs, which a first bucket of 10 µs (as before)
			// could not tell from a call ten times slower. Up to 1 s, above
			// a call's timeout (50 ms by default, plus 250 ms on a fresh
			// instance's first call).
			Buckets: []float64{1e-6, 2.5e-6, 5e-6, 10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6,
				1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 1},
		}, append(l, "phase")),
		pools: &poolCollector{
			memory: prometheus.NewDesc("meridian_plugin_instance_memory_bytes",
				"Linear memory (plugin + kernel) of the most recently returned idle instance.", l, nil),
			instances: prometheus.NewDesc("meridian_plugin_instances",
				"Instances per version by state (live = idle + busy, idle).", append(l, "state"), nil),
			waiting: prometheus.NewDesc("meridian_plugin_waiting_requests",
				"Requests waiting for an instance of the version because all its instances are busy.", l, nil),
			versions: map[*pool][3]string{},
		},
	}
	m.calls = &callsCollector{
		desc: prometheus.NewDesc("meridian_plugin_calls_total", "Plugin export calls by phase (request, response).", append(l, "phase"), nil),
		hist: m.seconds,
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.calls, m.errors, m.seconds, m.pools} {
			if err := reg.Register(c); err != nil {
				var are prometheus.AlreadyRegisteredError
				if errors.As(err, &are) {
					return nil, errors.New("plugins: metrics already registered on this Registerer: give each Host its own")
				}
				return nil, err
			}
		}
	}
	return m, nil
}

// forVersion resolves a version's series, starts reporting its pool, and
// returns a func that deletes its series.
func (m *metrics) forVersion(site, plugin, v string, p *pool) (versionMetrics, func()) {
	labels := prometheus.Labels{"site": site, "plugin": plugin, "version": v}
	errs := m.errors.MustCurryWith(labels)
	vm := versionMetrics{
		secondsReq:  m.seconds.WithLabelValues(site, plugin, v, "request"),
		secondsResp: m.seconds.WithLabelValues(site, plugin, v, "response"),
		errors:      errs,
	}
	m.pools.add(p, [3]string{site, plugin, v})
	return vm, func() {
		m.pools.remove(p)
		for _, c := range []interface {
			DeletePartialMatch(prometheus.Labels) int
		}{m.errors, m.seconds} {
			c.DeletePartialMatch(labels)
		}
	}
}

// callsCollector reports meridian_plugin_calls_total at scrape time from
// the call-time histogram, which observes every call: a separate counter
// was one more atomic add per call on a cache line the other cores write
// too (about 40 ns of a plugin hit on two cores).
type callsCollector struct {
	desc *prometheus.Desc
	hist *prometheus.HistogramVec
}

// Describe implements prometheus.Collector.
func (c *callsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *callsCollector) Collect(ch chan<- prometheus.Metric) {
	hs := make(chan prometheus.Metric, 64)
	go func() {
		c.hist.Collect(hs)
		close(hs)
	}()
	for h := range hs {
		var pb dto.Metric
		if err := h.Write(&pb); err != nil || pb.GetHistogram() == nil {
			continue
		}
		// The histogram's labels, in the counter's order.
		var vals [4]string
		for _, lp := range pb.GetLabel() {
			switch lp.GetName() {
			case "site":
				vals[0] = lp.GetValue()
			case "plugin":
				vals[1] = lp.GetValue()
			case "version":
				vals[2] = lp.GetValue()
			case "phase":
				vals[3] = lp.GetValue()
			}
		}
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(pb.GetHistogram().GetSampleCount()), vals[:]...)
	}
}

// poolCollector reports every active version's instances and memory at
// scrape time.
type poolCollector struct {
	memory, instances, waiting *prometheus.Desc

	mu       sync.Mutex
	versions map[*pool][3]string // site, plugin, version labels
}

func (c *poolCollector) add(p *pool, labels [3]string) {
	c.mu.Lock()
	c.versions[p] = labels
	c.mu.Unlock()
}

func (c *poolCollector) remove(p *pool) {
	c.mu.Lock()
	delete(c.versions, p)
	c.mu.Unlock()
}

// Describe implements prometheus.Collector.
func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.memory
	ch <- c.instances
	ch <- c.waiting
}

// Collect implements prometheus.Collector.
func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for p, l := range c.versions {
		live, idle, waiting, mem := p.report()
		ch <- prometheus.MustNewConstMetric(c.memory, prometheus.GaugeValue, float64(mem), l[0], l[1], l[2])
		ch <- prometheus.MustNewConstMetric(c.instances, prometheus.GaugeValue, float64(live), l[0], l[1], l[2], "live")
		ch <- prometheus.MustNewConstMetric(c.instances, prometheus.GaugeValue, float64(idle), l[0], l[1], l[2], "idle")
		ch <- prometheus.MustNewConstMetric(c.waiting, prometheus.GaugeValue, float64(waiting), l[0], l[1], l[2])
	}
}
