package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-edge/meridian/internal/statesync"
	"github.com/meridian-edge/meridian/plugins"
)

// Options configure a Manager. Zero fields take the documented defaults.
type Options struct {
	// PoPID names this PoP in logs and in records it writes (required).
	PoPID string
	// Host is this PoP's plugin host (required).
	Host *plugins.Host
	// Sync is this PoP's replica of the shared state (required).
	Sync *statesync.Node
	// Conn reaches JetStream, for the object store and the catalogue (required).
	Conn *nats.Conn
	// Authenticate checks an admin request's bearer token: ops may act on
	// every site, otherwise site is the one site the token owns. ok is false
	// for a missing or unknown token. nil refuses every admin request.
	// (gateway.Credentials.Authenticate adapts in one line.)
	Authenticate func(r *http.Request) (ops bool, site string, ok bool)
	// Refusal, when set, words the answer to a request Authenticate
	// refused: its status, WWW-Authenticate challenge ("" for none) and
	// message, so that a missing token, a token not recognised and a PoP
	// with no token configured read differently (gateway.Credentials.Check
	// tells them apart). nil answers every refusal with the same 401.
	Refusal func(r *http.Request) (status int, challenge, message string)
	// Sites lists the sites this PoP serves now (the configuration's, so it
	// follows reloads); it is called on every admin request. A request
	// naming another site is refused with 404 rather than answered as an
	// empty site, so a mistyped name is not taken for a site without
	// plugins. nil accepts every well-formed site name (tools and tests
	// without a site list).
	Sites func() []string
	// MaxUpload refuses larger plugin uploads. Default 16 MiB.
	MaxUpload int64
	// CanaryErrorThreshold rolls a canary back automatically when the
	// fraction of its calls that failed on a PoP passes it. Default 0.05.
	CanaryErrorThreshold float64
	// CanaryMinCalls is how many calls a canary must have had on a PoP
	// before its error rate is judged. Default 20.
	CanaryMinCalls int
	// CheckInterval is how often canaries are judged and failed fetches
	// retried. Default 1s.
	CheckInterval time.Duration
	// RetireAfter is how long a version no longer deployed keeps its slot,
	// so requests that picked a chain naming it can finish. Default 30s.
	RetireAfter time.Duration
	// Metrics is the registry the Host registers its metrics on: the canary
	// error rate is read from meridian_plugin_calls_total and
	// meridian_plugin_errors_total. nil disables automatic rollback.
	Metrics prometheus.Gatherer
	// StoreReplicas is the JetStream replica count of the buckets. Default 1.
	StoreReplicas int
	// CacheDir keeps this PoP's copy of the blobs it runs, their catalogue
	// entries and the site chains, so that a PoP restarted while NATS is
	// unreachable runs its plugins again (the deployment records come from
	// statesync's own snapshot). Empty: no copy; such a PoP runs no plugin
	// until JetStream is back.
	CacheDir string
	// PoPs, when set, lists the PoPs expected to answer a logs request
	// (e.g. those whose health beacons are recent); it is called on every
	// logs request. A logs request waits for these and for the PoPs heard
	// on the log subjects in the last hour, at most LogsWait; nil: only
	// the latter.
	PoPs func() []string
	// LogsWait is how long a logs request waits for the other PoPs'
	// answers. Default 1.5s.
	LogsWait time.Duration
	// MaxLogsReply caps, in bytes, this PoP's answer to another PoP's log
	// query below the NATS max payload (which always caps it): older lines
	// are left out and counted. 0: the NATS max payload only.
	MaxLogsReply int
	// Registerer receives the rollout metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Logger gets rollout events; nil discards. It should carry the PoP
	// (the stack's PoP logger does), which the manager does not add again.
	Logger *slog.Logger
}

