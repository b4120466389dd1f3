package testutil

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// MetricSum adds up the series called name in g that carry every label of
// labels (nil: all series): a counter's or gauge's value, a histogram's
// sample count. For tests that assert what a component counted.
func MetricSum(t testing.TB, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if hasLabels(m, labels) {
				total += m.GetCounter().GetValue() + m.GetGauge().GetValue() + float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return total
}

// CounterSum is MetricSum for the series whose label has value.
func CounterSum(t testing.TB, g prometheus.Gatherer, name, label, value string) float64 {
	t.Helper()
	return MetricSum(t, g, name, map[string]string{label: value})
}

func hasLabels(m *dto.Metric, labels map[string]string) bool {
next:
	for k, v := range labels {
		for _, l := range m.GetLabel() {
			if l.GetName() == k && l.GetValue() == v {
				continue next
			}
		}
		return false
	}
	return true
}
