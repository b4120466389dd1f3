package statesync

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-edge/meridian/internal/crdt"
)

// Key namespaces in the replicated map.
const (
	prefixPurge   = "purge/"  // purge/<site>/<id>
	prefixDeploy  = "deploy/" // deploy/<site>/<plugin>
	prefixKV      = "kv/"     // kv/<site>/<key>
	prefixConfig  = "config/" // config/<name>
	prefixCounter = "ctr/"    // ctr/<site>/<key> (PN-counters)
)

// PurgeKind selects what a purge matches.
type PurgeKind string

// Purge kinds.
const (
	PurgeURL          PurgeKind = "url"           // exactly this cache URL
	PurgePrefix       PurgeKind = "prefix"        // every URL starting with Value
	PurgeSurrogateKey PurgeKind = "surrogate-key" // every object tagged with Value
	PurgeSite         PurgeKind = "site"          // everything of the site (Value empty)
)

// PurgeRecord is one purge. Objects of Site stored before At that match are
// purged (hard) or marked stale (Soft: may still serve stale-if-error).
type PurgeRecord struct {
	ID     string    `json:"id"`
	Site   string    `json:"site"`
	Kind   PurgeKind `json:"kind"`
	Value  string    `json:"value,omitempty"`
	Soft   bool      `json:"soft,omitempty"`
	At     time.Time `json:"at"`
	Origin string    `json:"origin"`
}

// Deployment is the current plugin rollout record of one plugin on one site.
// The latest write wins (vector clock, then wall time); a rollback is a new
// Deploy with an earlier Version or with RolledBack set.
type Deployment struct {
	Site          string    `json:"site"`
	Plugin        string    `json:"plugin"`
	Version       string    `json:"version"`
	SHA256        string    `json:"sha256"`
	CanaryPercent int       `json:"canary_percent"`
	RolledBack    bool      `json:"rolled_back,omitempty"`
	At            time.Time `json:"at"`
	By            string    `json:"by,omitempty"`
}

// ConfigVersion announces the config a node (or the fleet) runs.
type ConfigVersion struct {
	Name    string    `json:"name"`
	Version string    `json:"version"`
	SHA256  string    `json:"sha256,omitempty"`
	At      time.Time `json:"at"`
	By      string    `json:"by,omitempty"`
}

func validName(what, s string) error {
	if s == "" || len(s) > 253 || strings.ContainsAny(s, "/ \t\r\n") {
		return fmt.Errorf("statesync: %s %q: want 1-253 characters without '/' or spaces", what, s)
	}
	return nil
}

// Purge records a purge and spreads it. ID, At (now) and Origin are filled in
// when empty. It returns the stored record. A purge made while NATS is down
// is applied here, queued on disk and spread when NATS returns.
func (n *Node) Purge(ctx context.Context, p PurgeRecord) (PurgeRecord, error) {
	if n.isClosed.Load() {
		return p, ErrClosed
	}
	if err := validName("site", p.Site); err != nil {
		return p, err
	}
	switch p.Kind {
	case PurgeURL, PurgePrefix, PurgeSurrogateKey:
		if p.Value == "" {
			return p, fmt.Errorf("statesync: %s purge of site %s needs a value", p.Kind, p.Site)
		}
	case PurgeSite:
	default:
		return p, fmt.Errorf("statesync: purge kind %q: want url, prefix, surrogate-key or site", p.Kind)
	}
	now := n.opts.Now()
	if p.At.IsZero() {
		p.At = now
	}
	// A purge dated in the future would keep the cache from storing anything
	// until then; one older than the retention would be dropped at once.
	if p.At.After(now.Add(maxPurgeSkew)) {
		return p, fmt.Errorf("statesync: purge time %s is in the future (more than %v ahead of this node's clock); leave At empty for now", p.At.Format(time.RFC3339), maxPurgeSkew)
	}
	if p.At.Before(now.Add(-n.opts.PurgeRetention)) {
		return p, fmt.Errorf("statesync: purge time %s is older than the purge retention %v; objects that old already count as purged", p.At.Format(time.RFC3339), n.opts.PurgeRetention)
	}
	if p.Origin == "" {
		p.Origin = n.opts.NodeID
	}
	if p.ID == "" {
		p.ID = n.opts.NodeID + "." + strconv.FormatInt(now.UnixNano(), 36) + "." + strconv.FormatUint(n.purgeSeq.Add(1), 36)
	}
	if err := validName("purge id", p.ID); err != nil {
		return p, err
	}
	val, err := json.Marshal(p)
	if err != nil {
		return p, fmt.Errorf("statesync: encode purge: %w", err)
	}
	if len(val) > MaxValueSize {
		return p, fmt.Errorf("statesync: purge value of %d bytes exceeds %d", len(val), MaxValueSize)
	}
	key := prefixPurge + p.Site + "/" + p.ID
	expires := p.At.Add(n.opts.PurgeRetention).UnixNano()
	n.mu.Lock()
	d := n.regs.Set(n.opts.NodeID, key, val, now.UnixNano(), expires)
	n.mu.Unlock()
	return p, n.write(ctx, d, key)
}

