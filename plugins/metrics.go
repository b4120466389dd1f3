package plugins

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the plugin series, labelled by site, plugin and version.
type metrics struct {
	calls     *prometheus.CounterVec
	errors    *prometheus.CounterVec
	seconds   *prometheus.HistogramVec
	memory    *prometheus.GaugeVec
	instances *prometheus.GaugeVec
}

// versionMetrics are one version's series, resolved once at activation so
// the request path does no label lookups.
type versionMetrics struct {
	callsReq, callsResp     prometheus.Counter
	secondsReq, secondsResp prometheus.Observer
	memory                  prometheus.Gauge
	live, idle              prometheus.Gauge
	errors                  *prometheus.CounterVec // curried by site, plugin, version
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	l := []string{"site", "plugin", "version"}
	m := &metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_plugin_calls_total", Help: "Plugin export calls by phase (request, response).",
		}, append(l, "phase")),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_plugin_errors_total", Help: "Failed or skipped plugin calls by kind (timeout, trap, memory, plugin_error, bad_output, input, instance, breaker_open, busy).",
		}, append(l, "kind")),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "meridian_plugin_call_seconds", Help: "Time per plugin call, including input and output copies.",
			Buckets: []float64{10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3},
		}, append(l, "phase")),
		memory: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meridian_plugin_instance_memory_bytes", Help: "Linear memory (plugin + kernel) of the last instance returned to the pool.",
		}, l),
		instances: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meridian_plugin_instances", Help: "Instances per version by state (live = idle + busy, idle).",
		}, append(l, "state")),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.calls, m.errors, m.seconds, m.memory, m.instances} {
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

// forVersion resolves a version's series and returns a func that deletes them.
func (m *metrics) forVersion(site, plugin string, version int) (versionMetrics, func()) {
	v := versionLabel(version)
	labels := prometheus.Labels{"site": site, "plugin": plugin, "version": v}
	errs := m.errors.MustCurryWith(labels)
	vm := versionMetrics{
		callsReq:    m.calls.WithLabelValues(site, plugin, v, "request"),
		callsResp:   m.calls.WithLabelValues(site, plugin, v, "response"),
		secondsReq:  m.seconds.WithLabelValues(site, plugin, v, "request"),
		secondsResp: m.seconds.WithLabelValues(site, plugin, v, "response"),
		memory:      m.memory.WithLabelValues(site, plugin, v),
		live:        m.instances.WithLabelValues(site, plugin, v, "live"),
		idle:        m.instances.WithLabelValues(site, plugin, v, "idle"),
		errors:      errs,
	}
	return vm, func() {
		for _, c := range []interface {
			DeletePartialMatch(prometheus.Labels) int
		}{m.calls, m.errors, m.seconds, m.memory, m.instances} {
			c.DeletePartialMatch(labels)
		}
	}
}
