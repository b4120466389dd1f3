package rollout

import (
	"encoding/json"
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

// CheckSiteName reports whether site may name a site in the admin API; the
// CLI checks before it sends anything.
func CheckSiteName(site string) error { return checkSite(site) }

// CheckPluginName reports whether name may name a plugin in the admin API;
// the CLI checks before it uploads a module.
func CheckPluginName(name string) error { return checkPlugin(name) }

// CheckConfigPair reports whether kv is a chain entry's KEY=VALUE, as a
// push's config parameter takes it.
func CheckConfigPair(kv string) error {
	if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
		return fmt.Errorf("config %q: want KEY=VALUE (--config KEY=VALUE in the CLI, config=KEY=VALUE in the API)", kv)
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
	// Entry, when set, is the canary's own chain entry (the compact JSON
	// of a ChainEntry: config and headers) that canary requests run with;
	// stable requests keep the site chain's entry. Empty: the canary runs
	// with the chain's entry too. Only a canary carries one: a promotion
	// writes it into the chain, a rollback drops it. A string, so that
	// Targets compare with ==.
	Entry string `json:"canary_entry,omitempty"`
}

// head is the version that takes most requests: the stable one, else the
// canary (0: none).
func (t Target) head() int {
	if t.Stable != 0 {
		return t.Stable
	}
	return t.Canary
}

// MaxCanaryEntry bounds a canary's chain entry (its JSON), which travels
// inside the deployment record (statesync records are at most 64 KiB).
const MaxCanaryEntry = 16 << 10

// entrySep separates a record's versions from the canary's entry; the
// versions part never holds it, so the first occurrence is the separator
// whatever the entry's JSON holds.
const entrySep = " entry "

// decodeTarget reads a deployment record (see the package doc).
func decodeTarget(d statesync.Deployment) (Target, error) {
	versions, entry, hasEntry := strings.Cut(d.Version, entrySep)
	head, base, hasBase := strings.Cut(versions, " base ")
	n, err := strconv.Atoi(head)
	if err != nil || n < 0 {
		return Target{}, fmt.Errorf("deployment %s/%s: version %q is not a rollout version", d.Site, d.Plugin, d.Version)
	}
	if d.CanaryPercent >= 100 || n == 0 {
		if hasBase {
			return Target{}, fmt.Errorf("deployment %s/%s: version %q names a base without a canary", d.Site, d.Plugin, d.Version)
		}
		if hasEntry {
			return Target{}, fmt.Errorf("deployment %s/%s: version %q carries a canary entry without a canary", d.Site, d.Plugin, d.Version)
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
	if hasEntry {
		var e ChainEntry
		if err := json.Unmarshal([]byte(entry), &e); err != nil || e.Plugin != d.Plugin {
			return Target{}, fmt.Errorf("deployment %s/%s: the canary's entry %.80q is not a chain entry of this plugin", d.Site, d.Plugin, entry)
		}
		t.Entry = entry
	}
	return t, nil
}

// versionString is the record's Version for t.
func (t Target) versionString() string {
	if t.Canary == 0 {
		return strconv.Itoa(t.Stable)
	}
	s := strconv.Itoa(t.Canary)
	if t.Stable != 0 {
		s += " base " + strconv.Itoa(t.Stable)
	}
	if t.Entry != "" {
		s += entrySep + t.Entry
	}
	return s
}

// percent is the record's CanaryPercent for t.
func (t Target) percent() int {
	if t.Canary == 0 {
		return 100
	}
	return t.Percent
}

// CanaryEntry decodes Entry; ok is false when the canary has none (it runs
// with the chain's entry).
func (t Target) CanaryEntry() (e ChainEntry, ok bool) {
	if t.Entry == "" {
		return ChainEntry{}, false
	}
	if err := json.Unmarshal([]byte(t.Entry), &e); err != nil {
		return ChainEntry{}, false // decodeTarget checked it: not reached
	}
	return e, true
}

// encodeEntry is the Entry of a canary running with e.
func encodeEntry(e ChainEntry) (string, error) {
	b, err := json.Marshal(e) // map keys sorted: the same entry, the same text
	if err != nil {
		return "", err
	}
	if len(b) > MaxCanaryEntry {
		return "", fmt.Errorf("the canary's config and headers take %d bytes as JSON, over the %d a canary carries: "+
			"keep large data out of the config, or push without a canary (the chain entry has no such limit)", len(b), MaxCanaryEntry)
	}
	return string(b), nil
}

// MetricLabels maps a Host slot this package makes ("P@N") and the Host's
// own version number of it to the plugin and version users know: ("P",
// "N"). Other slot names are returned as they are. It is meant for the
// Host's metric labels (see the package doc, "Versions in the local Host").
func MetricLabels(slot string, hostVersion int) (plugin, version string) {
	if p, n, ok := parseSlot(slot); ok {
		return p, strconv.Itoa(n)
	}
	return slot, strconv.Itoa(hostVersion)
}