// maxPurgeSkew is how far ahead of the local clock a purge time may be.
const maxPurgeSkew = 5 * time.Minute

// PurgeVerdict answers whether a stored object may be served.
type PurgeVerdict struct {
	// Purged: a hard purge matched; the object must not be served.
	Purged bool
	// Stale: only soft purges matched; serve only as stale (revalidate, or
	// stale-if-error).
	Stale bool
	// By is the newest matching purge (zero when the object is too old for
	// the purge records, see Options.PurgeRetention).
	By PurgeRecord
}

// CheckPurged reports whether an object of site stored at storedAt under url
// (the cache key URL) with the given surrogate keys was purged since. It is
// cheap enough to call on every cache read.
func (n *Node) CheckPurged(site, url string, keys []string, storedAt time.Time) PurgeVerdict {
	if storedAt.Before(n.opts.Now().Add(-n.opts.PurgeRetention)) {
		// Purges that old are compacted away; be safe.
		return PurgeVerdict{Purged: true}
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.purges.check(site, url, keys, storedAt)
}

// Purges lists the live purge records of site ("" for all sites), oldest first.
func (n *Node) Purges(site string) []PurgeRecord {
	n.mu.RLock()
	defer n.mu.RUnlock()
	var out []PurgeRecord
	for _, s := range n.purges.sites {
		for _, p := range s.all {
			if site == "" || p.Site == site {
				out = append(out, *p)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].At.Before(out[j].At) })
	return out
}

// Deploy writes a plugin deployment record and spreads it.
func (n *Node) Deploy(ctx context.Context, d Deployment) error {
	if err := validName("site", d.Site); err != nil {
		return err
	}
	if err := validName("plugin", d.Plugin); err != nil {
		return err
	}
	if d.Version == "" || d.CanaryPercent < 0 || d.CanaryPercent > 100 {
		return fmt.Errorf("statesync: deployment of %s/%s: need a version and a canary percent in 0..100 (got %q, %d)", d.Site, d.Plugin, d.Version, d.CanaryPercent)
	}
	if d.At.IsZero() {
		d.At = n.opts.Now()
	}
	return n.setJSON(ctx, prefixDeploy+d.Site+"/"+d.Plugin, d)
}

// Deployment returns the current record of plugin on site.
func (n *Node) Deployment(site, plugin string) (Deployment, bool) {
	var d Deployment
	ok := n.getJSON(prefixDeploy+site+"/"+plugin, &d)
	return d, ok
}

// Deployments lists the current records of site ("" for all sites).
func (n *Node) Deployments(site string) []Deployment {
	var out []Deployment
	prefix := prefixDeploy
	if site != "" {
		prefix += site + "/"
	}
	for _, k := range n.Keys(prefix) {
		var d Deployment
		if n.getJSON(k, &d) {
			out = append(out, d)
		}
	}
	return out
}

// AnnounceConfig records the config version under c.Name and spreads it.
func (n *Node) AnnounceConfig(ctx context.Context, c ConfigVersion) error {
	if err := validName("config name", c.Name); err != nil {
		return err
	}
	if c.Version == "" {
		return fmt.Errorf("statesync: config %s: empty version", c.Name)
	}
	if c.At.IsZero() {
		c.At = n.opts.Now()
	}
	return n.setJSON(ctx, prefixConfig+c.Name, c)
}

// ConfigVersions lists the announced config versions.
func (n *Node) ConfigVersions() []ConfigVersion {
	var out []ConfigVersion
	for _, k := range n.Keys(prefixConfig) {
		var c ConfigVersion
		if n.getJSON(k, &c) {
			out = append(out, c)
		}
	}
	return out
}

func (n *Node) setJSON(ctx context.Context, key string, v any) error {
	val, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("statesync: encode %s: %w", key, err)
	}
	return n.set(ctx, key, val)
}

