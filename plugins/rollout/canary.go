package rollout

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-edge/meridian/internal/statesync"
	"github.com/meridian-edge/meridian/plugins"
)

// callStats are a slot's cumulative calls and failures on this PoP.
type callStats struct{ calls, failures float64 }

// preCall reports whether an error kind fails a request without a call
// being counted in meridian_plugin_calls_total.
func preCall(kind string) bool {
	switch plugins.ErrorKind(kind) {
	case plugins.KindInput, plugins.KindInstance, plugins.KindBreakerOpen, plugins.KindBusy:
		return true
	}
	return false
}

// gatherStats reads every slot's counters from the Host's metrics.
func (mg *Manager) gatherStats() map[slotKey]callStats {
	if mg.opts.Metrics == nil {
		return nil
	}
	mfs, err := mg.opts.Metrics.Gather()
	if err != nil && len(mfs) == 0 {
		mg.log.Warn("reading plugin metrics for canary checks failed", "err", err)
		return nil
	}
	out := map[slotKey]callStats{}
	for _, mf := range mfs {
		name := mf.GetName()
		if name != "meridian_plugin_calls_total" && name != "meridian_plugin_errors_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var site, slot, version, kind string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "site":
					site = l.GetValue()
				case "plugin":
					slot = l.GetValue()
				case "version":
					version = l.GetValue()
				case "kind":
					kind = l.GetValue()
				}
			}
			// A Host labelling with MetricLabels says plugin "P", version
			// "N" for slot "P@N"; one without says plugin "P@N".
			if n, err := strconv.Atoi(version); err == nil && !strings.Contains(slot, "@") {
				slot = slotName(slot, n)
			}
			k := slotKey{site, slot}
			s := out[k]
			v := m.GetCounter().GetValue()
			if name == "meridian_plugin_calls_total" {
				s.calls += v
			} else {
				s.failures += v
				if preCall(kind) {
					s.calls += v
				}
			}
			out[k] = s
		}
	}
	return out
}

// statsLocked is one slot's current counters.
func (mg *Manager) statsLocked(site, slot string) callStats {
	return mg.gatherStats()[slotKey{site, slot}]
}

// judgeCanaries rolls back every canary whose error rate on this PoP passed
// the threshold. The rollback is a deployment record, so every PoP follows.
func (mg *Manager) judgeCanaries(ctx context.Context) {
	if mg.opts.Metrics == nil {
		return
	}
	mg.mu.Lock()
	var watch []pluginKey
	for k, a := range mg.applied {
		if a.target.Canary != 0 && a.target.Percent > 0 && !a.rolledBack {
			watch = append(watch, k)
		}
	}
	mg.mu.Unlock()
	if len(watch) == 0 {
		return
	}
	stats := mg.gatherStats()
	for _, k := range watch {
		mg.mu.Lock()
		a := mg.applied[k]
		if a == nil || a.target.Canary == 0 || a.rolledBack {
			mg.mu.Unlock()
			continue
		}
		t, base := a.target, a.base
		now := stats[slotKey{k.site, slotName(k.plugin, t.Canary)}]
		calls, failures := now.calls-base.calls, now.failures-base.failures
		bad := calls >= float64(mg.opts.CanaryMinCalls) && failures/calls > mg.opts.CanaryErrorThreshold
		if bad {
			a.rolledBack = true
		}
		mg.mu.Unlock()
		if !bad {
			continue
		}
		rate := failures / calls
		mg.log.Warn("canary failing: rolling back on every PoP", "site", k.site, "plugin", k.plugin,
			"canary", t.Canary, "back_to", t.Stable, "calls", calls, "failures", failures, "error_rate", rate, "threshold", mg.opts.CanaryErrorThreshold)
		err := mg.writeRollback(ctx, k, t, t.Stable, "auto-rollback@"+mg.opts.PoPID)
		if err != nil {
			mg.log.Error("automatic rollback failed; will try again", "site", k.site, "plugin", k.plugin, "err", err)
			mg.mu.Lock()
			if a := mg.applied[k]; a != nil && a.target == t {
				a.rolledBack = false
			}
			mg.mu.Unlock()
			continue
		}
		mg.m.autoRollbacks.Inc()
	}
}

// writeRollback records that k goes back to version to (0: none), unless the
// record changed from expect meanwhile (another PoP or a person acted).
func (mg *Manager) writeRollback(ctx context.Context, k pluginKey, expect Target, to int, by string) error {
	if d, ok := mg.opts.Sync.Deployment(k.site, k.plugin); ok {
		if cur, err := decodeTarget(d); err == nil && cur != expect {
			return nil
		}
	}
	return mg.deploy(ctx, k, Target{Stable: to}, true, by)
}

// deploy writes the deployment record for t.
func (mg *Manager) deploy(ctx context.Context, k pluginKey, t Target, rolledBack bool, by string) error {
	d := statesync.Deployment{Site: k.site, Plugin: k.plugin, Version: t.versionString(),
		CanaryPercent: t.percent(), RolledBack: rolledBack, At: time.Now(), By: by}
	head := t.Stable
	if t.Canary != 0 {
		head = t.Canary
	}
	if head != 0 {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		st := mg.st.Load()
		if st == nil {
			return errors.New("JetStream is not reachable from this PoP: the deployment cannot be recorded now")
		}
		v, err := st.version(ctx, k.site, k.plugin, head)
		if err != nil {
			return err
		}
		d.SHA256 = v.SHA256
	}
	if err := mg.opts.Sync.Deploy(ctx, d); err != nil && !errors.Is(err, statesync.ErrQueueFull) {
		return err
	}
	return nil
}

// metrics are the rollout series.
type metrics struct {
	applied       prometheus.Counter
	applyFailures prometheus.Counter
	autoRollbacks prometheus.Counter
	applySeconds  prometheus.Histogram
	missing       prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		applied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_plugin_deployments_applied_total", Help: "Deployment records this PoP applied (versions fetched, compiled and activated).",
		}),
		applyFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_plugin_deployment_failures_total", Help: "Attempts to apply a deployment record that failed (retried each check interval).",
		}),
		autoRollbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_plugin_auto_rollbacks_total", Help: "Canaries this PoP rolled back because their error rate passed the threshold.",
		}),
		applySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "meridian_plugin_deployment_apply_seconds", Help: "Time from a deployment record's write to this PoP running it.",
			Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
		}),
		missing: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meridian_plugin_deployments_missing",
			Help: "Plugins deployed before this PoP started that it has not activated yet (loading, or failed to load: see the log); fail-closed sites answer 503 for the requests they would run.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.applied, m.applyFailures, m.autoRollbacks, m.applySeconds, m.missing} {
			if err := reg.Register(c); err != nil {
				return nil, errors.New("rollout: register metrics: " + err.Error() + " (give each Manager its own Registerer)")
			}
		}
	}
	return m, nil
}
