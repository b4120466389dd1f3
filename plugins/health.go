package plugins

import (
	"fmt"
	"time"
)

// Breaker states as Health reports them.
const (
	BreakerClosed   = "closed"    // calls run
	BreakerOpen     = "open"      // calls are skipped until the cooldown ends
	BreakerHalfOpen = "half-open" // one trial call runs and decides
)

// Health is how a plugin's active version has been doing on this PoP, from
// what its circuit breaker counts: no call pays anything for it. An admin
// API serves it so that a listing can tell a failing plugin from a working
// one.
type Health struct {
	// Breaker is BreakerClosed, BreakerOpen or BreakerHalfOpen.
	Breaker string `json:"breaker"`
	// Calls and Failed are the recent calls and how many of them failed.
	// While the breaker is closed: those of the last Window (successes
	// are estimated when failures are rare; see breaker.go). While it is
	// open or half-open: the calls that opened it plus every call ended
	// since (the trial calls).
	Calls  int `json:"calls"`
	Failed int `json:"failed"`
	// Window is how far back a closed breaker counts; 0 while open.
	Window time.Duration `json:"window,omitempty"`
	// OpenedAt is when the breaker last opened; zero while closed.
	OpenedAt time.Time `json:"opened_at,omitzero"`
}

// Summary says in a few words how the version is doing, for a listing:
// "ok"; "degraded (2% of last 120 calls)" when some recent calls failed;
// "failing (60% of last 10 calls)" when half or more did; "failing
// (breaker open, 100% of last 5 calls)" while its breaker skips it.
func (h Health) Summary() string {
	switch {
	case h.Breaker == BreakerOpen || h.Breaker == BreakerHalfOpen:
		return fmt.Sprintf("failing (breaker %s, %s of last %d calls)", h.Breaker, percent(h.Failed, h.Calls), h.Calls)
	case h.Failed == 0:
		return "ok"
	case 2*h.Failed >= h.Calls:
		return fmt.Sprintf("failing (%s of last %d calls)", percent(h.Failed, h.Calls), h.Calls)
	}
	return fmt.Sprintf("degraded (%s of last %d calls)", percent(h.Failed, h.Calls), h.Calls)
}

// percent writes part/whole as a whole percentage, "<1%" for a share that
// is not zero but rounds to it.
func percent(part, whole int) string {
	if whole <= 0 || part <= 0 {
		return "0%"
	}
	p := (100*part + whole/2) / whole
	if p == 0 {
		return "<1%"
	}
	return fmt.Sprintf("%d%%", p)
}

// Health reports how site's plugin name is doing on this host: its
// breaker's state and recent calls. ok is false when the plugin has no
// active version here. A new version starts with a fresh breaker.
func (h *Host) Health(site, name string) (health Health, ok bool) {
	s := (*h.plugins.Load())[pluginKey{site, name}]
	if s == nil || s.active.Load() == nil {
		return Health{}, false
	}
	return s.breaker.health(), true
}