func (n *Node) getJSON(key string, v any) bool {
	n.mu.RLock()
	val, ok := n.regs.Value(key)
	n.mu.RUnlock()
	return ok && json.Unmarshal(val, v) == nil
}

func (n *Node) set(ctx context.Context, key string, val []byte) error {
	return n.setTTL(ctx, key, val, 0)
}

// MaxTTL is the longest TTL KVSetTTL and CounterAddTTL accept. Expiry is
// for short-lived data (windows, sessions); longer-lived data is better
// deleted explicitly.
const MaxTTL = 30 * 24 * time.Hour

func checkTTL(ttl time.Duration) error {
	if ttl <= 0 || ttl > MaxTTL {
		return fmt.Errorf("statesync: TTL %v: want more than 0 and at most %v", ttl, MaxTTL)
	}
	return nil
}

// setTTL writes key; ttl 0 means no expiry.
func (n *Node) setTTL(ctx context.Context, key string, val []byte, ttl time.Duration) error {
	if n.isClosed.Load() {
		return ErrClosed
	}
	if len(key) > MaxKeySize {
		return fmt.Errorf("statesync: key of %d bytes exceeds %d", len(key), MaxKeySize)
	}
	if len(val) > MaxValueSize {
		return fmt.Errorf("statesync: value of %d bytes for %s exceeds %d; store large data elsewhere (object store) and replicate a reference", len(val), key, MaxValueSize)
	}
	now := n.opts.Now()
	n.mu.Lock()
	var d *crdt.Map
	if ttl > 0 {
		d = n.regs.SetTTL(n.opts.NodeID, key, val, now.UnixNano(), now.Add(ttl).UnixNano())
	} else {
		d = n.regs.Set(n.opts.NodeID, key, val, now.UnixNano(), 0)
	}
	n.mu.Unlock()
	return n.write(ctx, d, key)
}

// KVSet sets key in site's plugin KV namespace (LWW).
func (n *Node) KVSet(ctx context.Context, site, key string, val []byte) error {
	return n.kvSet(ctx, site, key, val, 0)
}

// kvSet is KVSet and KVSetTTL (ttl 0: no expiry).
func (n *Node) kvSet(ctx context.Context, site, key string, val []byte, ttl time.Duration) error {
	if err := validName("site", site); err != nil {
		return err
	}
	if key == "" {
		return fmt.Errorf("statesync: empty KV key for site %s", site)
	}
	return n.setTTL(ctx, prefixKV+site+"/"+key, append([]byte(nil), val...), ttl)
}

