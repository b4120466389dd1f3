package dnsrouter

import (
	"github.com/meridian-edge/meridian/dnsrouter/health"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are created for every server and registered only when
// Options.Registerer is set.
type metrics struct {
	queries   *prometheus.CounterVec // type, rcode, pop
	ecs       prometheus.Counter
	failOpen  prometheus.Counter
	spilled   *prometheus.CounterVec // pop that shed the query
	latency   prometheus.Histogram
	rrl       *prometheus.CounterVec // action
	dropped   *prometheus.CounterVec // reason
	stale     prometheus.Gauge
	served    *prometheus.GaugeVec // pop
	badBeacon prometheus.Counter
	unknown   *prometheus.CounterVec // pop
	// answers, wildcards and chased count what answered (answerKind),
	// resolved once so that the query path looks no label up for them.
	answerVec *prometheus.CounterVec
	answers   [numKinds]prometheus.Counter
	wildcards prometheus.Counter
	chased    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_dns_queries_total", Help: "DNS queries answered, by query type, response code and first PoP answered.",
		}, []string{"type", "rcode", "pop"}),
		ecs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_dns_ecs_queries_total", Help: "Queries that carried a valid EDNS Client Subnet option (ECS share = this / queries_total).",
		}),
		failOpen: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_dns_fail_open_total", Help: "Answers given while no candidate PoP was healthy (nearest answered anyway).",
		}),
		spilled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_dns_spilled_total", Help: "Queries a PoP over its capacity threshold shed to a farther PoP, by the shedding PoP.",
		}, []string{"pop"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "meridian_dns_answer_duration_seconds", Help: "Time from reading a query to having its answer ready.",
			Buckets: []float64{2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2, 0.1},
		}),
		rrl: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_dns_rrl_total", Help: "Responses limited by response rate limiting, by action (drop, slip).",
		}, []string{"action"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_dns_dropped_total", Help: "Queries not answered, by reason (malformed, budget).",
		}, []string{"reason"}),
		stale: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meridian_dns_health_stale", Help: "1 while the beacon feed (NATS) is unreachable and answers use the last health view.",
		}),
		served: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meridian_dns_pop_served", Help: "1 when the PoP may be answered (beacons and probe agree), else 0.",
		}, []string{"pop"}),
		badBeacon: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_dns_beacons_rejected_total", Help: "Beacons dropped as malformed or of another version.",
		}),
		unknown: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_dns_unknown_beacons_total", Help: "Beacons from PoPs not in this DNS server's configuration (ignored), by PoP id (\"other\" past 64 ids). Usually a PoP missing from the DNS configuration.",
		}, []string{"pop"}),
		answerVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_dns_answers_total", Help: "Answers by what answered: geo (a geo-routed name's PoPs, also through an alias or a CNAME), static (static records), zone (SOA, NS, glue), referral (a delegated name), negative (NXDOMAIN or NODATA), none (refused or malformed).",
		}, []string{"kind"}),
		wildcards: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_dns_wildcard_answers_total", Help: "Answers made from a wildcard (RFC 4592), geo-routed or static.",
		}),
		chased: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_dns_cnames_chased_total", Help: "CNAMEs to names in our zones followed within answers.",
		}),
	}
	for k := range m.answers {
		m.answers[k] = m.answerVec.WithLabelValues(answerKind(k).String())
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.queries, m.ecs, m.failOpen, m.spilled, m.latency, m.rrl, m.dropped, m.stale, m.served, m.badBeacon, m.unknown,
			m.answerVec, m.wildcards, m.chased} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *metrics) healthChanged(s *health.Snapshot) {
	if s.Stale {
		m.stale.Set(1)
	} else {
		m.stale.Set(0)
	}
	m.served.Reset()
	for _, p := range s.PoPs {
		v := 0.0
		if p.Served {
			v = 1
		}
		m.served.WithLabelValues(p.ID).Set(v)
	}
}

func typeLabel(t uint16) string {
	switch t {
	case dns.TypeA, dns.TypeAAAA, dns.TypeNS, dns.TypeSOA, dns.TypeCNAME, dns.TypeANY, dns.TypeMX, dns.TypeTXT, dns.TypeHTTPS, dns.TypeSVCB, dns.TypeCAA, dns.TypeDS, dns.TypeDNSKEY, dns.TypePTR, dns.TypeSRV:
		return dns.TypeToString[t]
	case 0:
		return "none"
	}
	return "other"
}

// rcodeLabel names the rcode of an answer's header and OPT record.
// RcodeToString names 16 BADSIG, but BADSIG is a TSIG error (RFC 8945)
// carried in the TSIG record, never in a message's rcode; an rcode of 16
// in the header and OPT is BADVERS (RFC 6891), the only meaning our
// answers (which have no TSIG) can give it.
func rcodeLabel(r int) string {
	if r == dns.RcodeBadVers {
		return "BADVERS"
	}
	if s, ok := dns.RcodeToString[r]; ok {
		return s
	}
	return "other"
}
