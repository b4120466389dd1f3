package middleware

import (
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// SiteFunc names the site a request belongs to, for metric labels. A
// request that matches no site is named UnknownSite (or "", which counts as
// UnknownSite).
type SiteFunc func(r *http.Request) string

// UnknownSite is the site label of requests whose Host matches no site. It
// cannot be a site's name (names are lower-case letters, digits and '-',
// starting with a letter or digit: internal/config), so it never mixes a
// real site's requests with misdirected ones.
const UnknownSite = "_unknown"

// RequestMetrics counts requests and their latency by site, method class and
// status class, and the responses the PoP made itself. Labels are bounded:
// the method is folded to a known set.
type RequestMetrics struct {
	requests  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	bytes     *prometheus.CounterVec
	generated *prometheus.CounterVec
	cut       *prometheus.CounterVec
	site      SiteFunc
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

// NewRequestMetrics registers the metrics on reg (nil: unregistered),
// without a pop label; a PoP uses NewPoPRequestMetrics.
func NewRequestMetrics(reg prometheus.Registerer, site SiteFunc) *RequestMetrics {
	return NewPoPRequestMetrics(reg, "", site)
}

// NewPoPRequestMetrics registers the metrics of the PoP with id popID on reg
// (nil: unregistered). Every series carries pop="<popID>", as the cache's
// and the DNS server's metrics do, so dashboards join them; an empty popID
// leaves the label out.
//
//	meridian_http_requests_total{pop,site,method,code}          code: status class (2xx...)
//	meridian_http_request_seconds{pop,site}
//	meridian_http_response_bytes_total{pop,site}
//	meridian_http_responses_generated_total{pop,site,code,reason}  responses the PoP made itself (MarkGenerated), not the origin's
//	meridian_http_responses_cut_total{pop,site,reason}          responses whose body was cut after the header (MarkBodyError)
func NewPoPRequestMetrics(reg prometheus.Registerer, popID string, site SiteFunc) *RequestMetrics {
	var pop prometheus.Labels
	if popID != "" {
		pop = prometheus.Labels{"pop": popID}
	}
	m := &RequestMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_http_requests_total", Help: "HTTP requests served, by site, method and status class.", ConstLabels: pop,
		}, []string{"site", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "meridian_http_request_seconds", Help: "Time to serve an HTTP request, by site.", ConstLabels: pop,
			Buckets: prometheus.ExponentialBuckets(0.0001, 3, 12),
		}, []string{"site"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_http_response_bytes_total", Help: "Response body bytes sent, by site.", ConstLabels: pop,
		}, []string{"site"}),
		generated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_http_responses_generated_total", ConstLabels: pop,
			Help: "Responses the PoP made itself instead of passing on the origin's (origin unreachable or too slow, plugin failure), by site, status code and reason. Also counted in meridian_http_requests_total.",
		}, []string{"site", "code", "reason"}),
		cut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_http_responses_cut_total", ConstLabels: pop,
			Help: "Responses whose body was cut after the status went out (the origin's body ended early or stalled, a stored copy failed its checksum), by site and reason. Also counted, by the status sent, in meridian_http_requests_total.",
		}, []string{"site", "reason"}),
		site: site,
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.duration, m.bytes, m.generated, m.cut)
	}
	return m
}

// Observer returns the Observer feeding these metrics.
func (m *RequestMetrics) Observer() Observer {
	return func(r *http.Request, status int, bytes int64, elapsed time.Duration) {
		ctx := r.Context()
		m.ObserveAccess(m.site(r), Generated(ctx), Access{
			Method: r.Method, Status: status, Bytes: bytes, Elapsed: elapsed, BodyError: BodyError(ctx),
		})
	}
}

// ObserveAccess counts one answered request of site from a's method,
// status, bytes, elapsed time and BodyError (ObserveSite, and ObserveCut
// when the body was cut), plus ObserveGenerated when generated (why the PoP
// made the answer itself) is set: what Observer records, for a server that
// has its own record of the request (the PoP, for both of its paths).
func (m *RequestMetrics) ObserveAccess(site, generated string, a Access) {
	m.ObserveSite(site, a.Method, a.Status, a.Bytes, a.Elapsed)
	if generated != "" {
		m.ObserveGenerated(site, a.Status, generated)
	}
	if a.BodyError != "" {
		m.ObserveCut(site, a.BodyError)
	}
}

// ObserveCut counts a response of site whose body was cut after the
// header, for reason (MarkBodyError's word), for a server that has no
// http.Request for it (the cache's fast path). ObserveSite counts the
// request itself.
func (m *RequestMetrics) ObserveCut(site, reason string) {
	if site == "" {
		site = UnknownSite
	}
	m.cut.WithLabelValues(site, reason).Inc()
}

// InitCut makes site's meridian_http_responses_cut_total series for
// reasons exist at 0 before any body is cut, so that a rate or an alert on
// them sees a series from the start.
func (m *RequestMetrics) InitCut(site string, reasons ...string) {
	if site == "" {
		site = UnknownSite
	}
	for _, r := range reasons {
		m.cut.WithLabelValues(site, r)
	}
}

// ObserveGenerated counts a response the PoP made itself for site (a 421
// for an unknown host, a 502 for an unreachable origin), for code that
// answers without MarkGenerated; reason is a fixed word, not request data.
// ObserveSite counts the request itself.
func (m *RequestMetrics) ObserveGenerated(site string, status int, reason string) {
	if site == "" {
		site = UnknownSite
	}
	m.generated.WithLabelValues(site, strconv.Itoa(status), reason).Inc()
}

// ObserveSite counts a request of site, for a server that has no
// http.Request for it (the cache's fast path).
func (m *RequestMetrics) ObserveSite(site, method string, status int, bytes int64, elapsed time.Duration) {
	if site == "" {
		site = UnknownSite
	}
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
// The pop label, when set, is constant and not an argument.
func (m *RequestMetrics) Counter(site, method string, status int) prometheus.Counter {
	return m.requests.WithLabelValues(site, methodLabel(method), codeLabel(status))
}

// GeneratedCounter returns the counter of responses the PoP made itself for
// one label set, for tests.
func (m *RequestMetrics) GeneratedCounter(site string, status int, reason string) prometheus.Counter {
	return m.generated.WithLabelValues(site, strconv.Itoa(status), reason)
}