// KVSetTTL sets key in site's plugin KV namespace (LWW) until ttl from now
// (this node's clock; at most MaxTTL). From then on every node reads the
// key as absent (by its own clock, so clock skew between nodes shifts the
// moment), and compaction drops it once ExpiryGrace has passed too. A later
// KVSet or KVSetTTL of the key replaces the expiry with its own.
func (n *Node) KVSetTTL(ctx context.Context, site, key string, val []byte, ttl time.Duration) error {
	if err := checkTTL(ttl); err != nil {
		return err
	}
	return n.kvSet(ctx, site, key, val, ttl)
}

// KVGet returns the current value of key in site's plugin KV namespace; a
// key whose TTL ran out is absent.
func (n *Node) KVGet(site, key string) ([]byte, bool) {
	now := n.opts.Now().UnixNano()
	n.mu.RLock()
	defer n.mu.RUnlock()
	v, ok := n.regs.ValueAt(prefixKV+site+"/"+key, now)
	return append([]byte(nil), v...), ok
}

// KVDelete deletes key from site's plugin KV namespace.
func (n *Node) KVDelete(ctx context.Context, site, key string) error {
	if n.isClosed.Load() {
		return ErrClosed
	}
	if err := validName("site", site); err != nil {
		return err
	}
	k := prefixKV + site + "/" + key
	n.mu.Lock()
	d := n.regs.Delete(n.opts.NodeID, k, n.opts.Now().UnixNano())
	n.mu.Unlock()
	return n.write(ctx, d, k)
}

// CounterAdd adds delta to the PN-counter key of site and returns the value
// this node now sees. It does not wait for the network: increments are
// coalesced and published every CounterFlushInterval, so it is cheap enough
// for a per-request rate limit.
func (n *Node) CounterAdd(ctx context.Context, site, key string, delta int64) (int64, error) {
	return n.counterAdd(ctx, site, key, delta, 0)
}

// CounterAddTTL is CounterAdd for a counter that expires: the counter lives
// until ttl (at most MaxTTL) after the last add with a TTL made anywhere
// (the latest expiry wins, so each add extends it), then every node reads
// it as 0 and compaction drops it once ExpiryGrace has passed too. An add
// after that starts the counter over. An add without a TTL (CounterAdd)
// makes the counter permanent. Use it for counters whose key names a window
// ("rl:<client>:<minute>"), so that old windows do not pile up.
func (n *Node) CounterAddTTL(ctx context.Context, site, key string, delta int64, ttl time.Duration) (int64, error) {
	if err := checkTTL(ttl); err != nil {
		return 0, err
	}
	return n.counterAdd(ctx, site, key, delta, ttl)
}