func (o *Options) setDefaults() {
	if o.MaxUpload <= 0 {
		o.MaxUpload = 16 << 20
	}
	if o.CanaryErrorThreshold <= 0 {
		o.CanaryErrorThreshold = 0.05
	}
	if o.CanaryMinCalls <= 0 {
		o.CanaryMinCalls = 20
	}
	if o.CheckInterval <= 0 {
		o.CheckInterval = time.Second
	}
	if o.RetireAfter <= 0 {
		o.RetireAfter = 30 * time.Second
	}
	if o.LogsWait <= 0 {
		o.LogsWait = 1500 * time.Millisecond
	}
	if o.StoreReplicas <= 0 {
		o.StoreReplicas = 1
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// Manager is one PoP's side of plugin rollout: the admin API, the watcher
// that applies deployment records to the local Host, the canary split and
// the automatic rollback.
type Manager struct {
	opts Options
	log  *slog.Logger
	m    *metrics

	st   atomic.Pointer[store] // set once JetStream is reachable
	disk *diskCache            // nil without CacheDir

	mu       sync.Mutex               // guards the fields below
	docs     map[string]ChainDoc      // site -> chain
	applied  map[pluginKey]*applied   // what this PoP runs, per plugin
	slots    map[slotKey]bool         // Host slots this Manager made
	retiring map[slotKey]time.Time    // slots to remove, since when
	failed   map[pluginKey]error      // reconciles to retry
	pending  map[pluginKey]bool       // reconciles queued
	kick     chan struct{}            // wakes the worker
	chains   atomic.Pointer[chainMap] // request path: read without locks

	// Start-up (guarded by mu). missing holds the deployments known when
	// Start ran that this PoP has not activated yet: a fail-closed chain
	// names them as unavailable (503) rather than serving without them.
	// unsettled are those whose first attempt has not ended; chainsKnown is
	// set once the site chains are (JetStream's current values, or the
	// CacheDir copy when JetStream was not reachable). ready is closed once
	// no unsettled plugin is in a known chain (WaitReady).
	missing     map[pluginKey]missingPlugin
	unsettled   map[pluginKey]bool
	chainsKnown bool
	ready       chan struct{}

	logsSub *nats.Subscription // answers other PoPs' log queries
	peers   logPeers           // PoPs heard on the log subjects

	cancel context.CancelFunc
	wg     sync.WaitGroup
	stop   func() // statesync watch
}

type pluginKey struct{ site, plugin string }

// missingPlugin is a deployment known at start and not active here yet.
type missingPlugin struct {
	target Target
	why    string // for the 503's error and the logs
}

type slotKey struct{ site, slot string }

// applied is the part of a deployment this PoP has activated.
type applied struct {
	target Target
	// rolledBack is set once this PoP asked for the canary's rollback.
	rolledBack bool
	// base are the canary's counters when it started on this PoP.
	base callStats
}

// New checks opts and makes a Manager; Start connects it.
func New(opts Options) (*Manager, error) {
	opts.setDefaults()
	switch {
	case opts.PoPID == "":
		return nil, errors.New("rollout: Options.PoPID is required")
	case opts.Host == nil:
		return nil, errors.New("rollout: Options.Host is required")
	case opts.Sync == nil:
		return nil, errors.New("rollout: Options.Sync is required (the PoP's statesync node)")
	case opts.Conn == nil:
		return nil, errors.New("rollout: Options.Conn is required (JetStream holds the plugin blobs)")
	case opts.CanaryErrorThreshold >= 1:
		return nil, fmt.Errorf("rollout: CanaryErrorThreshold %v must be below 1 (a fraction of calls)", opts.CanaryErrorThreshold)
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	mg := &Manager{
		opts: opts, log: opts.Logger.With("component", "rollout"), m: m,
		docs: map[string]ChainDoc{}, applied: map[pluginKey]*applied{}, slots: map[slotKey]bool{}, retiring: map[slotKey]time.Time{},
		failed: map[pluginKey]error{}, pending: map[pluginKey]bool{}, kick: make(chan struct{}, 1),
		missing: map[pluginKey]missingPlugin{}, unsettled: map[pluginKey]bool{}, ready: make(chan struct{}),
	}
	mg.chains.Store(&chainMap{})
	if opts.CacheDir != "" {
		mg.disk = &diskCache{dir: opts.CacheDir}
	}
	if opts.Metrics == nil {
		mg.log.Warn("no plugin metrics gatherer: canaries are never rolled back automatically")
	}
	return mg, nil
}

// Start applies every current deployment and chain and keeps following
// them until Close. It opens the JetStream buckets once with ctx; when
// JetStream is unreachable it logs that, runs what the CacheDir copy allows,
// and keeps trying in the background (the admin API answers 503 meanwhile).
//
// Start returns before the plugins are active (fetching and compiling take
// a while): a PoP should call WaitReady before it serves. Until a plugin
// known at start is active, a fail-closed chain that runs it answers 503
// for it, and a fail-open one runs without it.
func (mg *Manager) Start(ctx context.Context) error {
	if mg.disk != nil {
		docs, err := mg.disk.chains()
		if err != nil {
			return err
		}
		mg.mu.Lock()
		for site, d := range docs {
			mg.docs[site] = d
		}
		mg.mu.Unlock()
	}
	if err := mg.subscribeLogs(); err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	mg.cancel = cancel
	mg.stop = mg.opts.Sync.Watch(func(ev statesync.Event) {
		if d := ev.Deployment; d != nil {
			mg.enqueue(pluginKey{d.Site, d.Plugin})
		}
	})
	// What the sites ran before this PoP started: the deployment records
	// (statesync's snapshot, caught up with the log when NATS is up). Their
	// chains name them as unavailable until they are active, so that a
	// fail-closed site is never served without them.
	deps := mg.opts.Sync.Deployments("")
	mg.mu.Lock()
	for _, d := range deps {
		t, err := decodeTarget(d)
		if err != nil || (t.Stable == 0 && t.Canary == 0) {
			continue // unreadable (reconcile logs it) or runs nowhere
		}
		k := pluginKey{d.Site, d.Plugin}
		mg.missing[k] = missingPlugin{target: t, why: fmt.Sprintf("plugin %s (version %d) is not loaded on this PoP yet: it is starting", k.plugin, t.head())}
		mg.unsettled[k] = true
	}
	for site := range mg.docs {
		mg.rebuildLocked(site)
	}
	mg.m.missing.Set(float64(len(mg.missing)))
	loading := len(mg.missing)
	mg.mu.Unlock()
	for _, d := range deps {
		mg.enqueue(pluginKey{d.Site, d.Plugin})
	}
	mg.wg.Add(2)
	go mg.work(runCtx)
	go mg.checkLoop(runCtx)
	// Do not wait out JetStream timeouts when the connection is down:
	// WaitReady should not wait for what cannot come.
	var (
		st  *store
		w   jetstream.KeyWatcher
		err = errors.New("NATS connection is down")
	)
	if mg.opts.Conn.IsConnected() {
		st, w, err = mg.connect(ctx, runCtx)
	}
	mg.wg.Add(1)
	if err != nil {
		mg.log.Warn("JetStream not reachable: plugin uploads wait, PoP runs what it has; retrying", "err", err)
		mg.mu.Lock()
		mg.chainsKnown = true // the CacheDir copy is all there is
		noCopy := mg.disk == nil && len(mg.missing) > 0
		mg.checkReadyLocked()
		mg.mu.Unlock()
		if noCopy {
			mg.log.Error("plugins are deployed but this PoP has no copy of the site chains (no CacheDir) and cannot reach JetStream: their sites are served without plugins until it can",
				"plugins", loading)
		}
		go mg.connectLoop(runCtx)
	} else {
		mg.st.Store(st)
		go mg.watchChains(runCtx, w)
	}
	mg.log.Info("plugin rollout started", "jetstream", err == nil, "loading", loading)
	return nil
}

// WaitReady waits until every plugin that a site's chain ran when Start
// was called is active on this PoP, or has failed to load once (its bytes
// cannot be fetched, or it does not compile), or ctx ends; a PoP should
// open its listeners after it. With no plugin deployed it returns as soon
// as the site chains are read. The error, when ctx ended first, names what
// is still loading: fail-closed sites then answer 503 for the requests
// those plugins would run until they are active, fail-open sites are
// served without them.
func (mg *Manager) WaitReady(ctx context.Context) error {
	select {
	case <-mg.ready:
		return nil
	case <-ctx.Done():
	}
	mg.mu.Lock()
	var names []string
	for k := range mg.unsettled {
		names = append(names, k.site+"/"+k.plugin)
	}
	known := mg.chainsKnown
	mg.mu.Unlock()
	slices.Sort(names)
	if !known {
		names = append(names, "the site chains (JetStream)")
	}
	return fmt.Errorf("rollout: still loading after the start-up wait (%v): %s", context.Cause(ctx), strings.Join(names, ", "))
}

// checkReadyLocked closes ready once the chains are known and no plugin
// still loading is in one. Callers hold mg.mu.
func (mg *Manager) checkReadyLocked() {
	select {
	case <-mg.ready:
		return // closed already
	default:
	}
	if !mg.chainsKnown {
		return
	}
	for k := range mg.unsettled {
		if mg.docs[k.site].index(k.plugin) >= 0 {
			return
		}
	}
	close(mg.ready)
}

// loadFailedLocked notes that k, known at start, could not be loaded:
// the site's fail-closed chain answers 503 for it (with err as the
// reason), a fail-open one runs without it, until a retry succeeds. Ops
// and the site owner are told once. Callers hold mg.mu.
func (mg *Manager) loadFailedLocked(k pluginKey, err error) {
	mp, ok := mg.missing[k]
	if !ok {
		return
	}
	mp.why = fmt.Sprintf("plugin %s (version %d) could not be loaded on this PoP: %v", k.plugin, mp.target.head(), err)
	mg.missing[k] = mp
	doc := mg.docs[k.site]
	mg.rebuildLocked(k.site) // the 503's reason
	policy, lvl := "its fail-open site is served without it", slog.LevelWarn
	switch {
	case doc.index(k.plugin) < 0:
		policy = "its site's chain (as this PoP knows it) does not run it"
	case doc.FailClosed:
		policy, lvl = "its fail-closed site answers 503 for the requests it would run", slog.LevelError
	}
	mg.log.Log(context.Background(), lvl, "plugin deployed before this PoP started cannot be loaded: "+policy+" until it is (retrying)",
		"site", k.site, "plugin", k.plugin, "version", mp.target.head(), "err", err)
	mg.opts.Host.AddLog(plugins.LogLine{Site: k.site, Plugin: slotName(k.plugin, mp.target.head()), Level: lvl,
		Msg: fmt.Sprintf("host: this PoP (%s) could not load the plugin when it started: %v; %s until it can (retrying)", mg.opts.PoPID, err, policy)})
}

// connect opens the buckets and the chain watch (which lives until runCtx).
func (mg *Manager) connect(ctx, runCtx context.Context) (*store, jetstream.KeyWatcher, error) {
	js, err := jetstream.New(mg.opts.Conn)
	if err != nil {
		return nil, nil, fmt.Errorf("rollout: JetStream: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := openStore(ctx, js, mg.opts.StoreReplicas)
	if err != nil {
		return nil, nil, err
	}
	w, err := st.kv.Watch(runCtx, "chain.*")
	if err != nil {
		return nil, nil, fmt.Errorf("rollout: watch site chains in %s: %w", MetaBucket, err)
	}
	return st, w, nil
}

// connectLoop retries connect until it works, then follows the chains.
func (mg *Manager) connectLoop(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			mg.wg.Done()
			return
		case <-t.C:
		}
		st, w, err := mg.connect(ctx, ctx)
		if err != nil {
			mg.log.Debug("JetStream still not reachable", "err", err)
			continue
		}
		mg.st.Store(st)
		mg.log.Info("JetStream reachable: plugin uploads and fetches resume")
		mg.mu.Lock()
		for k := range mg.failed {
			mg.pending[k] = true
		}
		mg.mu.Unlock()
		mg.watchChains(ctx, w) // calls wg.Done
		return
	}
}

// Close stops following deployments. Plugins stay active in the Host.
func (mg *Manager) Close() error {
	if mg.logsSub != nil {
		_ = mg.logsSub.Unsubscribe()
	}
	if mg.stop != nil {
		mg.stop()
	}
	if mg.cancel != nil {
		mg.cancel()
	}
	mg.wg.Wait()
	return nil
}

func (mg *Manager) enqueue(k pluginKey) {
	mg.mu.Lock()
	mg.pending[k] = true
	mg.mu.Unlock()
	select {
	case mg.kick <- struct{}{}:
	default:
	}
}

// work applies queued deployments one at a time: compiling is CPU-bound,
// and one at a time keeps a burst of pushes from starving request handling.
func (mg *Manager) work(ctx context.Context) {
	defer mg.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case <-mg.kick:
		}
		for {
			mg.mu.Lock()
			var k pluginKey
			found := false
			for k = range mg.pending {
				found = true
				break
			}
			delete(mg.pending, k)
			mg.mu.Unlock()
			if !found || ctx.Err() != nil {
				break
			}
			err := mg.reconcile(ctx, k)
			mg.mu.Lock()
			first := mg.unsettled[k]
			delete(mg.unsettled, k)
			if err != nil && ctx.Err() == nil && first {
				mg.loadFailedLocked(k, err)
			}
			if first {
				mg.checkReadyLocked()
			}
			if err != nil && ctx.Err() == nil {
				// Warn once per distinct error: a record that cannot be
				// applied is retried every CheckInterval.
				lvl := slog.LevelWarn
				if prev := mg.failed[k]; prev != nil && prev.Error() == err.Error() {
					lvl = slog.LevelDebug
				}
				mg.failed[k] = err
				mg.m.applyFailures.Inc()
				mg.log.Log(ctx, lvl, "plugin deployment not applied on this PoP; retrying", "site", k.site, "plugin", k.plugin, "err", err)
			} else {
				delete(mg.failed, k)
			}
			mg.mu.Unlock()
		}
	}
}

// reconcile makes this PoP run what k's deployment record asks for.
func (mg *Manager) reconcile(ctx context.Context, k pluginKey) error {
	d, ok := mg.opts.Sync.Deployment(k.site, k.plugin)
	if !ok {
		return nil
	}
	t, err := decodeTarget(d)
	if err != nil {
		mg.log.Error("ignoring deployment record", "err", err)
		return nil
	}
	mg.mu.Lock()
	cur := mg.applied[k]
	// Claim the slots this record needs before checking them, so sweep
	// cannot remove one between the check and the chain naming it.
	for _, n := range []int{t.Stable, t.Canary} {
		delete(mg.retiring, slotKey{k.site, slotName(k.plugin, n)})
	}
	mg.mu.Unlock()
	if cur != nil && cur.target == t {
		return nil
	}
	for _, n := range []int{t.Stable, t.Canary} {
		if n == 0 {
			continue
		}
		want := ""
		if n == t.Canary || t.Canary == 0 {
			want = d.SHA256
		}
		if err := mg.ensure(ctx, k, n, want); err != nil {
			return err
		}
	}
	mg.mu.Lock()
	defer mg.mu.Unlock()
	a := &applied{target: t}
	if t.Canary != 0 {
		a.base = mg.statsLocked(k.site, slotName(k.plugin, t.Canary))
	}
	mg.applied[k] = a
	if _, ok := mg.missing[k]; ok {
		delete(mg.missing, k)
		mg.m.missing.Set(float64(len(mg.missing)))
	}
	now := time.Now()
	for sk := range mg.slots {
		p, n, ok := parseSlot(sk.slot)
		if ok && sk.site == k.site && p == k.plugin && n != t.Stable && n != t.Canary {
			if _, dup := mg.retiring[sk]; !dup {
				mg.retiring[sk] = now
			}
		}
	}
	mg.rebuildLocked(k.site)
	if !d.At.IsZero() {
		mg.m.applySeconds.Observe(max(0, now.Sub(d.At).Seconds()))
	}
	mg.m.applied.Inc()
	mg.log.Info("plugin deployment applied", "site", k.site, "plugin", k.plugin, "version", d.Version,
		"canary_percent", d.CanaryPercent, "rolled_back", d.RolledBack, "since_record", now.Sub(d.At).Round(time.Millisecond))
	return nil
}

// ensure makes global version n of k active in its own Host slot, fetching
// the blob when this PoP does not hold it.
func (mg *Manager) ensure(ctx context.Context, k pluginKey, n int, wantSHA string) error {
	slot := slotName(k.plugin, n)
	if info, ok := mg.opts.Host.Active(k.site, slot); ok && (wantSHA == "" || info.SHA256 == wantSHA) {
		return nil
	}
	v, wasm, err := mg.fetch(ctx, k, n)
	if err != nil {
		return err
	}
	if wantSHA != "" && v.SHA256 != wantSHA {
		return fmt.Errorf("deployment of %s/%s names SHA-256 %.12s for version %d but the catalogue has %.12s", k.site, k.plugin, wantSHA, n, v.SHA256)
	}
	mg.mu.Lock()
	mg.slots[slotKey{k.site, slot}] = true
	mg.mu.Unlock()
	info, err := mg.opts.Host.Add(ctx, k.site, slot, wasm)
	if err != nil {
		return fmt.Errorf("version %d of %s/%s: %w", n, k.site, k.plugin, err)
	}
	if err := mg.opts.Host.Activate(ctx, k.site, slot, info.Version); err != nil {
		return fmt.Errorf("version %d of %s/%s: %w", n, k.site, k.plugin, err)
	}
	return nil
}

// fetch returns version n's catalogue entry and verified bytes, from the
// CacheDir copy when it has them, else from JetStream (and keeps a copy).
func (mg *Manager) fetch(ctx context.Context, k pluginKey, n int) (Version, []byte, error) {
	st := mg.st.Load()
	v, ok := Version{}, false
	if mg.disk != nil {
		v, ok = mg.disk.version(k.site, k.plugin, n)
	}
	if !ok {
		if st == nil {
			return Version{}, nil, fmt.Errorf("version %d of %s/%s: JetStream is not reachable and this PoP has no copy", n, k.site, k.plugin)
		}
		var err error
		if v, err = st.version(ctx, k.site, k.plugin, n); err != nil {
			return Version{}, nil, err
		}
		if mg.disk != nil {
			if err := mg.disk.putVersion(v); err != nil {
				mg.log.Warn("keeping a copy of a plugin version failed", "err", err)
			}
		}
	}
	if mg.disk != nil {
		if b, ok := mg.disk.blob(v.SHA256); ok {
			return v, b, nil
		}
	}
	if st == nil {
		return Version{}, nil, fmt.Errorf("version %d of %s/%s: JetStream is not reachable and this PoP has no copy", n, k.site, k.plugin)
	}
	b, err := st.getBlob(ctx, k.site, k.plugin, v.SHA256)
	if err != nil {
		return Version{}, nil, err
	}
	if mg.disk != nil {
		if err := mg.disk.putBlob(v.SHA256, b); err != nil {
			mg.log.Warn("keeping a copy of a plugin blob failed", "err", err)
		}
	}
	return v, b, nil
}

// watchChains follows the site chains in the KV bucket.
func (mg *Manager) watchChains(ctx context.Context, w jetstream.KeyWatcher) {
	defer mg.wg.Done()
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil {
				// Initial values done: the chains are known.
				mg.mu.Lock()
				mg.chainsKnown = true
				mg.checkReadyLocked()
				mg.mu.Unlock()
				continue
			}
			site := e.Key()[len("chain."):]
			var d ChainDoc
			if e.Operation() == jetstream.KeyValuePut {
				if err := json.Unmarshal(e.Value(), &d); err != nil {
					mg.log.Error("ignoring corrupt site chain", "site", site, "err", err)
					continue
				}
			}
			if mg.disk != nil {
				if e.Operation() == jetstream.KeyValuePut {
					if err := mg.disk.putChain(site, d); err != nil {
						mg.log.Warn("keeping a copy of a site chain failed", "site", site, "err", err)
					}
				} else {
					mg.disk.dropChain(site)
				}
			}
			mg.mu.Lock()
			mg.docs[site] = d
			mg.rebuildLocked(site)
			mg.mu.Unlock()
		}
	}
}

