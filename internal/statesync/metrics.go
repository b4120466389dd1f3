package statesync

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	received      *prometheus.CounterVec
	dropped       *prometheus.CounterVec
	published     *prometheus.CounterVec
	publishErrors prometheus.Counter
	applied       prometheus.Counter
	queued        prometheus.Counter
	queueDepth    prometheus.Gauge
	degraded      prometheus.Gauge
	logSeq        prometheus.Gauge
	gaps          prometheus.Counter
	auditMisses   prometheus.Counter
	propagation   prometheus.Histogram
	expired       *prometheus.CounterVec

	// recv holds the received counters of the known kind and path pairs,
	// resolved once: WithLabelValues hashes the labels and takes a lock on
	// every call, which on the fast path ran for every delta on every node.
	// Read-only after newMetrics.
	recv map[recvLabels]prometheus.Counter
}

type recvLabels struct{ kind, via string }

// seenCounter returns the counter of deltas that arrived via path after the
// other path had delivered them, without building "<via>-seen" per call
// (about half of all deliveries are such copies).
func (m *metrics) seenCounter(via string) prometheus.Counter {
	switch via {
	case "core":
		return m.recv[recvLabels{kindDelta, "core-seen"}]
	case "log":
		return m.recv[recvLabels{kindDelta, "log-seen"}]
	}
	return m.received.WithLabelValues(kindDelta, via+"-seen")
}

// receivedCounter returns the counter of messages of kind accepted via path.
func (m *metrics) receivedCounter(kind, via string) prometheus.Counter {
	if c, ok := m.recv[recvLabels{kind, via}]; ok {
		return c
	}
	return m.received.WithLabelValues(kind, via)
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		received: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_sync_messages_received_total",
			Help: "Sync messages accepted, by kind and path (core, log, digest, repair)."}, []string{"kind", "via"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_sync_messages_dropped_total",
			Help: "Sync messages dropped unapplied, by reason (oversized, malformed, version, invalid)."}, []string{"reason"}),
		published: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_sync_messages_published_total",
			Help: "Sync messages published, by kind."}, []string{"kind"}),
		publishErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "meridian_sync_publish_errors_total",
			Help: "Failed publishes of own deltas (the delta is queued on disk)."}),
		applied: prometheus.NewCounter(prometheus.CounterOpts{Name: "meridian_sync_keys_changed_total",
			Help: "Keys changed by merging remote deltas, repairs or log entries."}),
		queued: prometheus.NewCounter(prometheus.CounterOpts{Name: "meridian_sync_deltas_queued_total",
			Help: "Own deltas written to the degraded-mode queue."}),
		queueDepth: prometheus.NewGauge(prometheus.GaugeOpts{Name: "meridian_sync_queue_depth",
			Help: "Own deltas waiting in the degraded-mode queue."}),
		degraded: prometheus.NewGauge(prometheus.GaugeOpts{Name: "meridian_sync_degraded",
			Help: "1 while own deltas cannot be published."}),
		logSeq: prometheus.NewGauge(prometheus.GaugeOpts{Name: "meridian_sync_log_sequence",
			Help: "Last durable-log sequence applied."}),
		gaps: prometheus.NewCounter(prometheus.CounterOpts{Name: "meridian_sync_delta_gaps_total",
			Help: "Deltas whose sender numbering skipped, showing the fast path lost one; each starts a catch-up from the log."}),
		auditMisses: prometheus.NewCounter(prometheus.CounterOpts{Name: "meridian_sync_log_audit_misses_total",
			Help: "Periodic log audits that found a delta this node had not applied (and replayed it)."}),
		propagation: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "meridian_sync_propagation_seconds",
			Help:    "Sender clock to local apply of remote deltas (includes clock skew between nodes).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5, 30}}),
		expired: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_sync_expired_keys_dropped_total",
			Help: "Plugin KV keys and counters written with a TTL that compaction dropped from memory after their expiry and the expiry grace, by kind: kv (the value; a small tombstone stays only if it hides an older value), counter."}, []string{"kind"}),
	}
	m.expired.WithLabelValues("kv")
	m.expired.WithLabelValues("counter")
	m.recv = map[recvLabels]prometheus.Counter{}
	for _, l := range []recvLabels{{kindDelta, "core"}, {kindDelta, "log"}, {kindDelta, "core-seen"}, {kindDelta, "log-seen"},
		{kindDigest, "digest"}, {kindRepair, "repair"}} { // the pairs that occur; others resolve per call
		m.recv[l] = m.received.WithLabelValues(l.kind, l.via)
	}
	if reg != nil {
		reg.MustRegister(m.received, m.dropped, m.published, m.publishErrors, m.queued, m.applied, m.queueDepth, m.degraded, m.logSeq, m.gaps, m.auditMisses, m.propagation, m.expired)
	}
	return m
}