func (n *Node) counterAdd(_ context.Context, site, key string, delta int64, ttl time.Duration) (int64, error) {
	if n.isClosed.Load() {
		return 0, ErrClosed
	}
	if err := validName("site", site); err != nil {
		return 0, err
	}
	k := prefixCounter + site + "/" + key
	if len(k) > MaxKeySize || key == "" {
		return 0, fmt.Errorf("statesync: counter key %q: want 1..%d bytes", key, MaxKeySize-len(prefixCounter)-len(site)-1)
	}
	now := n.opts.Now()
	var exp int64
	if ttl > 0 {
		exp = now.Add(ttl).UnixNano()
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	v, d := n.ctrs.AddAt(n.opts.NodeID, k, delta, now.UnixNano(), exp)
	if len(d) > 0 {
		n.rehash(k)
		n.dirtyCtr[k] = true
		n.dirty = true
		select {
		case n.counterCh <- struct{}{}:
		default:
		}
	}
	return v, nil
}

// Counter returns the value of site's counter key as this node sees it (0
// once it expired).
func (n *Node) Counter(site, key string) int64 {
	now := n.opts.Now().UnixNano()
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.ctrs.ValueAt(prefixCounter+site+"/"+key, now)
}

// Keys lists the replicated keys starting with prefix (the raw namespace:
// purge/, deploy/, kv/, config/, ctr/), sorted; deleted and expired keys
// are left out.
func (n *Node) Keys(prefix string) []string {
	now := n.opts.Now().UnixNano()
	n.mu.RLock()
	defer n.mu.RUnlock()
	var out []string
	for k, r := range n.regs.Regs {
		if w, _ := r.Winner(); strings.HasPrefix(k, prefix) && w.LiveAt(now) {
			out = append(out, k)
		}
	}
	for k, c := range n.ctrs {
		if strings.HasPrefix(k, prefix) && c.LiveAt(now) {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// HistoryEntry is one change of a key as applied on this node.
type HistoryEntry struct {
	At time.Time `json:"at"`
	// From is the node whose message carried the change; Via the path
	// (local, core, log, repair).
	From   string      `json:"from"`
	Via    string      `json:"via"`
	Winner VersionInfo `json:"winner"`
	Losers int         `json:"conflicts"`
}

// VersionInfo describes one version of a key for inspection.
type VersionInfo struct {
	Value   string    `json:"value,omitempty"`
	Deleted bool      `json:"deleted,omitempty"`
	Clock   string    `json:"clock"`
	Writer  string    `json:"writer"`
	Wall    time.Time `json:"wall"`
	// Expires is when the version expires (purges, KV keys with a TTL).
	Expires *time.Time `json:"expires,omitempty"`
}

// KeyInfo is what `meridian state get KEY` shows.
type KeyInfo struct {
	Key string `json:"key"`
	// Winner is the value every node converges to; Conflicts the concurrent
	// versions that lost the tie-break (kept until a later write supersedes
	// them).
	Winner    VersionInfo   `json:"winner"`
	Conflicts []VersionInfo `json:"conflicts,omitempty"`
	// Counter is set for ctr/ keys: the value and each node's share.
	Counter      *int64                 `json:"counter,omitempty"`
	CounterNodes map[string]crdt.PNPair `json:"counter_nodes,omitempty"`
	// CounterExpires is when a counter with a TTL expires (its value
	// reads 0 from then on; Counter shows what it held).
	CounterExpires *time.Time `json:"counter_expires,omitempty"`
	// History is the last changes of the key applied on this node (at most
	// 16, values cut to 64 bytes), oldest first.
	History []HistoryEntry `json:"history,omitempty"`
}

// History bounds: entries per key, keys with a history, and value bytes
// kept per entry. History is for debugging; it must not grow with the data.
const (
	historyLen     = 16
	historyKeys    = 20000
	historyPreview = 64
)

func versionInfo(v crdt.Version) VersionInfo {
	vi := VersionInfo{Value: string(v.Value), Deleted: v.Deleted, Clock: v.Clock.String(), Writer: v.Node, Wall: time.Unix(0, v.Wall).UTC()}
	if v.Expires != 0 {
		e := time.Unix(0, v.Expires).UTC()
		vi.Expires = &e
	}
	return vi
}

// Inspect returns a key's value, vector clock, conflicts and history on this node.
func (n *Node) Inspect(key string) (KeyInfo, bool) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	info := KeyInfo{Key: key}
	for _, h := range n.history[key] {
		vi := versionInfo(h.winner)
		if len(vi.Value) > historyPreview {
			vi.Value = vi.Value[:historyPreview] + "…"
		}
		info.History = append(info.History, HistoryEntry{At: h.at, From: h.from, Via: h.via, Winner: vi, Losers: h.losers})
	}
	if c, ok := n.ctrs[key]; ok {
		v := c.Value()
		info.Counter = &v
		info.CounterNodes = map[string]crdt.PNPair{}
		for node, p := range c {
			info.CounterNodes[node] = p
		}
		if e := c.Expires(); e != 0 {
			t := time.Unix(0, e).UTC()
			info.CounterExpires = &t
		}
		return info, true
	}
	r, ok := n.regs.Get(key)
	if !ok {
		return info, false
	}
	for i, v := range r.Versions {
		if i == 0 {
			info.Winner = versionInfo(v)
		} else {
			info.Conflicts = append(info.Conflicts, versionInfo(v))
		}
	}
	return info, true
}

// historyEntry is a HistoryEntry as kept: formatting (clock string, value
// copy) waits until someone inspects the key, as it costs more than the
// merge that records it.
type historyEntry struct {
	at        time.Time
	from, via string
	winner    crdt.Version // shares the register's clock and value, which are never changed in place
	losers    int
}

// record appends to key's history. Callers hold n.mu.
func (n *Node) record(key, from, via string, at time.Time) {
	r, ok := n.regs.Get(key)
	if !ok {
		return
	}
	w, _ := r.Winner()
	if len(w.Value) > historyPreview+8 {
		w.Value = w.Value[:historyPreview+8] // enough for the preview
	}
	if _, ok := n.history[key]; !ok && len(n.history) >= historyKeys {
		for k := range n.history { // forget some other key's history
			delete(n.history, k)
			break
		}
	}
	h := append(n.history[key], historyEntry{at: at, from: from, via: via, winner: w, losers: len(r.Versions) - 1})
	if len(h) > historyLen {
		h = h[len(h)-historyLen:]
	}
	n.history[key] = h
}

// Event is a change delivered to watchers. Exactly one of the pointers is set.
type Event struct {
	Purge      *PurgeRecord
	Deployment *Deployment
	Config     *ConfigVersion
	// KVKey is set ("site/key") when a plugin KV key changed.
	KVKey string
}

// watchers holds the Watch callbacks. notify runs for every applied change
// on every node, so it reads an immutable list through an atomic pointer
// (no lock, no copy); Watch and stop replace the list under mu.
type watchers struct {
	mu   sync.Mutex
	next int
	fns  map[int]func(Event)
	list atomic.Pointer[[]func(Event)] // the values of fns, for notify
}

// publishLocked rebuilds the list notify reads. Callers hold w.mu.
func (w *watchers) publishLocked() {
	list := make([]func(Event), 0, len(w.fns))
	for _, f := range w.fns {
		list = append(list, f)
	}
	w.list.Store(&list)
}

// Watch calls fn for every change applied on this node (local or remote)
// to purges, deployments, config versions and KV keys. fn runs on the
// replication goroutine: it must return quickly (hand work to a channel).
// The returned function stops the calls.
func (n *Node) Watch(fn func(Event)) (stop func()) {
	w := &n.watchers
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fns == nil {
		w.fns = map[int]func(Event){}
	}
	id := w.next
	w.next++
	w.fns[id] = fn
	w.publishLocked()
	return func() {
		w.mu.Lock()
		delete(w.fns, id)
		w.publishLocked()
		w.mu.Unlock()
	}
}

func (w *watchers) notify(evs []Event) {
	if len(evs) == 0 {
		return
	}
	fns := w.list.Load()
	if fns == nil {
		return
	}
	for _, ev := range evs {
		for _, f := range *fns {
			f(ev)
		}
	}
}

// eventsFor builds watcher events for changed keys; purges holds the
// records of the changed purge keys, which indexKey decoded already. Callers
// hold n.mu.
func (n *Node) eventsFor(keys []string, purges []PurgeRecord) []Event {
	var out []Event
	for i := range purges {
		out = append(out, Event{Purge: &purges[i]})
	}
	for _, k := range keys {
		val, ok := n.regs.Value(k)
		switch {
		case strings.HasPrefix(k, prefixPurge):
			// In purges already (a purge key that is gone has no event).
		case strings.HasPrefix(k, prefixDeploy):
			var d Deployment
			if ok && json.Unmarshal(val, &d) == nil {
				out = append(out, Event{Deployment: &d})
			}
		case strings.HasPrefix(k, prefixConfig):
			var c ConfigVersion
			if ok && json.Unmarshal(val, &c) == nil {
				out = append(out, Event{Config: &c})
			}
		case strings.HasPrefix(k, prefixKV):
			out = append(out, Event{KVKey: strings.TrimPrefix(k, prefixKV)})
		}
	}
	return out
}

// purgeIndex answers CheckPurged without scanning every record.
type purgeIndex struct {
	sites map[string]*sitePurges
}

type sitePurges struct {
	// One *PurgeRecord per purge, shared by the maps below: records are
	// never changed, and pointers keep map growth (every purge on every
	// node) cheap.
	all      map[string]*PurgeRecord
	site     []*PurgeRecord
	urls     map[string][]*PurgeRecord
	keys     map[string][]*PurgeRecord
	prefixes map[string][]*PurgeRecord
	// prefixLens holds the distinct prefix lengths, so that a check costs one
	// map lookup per length instead of a scan of every prefix purge.
	prefixLens []int
}

func newPurgeIndex() *purgeIndex { return &purgeIndex{sites: map[string]*sitePurges{}} }

// indexKey adds a purge key's record to the index and returns it (ok is
// false for other keys). Callers hold n.mu.
func (n *Node) indexKey(k string) (p PurgeRecord, ok bool) {
	if !strings.HasPrefix(k, prefixPurge) {
		return p, false
	}
	val, ok := n.regs.Value(k)
	if !ok {
		return p, false
	}
	p, err := decodePurgeKey(val, k, n.ids)
	if err != nil {
		return p, false
	}
	n.purges.add(p)
	return p, true
}

// reindexPurges rebuilds the purge index after records were dropped.
// Callers hold n.mu.
func (n *Node) reindexPurges() {
	n.purges = newPurgeIndex()
	for k := range n.regs.Regs {
		n.indexKey(k)
	}
}

func (x *purgeIndex) add(rec PurgeRecord) {
	p := &rec
	s := x.sites[p.Site]
	if s == nil {
		s = &sitePurges{all: map[string]*PurgeRecord{}, urls: map[string][]*PurgeRecord{}, keys: map[string][]*PurgeRecord{},
			prefixes: map[string][]*PurgeRecord{}}
		x.sites[p.Site] = s
	}
	if _, dup := s.all[p.ID]; dup {
		return // purge records never change
	}
	s.all[p.ID] = p
	switch p.Kind {
	case PurgeURL:
		s.urls[p.Value] = append(s.urls[p.Value], p)
	case PurgeSurrogateKey:
		s.keys[p.Value] = append(s.keys[p.Value], p)
	case PurgePrefix:
		if _, ok := s.prefixes[p.Value]; !ok {
			i := sort.SearchInts(s.prefixLens, len(p.Value))
			if i == len(s.prefixLens) || s.prefixLens[i] != len(p.Value) {
				s.prefixLens = slices.Insert(s.prefixLens, i, len(p.Value))
			}
		}
		s.prefixes[p.Value] = append(s.prefixes[p.Value], p)
	case PurgeSite:
		s.site = append(s.site, p)
	}
}

func (x *purgeIndex) check(site, url string, keys []string, storedAt time.Time) PurgeVerdict {
	var v PurgeVerdict
	s := x.sites[site]
	if s == nil {
		return v
	}
	consider := func(ps []*PurgeRecord) {
		for _, p := range ps {
			if !p.At.After(storedAt) {
				continue
			}
			if p.Soft {
				v.Stale = true
			} else {
				v.Purged = true
			}
			if p.At.After(v.By.At) {
				v.By = *p
			}
		}
	}
	consider(s.site)
	consider(s.urls[url])
	for _, k := range keys {
		consider(s.keys[k])
	}
	for _, l := range s.prefixLens {
		if l > len(url) {
			break
		}
		consider(s.prefixes[url[:l]])
	}
	if v.Purged {
		v.Stale = false
	}
	return v
}
