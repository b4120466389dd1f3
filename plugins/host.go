package plugins

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tetratelabs/wazero/api"
)

// Options configure a Host. Zero fields take the documented defaults.
type Options struct {
	// Engine compiles and runs plugins (required): the native engine
	// (plugins/native) or NewSDKEngine, the go-sdk reference host.
	Engine Engine
	// SiteEngine, when set, picks the engine for one site's plugins (for
	// example the go-sdk for a site being debugged against the reference
	// host); a nil result falls back to Engine. It is consulted when a
	// version is added or activated, so a change takes effect at the next
	// activation.
	SiteEngine func(site string) Engine
	// Limits bound every plugin call (timeout, memory, input, output).
	Limits Limits
	// MaxWasmBytes refuses larger uploads. Default 16 MiB.
	MaxWasmBytes int
	// MaxInstances caps live instances per plugin version; a request waits
	// for one until its context ends. Default 64.
	MaxInstances int
	// IdleInstances is how many warm instances a version keeps. Default 8.
	// Each instance serves one chain-entry config for its life (see
	// plugins/README.md); a version used with several configs shares these
	// among them, the least recently used making room.
	IdleInstances int
	// WarmInstances are made when a version is activated, before it takes
	// traffic. Default 2.
	WarmInstances int
	// BreakerThreshold is the fewest failed calls, within about the last
	// 10 s, that open a plugin's breaker for BreakerCooldown: it opens when
	// at least that many failed and either none succeeded, or at least 20
	// calls ran and half or more failed (see breaker.go), so a plugin that
	// fails only on some requests keeps running. Defaults 5 and 10s.
	BreakerThreshold int
	BreakerCooldown  time.Duration
	// KeepVersions is how many versions' bytes a plugin keeps for rollback.
	// Default 10. The durable copy lives in the JetStream object store.
	KeepVersions int
	// LogLines is how many plugin log lines are kept per site. Default 500.
	LogLines int
	// KV backs the meridian_kv_* host functions; nil fails those calls.
	KV KV
	// Registerer receives the plugin metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// MetricLabels, when set, gives the plugin and version labels of a
	// plugin's series from its name and version in this Host: a caller that
	// keeps each of its versions under a name of its own (rollout's
	// "NAME@VERSION") reports them as the site owner knows them. nil: the
	// name and the Host's version.
	MetricLabels func(name string, version int) (pluginLabel, versionLabel string)
	// Logger gets host events; nil discards.
	Logger *slog.Logger
	// Now is the clock (tests); nil is time.Now.
	Now func() time.Time
}

func (o Options) withDefaults() Options {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.MaxWasmBytes, 16<<20)
	def(&o.MaxInstances, 64)
	def(&o.IdleInstances, 8)
	def(&o.WarmInstances, 2)
	def(&o.BreakerThreshold, 5)
	def(&o.KeepVersions, 10)
	def(&o.LogLines, 500)
	if o.BreakerCooldown <= 0 {
		o.BreakerCooldown = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	o.Limits = o.Limits.withDefaults()
	return o
}

// Host is a PoP's plugin host: the local store of plugin versions per site
// and the runner of sites' chains. It is safe for concurrent use.
type Host struct {
	opts    Options
	metrics *metrics
	logs    *logBook

	// plugins is read on every request without a lock: the map is never
	// changed once published; Add, Remove and Close publish a new one
	// under mu (copy on write, a few hundred entries at most per PoP).
	mu      sync.Mutex
	plugins atomic.Pointer[map[pluginKey]*slot]
	closed  atomic.Bool

	// exchanges recycles Exchange values (with their encoding buffer):
	// Begin takes one, Close puts it back.
	exchanges sync.Pool
	// epoch is the base of mono: durations from one monotonic clock read.
	epoch time.Time
	// anchor maps mono to the wall clock; it is renewed every second so
	// that a step of the wall clock (NTP) shows within a second.
	anchor  atomic.Pointer[wallAnchor]
	fakeNow bool // Options.Now was given: Exchange.Time uses it
}

type wallAnchor struct {
	wall time.Time
	mono time.Duration
}

// mono is the time since the host was made, from one monotonic clock read
// (time.Now reads the wall clock as well).
func (h *Host) mono() time.Duration { return time.Since(h.epoch) }

