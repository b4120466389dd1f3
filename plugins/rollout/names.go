package rollout

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/meridian-edge/meridian/internal/statesync"
)

// Names are kept to what a JetStream KV key and an object name take without
// escaping; a site name is the config's (lower-case letters, digits, '-').
var (
	sitePattern   = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	pluginPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)
)

func checkSite(site string) error {
	if !sitePattern.MatchString(site) {
		return fmt.Errorf("site %q is not a site name: use the site's name from the config (lower-case letters, digits, '-')", site)
	}
	return nil
}

// checkPlugin also refuses "chain" and "logs", which are admin API paths.
func checkPlugin(name string) error {
	if !pluginPattern.MatchString(name) || name == "chain" || name == "logs" {
		return fmt.Errorf("plugin name %q is not allowed: use 1-64 letters, digits, '_' or '-' (not %q or %q)", name, "chain", "logs")
	}
	return nil
}

// slotName is the local plugins.Host name of global version n of plugin.
func slotName(plugin string, n int) string { return plugin + "@" + strconv.Itoa(n) }

// parseSlot splits a slot name; ok is false for names that are not slots
// (upload validation slots).
func parseSlot(slot string) (plugin string, n int, ok bool) {
	p, v, found := strings.Cut(slot, "@")
	if !found {
		return slot, 0, false
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return p, 0, false
	}
	return p, n, true
}

// Target is what a deployment record asks every PoP to run for one plugin.
type Target struct {
	// Stable takes the requests the canary does not; 0 means none.
	Stable int `json:"stable"`
	// Canary takes Percent% of requests; 0 means no canary.
	Canary  int `json:"canary,omitempty"`
	Percent int `json:"canary_percent,omitempty"`
}

// decodeTarget reads a deployment record (see the package doc).
func decodeTarget(d statesync.Deployment) (Target, error) {
	head, base, hasBase := strings.Cut(d.Version, " base ")
	n, err := strconv.Atoi(head)
	if err != nil || n < 0 {
		return Target{}, fmt.Errorf("deployment %s/%s: version %q is not a rollout version", d.Site, d.Plugin, d.Version)
	}
	if d.CanaryPercent >= 100 || n == 0 {
		if hasBase {
			return Target{}, fmt.Errorf("deployment %s/%s: version %q names a base without a canary", d.Site, d.Plugin, d.Version)
		}
		return Target{Stable: n}, nil
	}
	t := Target{Canary: n, Percent: d.CanaryPercent}
	if hasBase {
		b, err := strconv.Atoi(base)
		if err != nil || b < 1 {
			return Target{}, fmt.Errorf("deployment %s/%s: version %q has a bad base", d.Site, d.Plugin, d.Version)
		}
		t.Stable = b
	}
	return t, nil
}

// versionString is the record's Version for t.
func (t Target) versionString() string {
	if t.Canary == 0 {
		return strconv.Itoa(t.Stable)
	}
	if t.Stable == 0 {
		return strconv.Itoa(t.Canary)
	}
	return strconv.Itoa(t.Canary) + " base " + strconv.Itoa(t.Stable)
}

// percent is the record's CanaryPercent for t.
func (t Target) percent() int {
	if t.Canary == 0 {
		return 100
	}
	return t.Percent
}
