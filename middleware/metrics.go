package middleware

import (
	"net/http"
	"sync"
	"sync/atomic"
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
	// bySite holds each site's series, resolved once: WithLabelValues
	// hashes its labels and takes a lock on every call, a tenth of a
	// cached hit's cost.
	bySite sync.Map // site -> *siteSeries
}

// siteSeries are one site's series; requests by method and status class,
// resolved on first use.
type siteSeries struct {
	duration prometheus.Observer
	bytes    prometheus.Counter
	requests [len(methodLabels) + 1][5]atomic.Pointer[prometheus.Counter]
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
		m.ObserveSite(m.site(r), r.Method, status, bytes, elapsed)
	}
}

// ObserveSite counts a request of site, for a server that has no
// http.Request for it (the cache's fast path).
func (m *RequestMetrics) ObserveSite(site, method string, status int, bytes int64, elapsed time.Duration) {
	s := m.series(site)
	mi, ci := methodIndex(method), codeIndex(status)
	c := s.requests[mi][ci].Load()
	if c == nil {
		cc := m.requests.WithLabelValues(site, methodLabelAt(mi), codeLabels[ci])
		c = &cc
		s.requests[mi][ci].Store(c)
	}
	(*c).Inc()
	s.duration.Observe(elapsed.Seconds())
	s.bytes.Add(float64(bytes))
}

func (m *RequestMetrics) series(site string) *siteSeries {
	if s, ok := m.bySite.Load(site); ok {
		return s.(*siteSeries)
	}
	s := &siteSeries{duration: m.duration.WithLabelValues(site), bytes: m.bytes.WithLabelValues(site)}
	v, _ := m.bySite.LoadOrStore(site, s)
	return v.(*siteSeries)
}

// methodLabels are the methods counted by name; others count as OTHER.
var methodLabels = [...]string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodDelete,
	http.MethodPatch, http.MethodOptions, http.MethodConnect, http.MethodTrace}

var codeLabels = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

func methodIndex(m string) int {
	for i, l := range methodLabels {
		if m == l {
			return i
		}
	}
	return len(methodLabels)
}

func methodLabelAt(i int) string {
	if i < len(methodLabels) {
		return methodLabels[i]
	}
	return "OTHER"
}

func methodLabel(m string) string { return methodLabelAt(methodIndex(m)) }

func codeIndex(status int) int { return min(max(status/100, 1), 5) - 1 }

func codeLabel(status int) string { return codeLabels[codeIndex(status)] }

// Counter returns the request counter for one label set, for tests.
func (m *RequestMetrics) Counter(site, method string, status int) prometheus.Counter {
	return m.requests.WithLabelValues(site, methodLabel(method), codeLabel(status))
}