// wallAt is the wall-clock time at mono reading m.
func (h *Host) wallAt(m time.Duration) time.Time {
	a := h.anchor.Load()
	if d := m - a.mono; d > time.Second || d < -time.Second {
		a = &wallAnchor{wall: time.Now(), mono: h.mono()}
		h.anchor.Store(a) // racing renewals are all correct
	}
	return a.wall.Add(m - a.mono)
}

type pluginKey struct{ site, name string }

// slot is one plugin of one site: its versions and the active one.
type slot struct {
	mu       sync.Mutex // serialises Add/Activate/Rollback of this plugin
	versions []*stored
	history  []int // activated versions, oldest first
	active   atomic.Pointer[live]
	breaker  *breaker
	removed  atomic.Bool // dropped from the host (Remove, Close)
}

type stored struct {
	info VersionInfo
	wasm []byte // nil once dropped by KeepVersions
}

// VersionInfo describes one stored plugin version.
type VersionInfo struct {
	Site    string
	Plugin  string
	Version int // 1, 2, ... per site and plugin
	SHA256  string
	Size    int
	Added   time.Time
	// OnResponse is true when the plugin exports on_response.
	OnResponse bool
	// Active is true for the version taking traffic.
	Active bool
	// Kept is false once the bytes were dropped (KeepVersions).
	Kept bool
}

// live is an activated version: compiled program, pool, metrics.
type live struct {
	info    VersionInfo
	prog    Program
	pool    *pool
	refs    atomic.Int64
	retired atomic.Bool
	once    sync.Once
	m       versionMetrics
	release func() // drops metric series when the version is freed
	log     func(slog.Level, string)
}

// NewHost makes a Host.
func NewHost(opts Options) (*Host, error) {
	if opts.Engine == nil {
		return nil, errors.New("plugins: Options.Engine is required (use plugins.NewSDKEngine)")
	}
	fakeNow := opts.Now != nil
	opts = opts.withDefaults()
	if err := opts.Limits.Validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	h := &Host{opts: opts, metrics: m, logs: newLogBook(opts.LogLines), epoch: time.Now(), fakeNow: fakeNow}
	h.plugins.Store(&map[pluginKey]*slot{})
	h.anchor.Store(&wallAnchor{wall: h.epoch})
	return h, nil
}

// ValidationError says why an upload was refused; show it to the site owner.
type ValidationError struct{ Reason string }

func (e *ValidationError) Error() string { return "plugin refused: " + e.Reason }

// allowedImport reports whether a plugin may import module.name. WASI is
// allowed (Go plugins need it; it has no preopened directory or socket).
// Extism's http_request is not: plugins get no network.
func allowedImport(module, name string) bool {
	switch module {
	case "wasi_snapshot_preview1":
		return true
	case "extism:host/env":
		switch name {
		case "alloc", "free", "length", "length_unsafe", "load_u8", "load_u64", "store_u8",
			"store_u64", "input_length", "input_load_u8", "input_load_u64", "output_set", "error_set",
			"config_get", "var_get", "var_set", "get_log_level",
			"log_trace", "log_debug", "log_info", "log_warn", "log_error":
			return true
		}
	case userNamespace:
		// Every host function both engines offer, from the one list.
		for _, f := range HostFunctions() {
			if f.Name == name {
				return true
			}
		}
	}
	return false
}

// contractSignature reports whether sig is one the contract's exports may
// have: no parameters and an i32 result (0 = success). No result is
// accepted as well, as the Extism convention and both engines treat it as
// success.
func contractSignature(sig Signature) bool {
	if len(sig.Params) != 0 {
		return false
	}
	switch len(sig.Results) {
	case 0:
		return true
	case 1:
		return sig.Results[0] == api.ValueTypeI32
	}
	return false
}