// checkLoop judges canaries, removes retired slots and retries failed
// reconciles.
func (mg *Manager) checkLoop(ctx context.Context) {
	defer mg.wg.Done()
	t := time.NewTicker(mg.opts.CheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		mg.judgeCanaries(ctx)
		mg.sweep()
		mg.mu.Lock()
		var retry []pluginKey
		for k := range mg.failed {
			retry = append(retry, k)
		}
		mg.mu.Unlock()
		for _, k := range retry {
			mg.enqueue(k)
		}
	}
}

// sweep removes slots retired for longer than RetireAfter.
func (mg *Manager) sweep() {
	mg.mu.Lock()
	defer mg.mu.Unlock()
	for k, since := range mg.retiring {
		if mg.inUseLocked(k) {
			delete(mg.retiring, k) // deployed again meanwhile
			continue
		}
		if time.Since(since) < mg.opts.RetireAfter {
			continue
		}
		delete(mg.retiring, k)
		delete(mg.slots, k)
		info, _ := mg.opts.Host.Active(k.site, k.slot)
		if err := mg.opts.Host.Remove(k.site, k.slot); err == nil {
			mg.log.Info("plugin version retired", "site", k.site, "slot", k.slot)
		}
		if mg.disk != nil && info.SHA256 != "" && !mg.shaInUseLocked(info.SHA256) {
			mg.disk.dropBlob(info.SHA256)
		}
	}
}

