package tlsedge

import (
	"sort"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	handshakes     *prometheus.CounterVec
	acmeEvents     *prometheus.CounterVec
	reloads        *prometheus.CounterVec
	httpChallenges prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_tls_certificate_lookups_total",
			Help: "Certificates chosen for TLS handshakes, by outcome: site, default (unknown SNI answered with the default site), unknown_sni (refused), acme_challenge, error.",
		}, []string{"result"}),
		acmeEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_tls_acme_events_total",
			Help: "ACME certificate lifecycle events (cert_obtaining, cert_obtained, cert_failed, cached_managed_cert, cert_ocsp_revoked), by renewal or first order.",
		}, []string{"event", "renewal"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_tls_pem_reloads_total",
			Help: "PEM certificate reloads that changed something (ok) or were refused (error).",
		}, []string{"result"}),
		httpChallenges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_tls_http01_answers_total",
			Help: "ACME HTTP-01 validation requests answered on the plain-HTTP listener.",
		}),
	}
	return m
}

func (m *metrics) register(reg prometheus.Registerer, mgr *Manager) error {
	expiry := expiryCollector{m: mgr, desc: prometheus.NewDesc("meridian_tls_certificate_not_after_seconds",
		"Unix time at which the certificate served for a host name expires.", []string{"site", "name"}, nil)}
	for _, c := range []prometheus.Collector{m.handshakes, m.acmeEvents, m.reloads, m.httpChallenges, expiry} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// expiryCollector reports when each served certificate expires, so alerts
// can fire before a PEM file or a failing ACME renewal lets one lapse.
type expiryCollector struct {
	m    *Manager
	desc *prometheus.Desc
}

func (c expiryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c expiryCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.m.state.Load()
	if st == nil {
		return
	}
	sites := map[string]string{}
	for _, s := range st.sites {
		for _, n := range s.Names {
			sites[normalizeName(n)] = s.Site
		}
	}
	names := make([]string, 0, len(sites))
	for n := range sites {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if leaf := c.m.Leaf(n); leaf != nil {
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(leaf.NotAfter.Unix()), sites[n], n)
		}
	}
}