// Add validates wasm as a new version of site's plugin name and stores it
// without activating it: size limit, it compiles, it is not a WASI command
// (_start without _initialize: Go built without -buildmode=c-shared), it
// exports on_request, on_request and on_response have the contract's type
// (no parameters, an i32 result or none), it imports only our host
// functions (and WASI), and an instance starts.
// Adding bytes already stored returns that version.
func (h *Host) Add(ctx context.Context, site, name string, wasm []byte) (VersionInfo, error) {
	if site == "" || name == "" {
		return VersionInfo{}, &ValidationError{"site and plugin name must not be empty"}
	}
	if len(wasm) > h.opts.MaxWasmBytes {
		return VersionInfo{}, &ValidationError{fmt.Sprintf("%d bytes is over the %d byte limit", len(wasm), h.opts.MaxWasmBytes)}
	}
	sum := sha256.Sum256(wasm)
	hash := hex.EncodeToString(sum[:])
	s, err := h.slot(site, name, true)
	if err != nil {
		return VersionInfo{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range s.versions {
		if v.info.SHA256 == hash && v.wasm != nil {
			return h.infoLocked(s, v), nil
		}
	}
	prog, onResp, err := h.compile(ctx, site, wasm)
	if err != nil {
		return VersionInfo{}, err
	}
	_ = prog.Close(ctx)
	v := &stored{wasm: slices.Clone(wasm), info: VersionInfo{
		Site: site, Plugin: name, Version: len(s.versions) + 1, SHA256: hash, Size: len(wasm),
		Added: h.opts.Now(), OnResponse: onResp,
	}}
	s.versions = append(s.versions, v)
	h.dropOldLocked(s)
	h.opts.Logger.Info("plugin version added", append(h.logNames(site, name, v.info.Version), "sha256", hash[:12], "bytes", len(wasm))...)
	return h.infoLocked(s, v), nil
}

// logNames are the attributes naming version of site's plugin name in the
// PoP's log: the plugin and version the site owner knows (Options.
// MetricLabels, as on the metrics), and the Host's slot when its name is
// not the plugin's (rollout's "NAME@VERSION", whose own version count would
// contradict the deployment's).
func (h *Host) logNames(site, name string, version int) []any {
	if h.opts.MetricLabels == nil {
		return []any{"site", site, "plugin", name, "version", version}
	}
	p, v := h.opts.MetricLabels(name, version)
	if p == name {
		return []any{"site", site, "plugin", p, "version", v}
	}
	return []any{"site", site, "plugin", p, "version", v, "slot", name}
}

// AddLog adds l to the plugin log lines of l.Site, for whoever runs the
// Host to tell the site owner what happens to a plugin outside its calls
// (rollout: a version this PoP cannot load). l.Time zero is now.
func (h *Host) AddLog(l LogLine) {
	if l.Time.IsZero() {
		l.Time = h.opts.Now()
	}
	h.logs.add(l)
}

// Validate runs Add's checks on wasm for site without storing it or
// making a slot: for an upload that is stored elsewhere (rollout) and
// activated later under a name of its own. It logs nothing; the error is
// a *ValidationError when the bytes are refused.
func (h *Host) Validate(ctx context.Context, site string, wasm []byte) error {
	if site == "" {
		return &ValidationError{"site must not be empty"}
	}
	if len(wasm) > h.opts.MaxWasmBytes {
		return &ValidationError{fmt.Sprintf("%d bytes is over the %d byte limit", len(wasm), h.opts.MaxWasmBytes)}
	}
	prog, _, err := h.compile(ctx, site, wasm)
	if err != nil {
		return err
	}
	return prog.Close(ctx)
}

// compile compiles and checks a plugin for site, returning the program.
func (h *Host) compile(ctx context.Context, site string, wasm []byte) (Program, bool, error) {
	eng := h.opts.Engine
	if h.opts.SiteEngine != nil {
		if e := h.opts.SiteEngine(site); e != nil {
			eng = e
		}
	}
	prog, err := eng.Compile(ctx, wasm, h.opts.Limits)
	if err != nil {
		return nil, false, &ValidationError{err.Error()}
	}
	fail := func(format string, a ...any) (Program, bool, error) {
		_ = prog.Close(ctx)
		return nil, false, &ValidationError{fmt.Sprintf(format, a...)}
	}
	for _, im := range prog.Imports() {
		if !allowedImport(im.Module, im.Name) {
			return fail("it imports %s.%s, which Meridian does not provide (see plugins/README.md for the host functions)", im.Module, im.Name)
		}
	}
	exports := prog.Exports()
	// A WASI command (Go's default build mode) must run _start before any
	// other export, and the host never runs it: every call would trap (Go:
	// runtime.notInitialized). Reactors export _initialize (Go's and
	// TinyGo's c-shared), AssemblyScript and Rust cdylib modules neither.
	if slices.Contains(exports, "_start") && !slices.Contains(exports, "_initialize") {
		return fail("it exports _start but not _initialize, so it is a WASI command whose exports cannot run before its main: " +
			"a Go plugin must be built with -buildmode=c-shared (GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o plugin.wasm .); " +
			"other toolchains: build a library/reactor (Rust: crate-type cdylib; C: -mexec-model=reactor)")
	}
	if !slices.Contains(exports, "on_request") {
		return fail("it does not export on_request (Go: build with -buildmode=c-shared and //go:wasmexport on_request)")
	}
	for _, fn := range []string{"on_request", "on_response"} {
		sig, ok := prog.ExportSignature(fn)
		if ok && !contractSignature(sig) {
			return fail("its export %s has the type %s, but plugins/README.md requires (result i32): no parameters and an i32 result, 0 = success (Go: //go:wasmexport %s on a func() int32)", fn, sig, fn)
		}
	}
	in, err := prog.Instantiate(ctx)
	if err != nil {
		return fail("it does not start: %v", err)
	}
	_ = in.Close(ctx)
	return prog, slices.Contains(exports, "on_response"), nil
}

func (h *Host) dropOldLocked(s *slot) {
	act := s.active.Load()
	kept := 0
	for i := len(s.versions) - 1; i >= 0; i-- {
		v := s.versions[i]
		if v.wasm == nil {
			continue
		}
		kept++
		if kept > h.opts.KeepVersions && (act == nil || act.info.Version != v.info.Version) {
			v.wasm = nil
		}
	}
}

func (h *Host) infoLocked(s *slot, v *stored) VersionInfo {
	info := v.info
	if a := s.active.Load(); a != nil && a.info.Version == info.Version {
		info.Active = true
	}
	info.Kept = v.wasm != nil
	return info
}

func (h *Host) slot(site, name string, create bool) (*slot, error) {
	k := pluginKey{site, name}
	if !create {
		s := (*h.plugins.Load())[k]
		switch {
		case h.closed.Load():
			return nil, errors.New("plugins: host is closed")
		case s == nil:
			return nil, fmt.Errorf("site %s has no plugin %q: upload it first", site, name)
		}
		return s, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed.Load() {
		return nil, errors.New("plugins: host is closed")
	}
	old := *h.plugins.Load()
	s := old[k]
	if s == nil {
		s = &slot{breaker: newBreaker(h.opts.BreakerThreshold, h.opts.BreakerCooldown, h.opts.Now)}
		m := maps.Clone(old)
		m[k] = s
		h.plugins.Store(&m)
	}
	return s, nil
}

// Activate makes version the one taking site's traffic for plugin name. The
// swap is atomic: requests that started on the old version finish on it, and
// the old version is freed when the last of them ends.
func (h *Host) Activate(ctx context.Context, site, name string, version int) error {
	s, err := h.slot(site, name, false)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := h.activateLocked(ctx, s, version); err != nil {
		return err
	}
	s.history = append(s.history, version)
	if len(s.history) > 4*h.opts.KeepVersions {
		s.history = slices.Clone(s.history[len(s.history)-2*h.opts.KeepVersions:])
	}
	return nil
}

func (h *Host) activateLocked(ctx context.Context, s *slot, version int) error {
	if version < 1 || version > len(s.versions) {
		return fmt.Errorf("plugin has no version %d (versions 1..%d)", version, len(s.versions))
	}
	st := s.versions[version-1]
	if st.wasm == nil {
		return fmt.Errorf("version %d of %s/%s is no longer kept on this PoP: re-upload it", version, st.info.Site, st.info.Plugin)
	}
	prog, _, err := h.compile(ctx, st.info.Site, st.wasm)
	if err != nil {
		return err
	}
	l := &live{info: st.info, prog: prog,
		pool: newPool(prog, h.opts.MaxInstances, h.opts.IdleInstances)}
	l.info.Active = true
	l.log = func(lv slog.Level, msg string) {
		h.logs.add(LogLine{Time: h.opts.Now(), Site: l.info.Site, Plugin: l.info.Plugin, Version: l.info.Version, Level: lv, Msg: msg})
	}
	plugLabel, verLabel := st.info.Plugin, versionLabel(st.info.Version)
	if h.opts.MetricLabels != nil {
		plugLabel, verLabel = h.opts.MetricLabels(st.info.Plugin, st.info.Version)
	}
	l.m, l.release = h.metrics.forVersion(st.info.Site, plugLabel, verLabel, l.pool)
	if err := l.pool.warm(ctx, h.opts.WarmInstances); err != nil {
		l.free()
		return fmt.Errorf("activate %s/%s version %d: %w", st.info.Site, st.info.Plugin, version, err)
	}
	s.breaker.reset()
	if old := s.active.Swap(l); old != nil {
		old.retire()
	}
	h.opts.Logger.Info("plugin version active", h.logNames(st.info.Site, st.info.Plugin, version)...)
	return nil
}

// Rollback re-activates the version that was active before the current one.
func (h *Host) Rollback(ctx context.Context, site, name string) (VersionInfo, error) {
	s, err := h.slot(site, name, false)
	if err != nil {
		return VersionInfo{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.active.Load()
	for i := len(s.history) - 1; i >= 0; i-- {
		v := s.history[i]
		if cur != nil && v == cur.info.Version {
			continue
		}
		if err := h.activateLocked(ctx, s, v); err != nil {
			return VersionInfo{}, err
		}
		s.history = append(s.history, v)
		return h.infoLocked(s, s.versions[v-1]), nil
	}
	return VersionInfo{}, fmt.Errorf("%s/%s has no earlier active version to roll back to", site, name)
}

// Remove drops site's plugin name with all its versions. Requests in flight
// finish on the active version, which is then freed; later requests whose
// chain still names the plugin get a KindInstance error (the site's policy
// applies).
func (h *Host) Remove(site, name string) error {
	h.mu.Lock()
	old := *h.plugins.Load()
	s := old[pluginKey{site, name}]
	if s != nil {
		m := maps.Clone(old)
		delete(m, pluginKey{site, name})
		h.plugins.Store(&m)
	}
	h.mu.Unlock()
	if s == nil {
		return fmt.Errorf("site %s has no plugin %q", site, name)
	}
	s.removed.Store(true)
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.active.Swap(nil); l != nil {
		l.retire()
	}
	return nil
}

// Versions lists site's versions of plugin name, oldest first.
func (h *Host) Versions(site, name string) []VersionInfo {
	s, err := h.slot(site, name, false)
	if err != nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]VersionInfo, 0, len(s.versions))
	for _, v := range s.versions {
		out = append(out, h.infoLocked(s, v))
	}
	return out
}

// Active returns the version taking traffic.
func (h *Host) Active(site, name string) (VersionInfo, bool) {
	s, err := h.slot(site, name, false)
	if err != nil {
		return VersionInfo{}, false
	}
	if l := s.active.Load(); l != nil {
		return l.info, true
	}
	return VersionInfo{}, false
}

// Logs returns the plugin log lines kept for site, oldest first.
func (h *Host) Logs(site string) []LogLine { return h.logs.lines(site) }

// Close retires every version. In-flight requests finish first.
func (h *Host) Close(ctx context.Context) error {
	h.mu.Lock()
	h.closed.Store(true)
	ps := *h.plugins.Load()
	h.plugins.Store(&map[pluginKey]*slot{})
	h.mu.Unlock()
	for _, s := range ps {
		s.removed.Store(true)
		if l := s.active.Swap(nil); l != nil {
			l.retire()
		}
	}
	return nil
}

// acquire pins the active version for one request.
func (s *slot) acquire() *live {
	for {
		l := s.active.Load()
		if l == nil {
			return nil
		}
		l.refs.Add(1)
		if !l.retired.Load() {
			return l
		}
		l.releaseRef() // swapped meanwhile: take the new one
	}
}

func (l *live) releaseRef() {
	if l.refs.Add(-1) == 0 && l.retired.Load() {
		l.free()
	}
}

func (l *live) retire() {
	l.retired.Store(true)
	if l.refs.Load() == 0 {
		l.free()
	}
}

func (l *live) free() {
	l.once.Do(func() {
		l.pool.close()
		_ = l.prog.Close(context.Background())
		if l.release != nil {
			l.release()
		}
	})
}

func versionLabel(v int) string { return strconv.Itoa(v) }