// shaInUseLocked reports whether a slot this Manager keeps runs sha.
func (mg *Manager) shaInUseLocked(sha string) bool {
	for k := range mg.slots {
		if info, ok := mg.opts.Host.Active(k.site, k.slot); ok && info.SHA256 == sha {
			return true
		}
	}
	return false
}

// inUseLocked reports whether an applied target names slot k.
func (mg *Manager) inUseLocked(k slotKey) bool {
	p, n, ok := parseSlot(k.slot)
	if !ok {
		return false
	}
	a := mg.applied[pluginKey{k.site, p}]
	return a != nil && n != 0 && (a.target.Stable == n || a.target.Canary == n)
}

// Runs reports whether site runs any plugin now (stable or canary): the
// PoP's fast hit path answers only for sites that do not.
func (mg *Manager) Runs(site string) bool {
	return (*mg.chains.Load())[site] != nil
}

// Chain returns the chain a request of site runs now, with canary versions
// picked for their share of requests; nil when the site runs no plugin.
// middleware/plugin's Options.Chain calls it with the request's site.
func (mg *Manager) Chain(site string) *plugins.Chain {
	sc := (*mg.chains.Load())[site]
	if sc == nil {
		return nil
	}
	if len(sc.canaries) == 0 {
		return sc.stable
	}
	var pick []int // canaries taking this request, by entry position
	for _, c := range sc.canaries {
		if c.percent > 0 && rand.IntN(100) < c.percent {
			pick = append(pick, c.pos)
		}
	}
	if len(pick) == 0 {
		return sc.stable
	}
	ch := &plugins.Chain{Site: site, FailClosed: sc.stable.FailClosed, Entries: make([]plugins.Entry, 0, len(sc.all))}
	for i, e := range sc.all {
		for _, c := range sc.canaries {
			if c.pos == i && contains(pick, i) {
				e = c.entry // the canary's slot, with its own config when it has one
			}
		}
		if e.Plugin != "" {
			ch.Entries = append(ch.Entries, e)
		}
	}
	return ch
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// chainMap is the request path's view: site -> chains.
type chainMap map[string]*siteChain

type siteChain struct {
	// stable is the chain without canaries (entries without a stable
	// version left out): what most requests run.
	stable *plugins.Chain
	// all has one entry per chain position; Plugin is the stable slot or
	// "" when only a canary runs there.
	all      []plugins.Entry
	canaries []canaryPick
}

type canaryPick struct {
	pos int
	// entry runs the canary's slot, with the canary's own config and
	// headers when its record carries them, else the chain entry's.
	entry   plugins.Entry
	percent int
}

// entry is e as the host runs it, from slot (slotName: the plugin's
// name with one of its versions).
func (e ChainEntry) entry(slot string) plugins.Entry {
	return plugins.Entry{Plugin: slot, Config: e.Config, RequestHeaders: e.RequestHeaders, ResponseHeaders: e.ResponseHeaders}
}

// rebuildLocked recomputes site's chains from its doc and what this PoP
// has applied, and publishes them. Callers hold mg.mu.
func (mg *Manager) rebuildLocked(site string) {
	doc := mg.docs[site]
	sc := &siteChain{stable: &plugins.Chain{Site: site, FailClosed: doc.FailClosed}}
	for _, de := range doc.Entries {
		a := mg.applied[pluginKey{site, de.Plugin}]
		if mp, ok := mg.missing[pluginKey{site, de.Plugin}]; ok && a == nil && doc.FailClosed {
			// Ran before this PoP started and is not active yet: a
			// fail-closed site must not be served without it.
			e := de.entry(slotName(de.Plugin, mp.target.head()))
			e.Unavailable = mp.why
			sc.stable.Entries = append(sc.stable.Entries, e)
			sc.all = append(sc.all, e)
			continue
		}
		if a == nil || (a.target.Stable == 0 && a.target.Canary == 0) {
			continue
		}
		var e plugins.Entry // the stable slot; Plugin stays "" when only a canary runs here
		if a.target.Stable != 0 {
			e = de.entry(slotName(de.Plugin, a.target.Stable))
			sc.stable.Entries = append(sc.stable.Entries, e)
		}
		if a.target.Canary != 0 {
			ce := de
			if own, ok := a.target.CanaryEntry(); ok {
				ce = own
			}
			sc.canaries = append(sc.canaries, canaryPick{pos: len(sc.all), entry: ce.entry(slotName(de.Plugin, a.target.Canary)), percent: a.target.Percent})
		}
		sc.all = append(sc.all, e)
	}
	old := *mg.chains.Load()
	next := make(chainMap, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	if len(sc.all) == 0 {
		delete(next, site)
	} else {
		next[site] = sc
	}
	mg.chains.Store(&next)
}
