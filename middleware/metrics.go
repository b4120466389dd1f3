package middleware

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// SiteFunc names the site a request belongs to, for metric labels.
type SiteFunc func(r *http.Request) string

// RequestMetrics counts requests and their latency by site, method class and
// status class. Labels are bounded: the method is folded to a known set.
type RequestMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	bytes    *prometheus.CounterVec
	site     SiteFunc
}

// NewRequestMetrics registers the metrics on reg (nil: unregistered).
func NewRequestMetrics(reg prometheus.Registerer, site SiteFunc) *RequestMetrics {
	m := &RequestMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_http_requests_total", Help: "HTTP requests served, by site, method and status class.",
		}, []string{"site", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "meridian_http_request_seconds", Help: "Time to serve an HTTP request, by site.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 3, 12),
		}, []string{"site"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_http_response_bytes_total", Help: "Response body bytes sent, by site.",
		}, []string{"site"}),
		site: site,
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.duration, m.bytes)
	}
	return m
}

// Observer returns the Observer feeding these metrics.
func (m *RequestMetrics) Observer() Observer {
	return func(r *http.Request, status int, bytes int64, elapsed time.Duration) {
		site := m.site(r)
		m.requests.WithLabelValues(site, methodLabel(r.Method), codeLabel(status)).Inc()
		m.duration.WithLabelValues(site).Observe(elapsed.Seconds())
		m.bytes.WithLabelValues(site).Add(float64(bytes))
	}
}

func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodDelete,
		http.MethodPatch, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "OTHER"
}

func codeLabel(status int) string {
	return [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}[min(max(status/100, 1), 5)-1]
}

// Counter returns the request counter for one label set, for tests.
func (m *RequestMetrics) Counter(site, method string, status int) prometheus.Counter {
	return m.requests.WithLabelValues(site, methodLabel(method), codeLabel(status))
}
