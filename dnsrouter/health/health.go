// Package health owns the DNS server's view of which PoPs may be served: a
// table fed by the PoPs' NATS beacons and by the server's own active HTTP
// probes, with hysteresis, a cold-start grace period and a stale mode when
// the beacon feed is lost.
//
// It publishes immutable snapshots that the query path reads without locks.
// It does not rank PoPs or answer queries (package dnsrouter does), and it
// does not parse beacons off the wire (internal/beacon does).
package health

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-edge/meridian/internal/beacon"
)

// Verdict is one health signal's opinion of a PoP.
type Verdict uint8

const (
	// Unknown means no evidence yet (cold start). It counts as up so that a
	// freshly started DNS server does not see "every PoP down".
	Unknown Verdict = iota
	// Up means the signal says the PoP may be served.
	Up
	// Down means the signal says the PoP must not be served.
	Down
)

func (v Verdict) String() string {
	switch v {
	case Up:
		return "up"
	case Down:
		return "down"
	}
	return "unknown"
}

// PoP is the static part of a PoP that health needs.
type PoP struct {
	ID string
	// HealthURL is probed with GET; a 2xx answer is a success. Empty: no
	// active probe, the beacons decide alone.
	HealthURL string
	// Capacity overrides the capacity the PoP reports in its beacons when
	// > 0 (same unit as the beacon's Load, requests/s).
	Capacity float64
	// Threshold is the share of capacity (0 < t <= 1) from which the PoP
	// starts to shed part of its clients to the next nearest.
	Threshold float64
}

// Config configures a Table. Zero values take the defaults noted.
type Config struct {
	PoPs []PoP
	// BeaconInterval is how often PoPs publish (default 1s).
	BeaconInterval time.Duration
	// MissedBeacons is how many intervals without a beacon make a PoP
	// unhealthy (default 3).
	MissedBeacons int
	// ProbeInterval is the period of the active HTTP probes (default 2s);
	// ProbeTimeout bounds one probe (default 1s).
	ProbeInterval, ProbeTimeout time.Duration
	// Rise is how many consecutive good beacons or probes bring a PoP that
	// was down back up (default 3); Fall is how many consecutive failed
	// probes take it down (default 2). Rise > 1 is the hysteresis that keeps
	// a flapping PoP out of the answers.
	Rise, Fall int
	// Client performs the probes (default: a client with ProbeTimeout).
	Client *http.Client
	Logger *slog.Logger
	// Now is the clock (default time.Now); tests set it.
	Now func() time.Time
	// OnChange is called (outside the table's lock) after every published
	// snapshot; the server uses it for metrics.
	OnChange func(*Snapshot)
	// OnUnknown is called (outside the table's lock) for every beacon from
	// a PoP the table does not list, so that the server can count them and
	// tell the operator who forgot a PoP in the DNS configuration.
	OnUnknown func(b beacon.Beacon)
}

func (c *Config) defaults() {
	if c.BeaconInterval <= 0 {
		c.BeaconInterval = time.Second
	}
	if c.MissedBeacons <= 0 {
		c.MissedBeacons = 3
	}
	if c.ProbeInterval <= 0 {
		c.ProbeInterval = 2 * time.Second
	}
	if c.ProbeTimeout <= 0 {
		c.ProbeTimeout = time.Second
	}
	if c.Rise <= 0 {
		c.Rise = 3
	}
	if c.Fall <= 0 {
		c.Fall = 2
	}
	if c.Client == nil {
		c.Client = &http.Client{Timeout: c.ProbeTimeout}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// State is one PoP's entry in a snapshot.
type State struct {
	ID string
	// Served is true when no signal says down: beacon and probe must agree.
	Served bool
	Beacon Verdict
	Probe  Verdict
	// Load and Capacity as last reported (Capacity possibly overridden by
	// configuration); Capacity 0 means unlimited.
	Load, Capacity float64
	// Keep is the share (0..1) of the clients for whom this PoP is nearest
	// that it keeps; the rest spill to the next nearest. 1 below the
	// threshold, falling linearly to 0 at full capacity, so the spilled
	// share grows as the remaining capacity shrinks.
	Keep float64
	// LastBeacon is when the last beacon arrived (zero: never).
	LastBeacon time.Time
	// Reason explains the current verdicts for logs and `dns explain`.
	Reason string
}

// Snapshot is an immutable view of all PoPs, in configuration order.
type Snapshot struct {
	PoPs []State
	// Stale is true while the beacon feed (NATS) is unreachable: the
	// verdicts are the last ones seen and are not aged.
	Stale bool
}

type popState struct {
	cfg PoP

	beacon     Verdict
	beaconGood int
	lastBeacon time.Time
	load, cap  float64
	beaconWhy  string

	probe     Verdict
	probeGood int
	probeBad  int
	probeWhy  string
}

// Table is the health table. Create it with New, feed it with Observe and
// WatchFeed, run it with Run, read it with Snapshot.
type Table struct {
	mu       sync.Mutex
	cfg      Config
	pops     []*popState
	watching bool
	feedUp   func() bool
	stale    bool
	// lastTick is when Run's ageing ticker last fired (zero before the
	// first tick), to notice a tick that comes much later than its period:
	// the process itself was not running.
	lastTick time.Time

	snap atomic.Pointer[Snapshot]
}

// New returns a table in which every PoP is Unknown (served).
func New(cfg Config) *Table {
	cfg.defaults()
	t := &Table{cfg: cfg}
	now := t.cfg.Now()
	for _, p := range cfg.PoPs {
		t.pops = append(t.pops, &popState{cfg: p, lastBeacon: now})
	}
	t.mu.Lock()
	s := t.publishLocked()
	t.mu.Unlock()
	t.notify(s)
	return t
}

// Snapshot returns the current view; it never blocks and never allocates.
func (t *Table) Snapshot() *Snapshot { return t.snap.Load() }

// SetPoPs replaces the PoP list (on reload). PoPs that stay keep their
// state; new PoPs start Unknown with a fresh beacon grace period.
func (t *Table) SetPoPs(pops []PoP) {
	t.mu.Lock()
	old := map[string]*popState{}
	for _, p := range t.pops {
		old[p.cfg.ID] = p
	}
	now := t.cfg.Now()
	t.pops = t.pops[:0:0]
	for _, p := range pops {
		if st, ok := old[p.ID]; ok {
			if st.cfg.HealthURL != p.HealthURL {
				st.probe, st.probeGood, st.probeBad, st.probeWhy = Unknown, 0, 0, ""
			}
			st.cfg = p
			t.pops = append(t.pops, st)
			continue
		}
		t.pops = append(t.pops, &popState{cfg: p, lastBeacon: now})
	}
	s := t.publishLocked()
	t.mu.Unlock()
	t.notify(s)
}

// WatchFeed marks the beacon feed as attached: from now on a PoP without
// beacons for MissedBeacons intervals goes down. connected reports whether
// the feed is currently reachable; while it is not, the table keeps its
// last view and marks it stale instead of ageing PoPs out.
func (t *Table) WatchFeed(connected func() bool) {
	t.mu.Lock()
	t.watching = true
	t.feedUp = connected
	now := t.cfg.Now()
	for _, p := range t.pops {
		if p.lastBeacon.IsZero() || p.beacon == Unknown {
			p.lastBeacon = now // cold start: a full grace period from now
		}
	}
	t.mu.Unlock()
}

// Observe records one beacon. Beacons from PoPs not in the table change
// nothing (another zone's PoPs may share the subject space); they are
// handed to Config.OnUnknown.
func (t *Table) Observe(b beacon.Beacon) {
	t.mu.Lock()
	var st *popState
	for _, p := range t.pops {
		if p.cfg.ID == b.PoP {
			st = p
			break
		}
	}
	if st == nil {
		t.mu.Unlock()
		if t.cfg.OnUnknown != nil {
			t.cfg.OnUnknown(b)
		}
		return
	}
	before := st.served()
	st.lastBeacon = t.cfg.Now()
	st.load, st.cap = b.Load, b.Capacity
	if b.Healthy {
		st.beaconGood++
		if st.beacon == Unknown || (st.beacon == Down && st.beaconGood >= t.cfg.Rise) {
			st.beacon, st.beaconWhy = Up, "beacons healthy"
		}
	} else {
		st.beaconGood = 0
		st.beacon, st.beaconWhy = Down, "PoP reports itself unhealthy"
	}
	s := t.publishLocked()
	l := st.forLog()
	t.mu.Unlock()
	t.logChange(b.PoP, before, l)
	t.notify(s)
}

// stateLog is what a log line says about a PoP, copied under the lock so
// that logging happens outside it without racing the next beacon.
type stateLog struct {
	served                             bool
	beacon, beaconWhy, probe, probeWhy string
}

func (st *popState) forLog() stateLog {
	return stateLog{served: st.served(), beacon: st.beacon.String(), beaconWhy: st.beaconWhy, probe: st.probe.String(), probeWhy: st.probeWhy}
}

func (st *popState) served() bool { return st.beacon != Down && st.probe != Down }

func (t *Table) logChange(id string, before bool, l stateLog) {
	if before == l.served {
		return
	}
	if l.served {
		t.cfg.Logger.Info("dns: PoP back in service", "pop", id, "beacon", l.beacon, "probe", l.probe)
	} else {
		t.cfg.Logger.Warn("dns: PoP out of service", "pop", id, "beacon", l.beacon, "beacon_reason", l.beaconWhy, "probe", l.probe, "probe_reason", l.probeWhy)
	}
}

func (t *Table) notify(s *Snapshot) {
	if t.cfg.OnChange != nil {
		t.cfg.OnChange(s)
	}
}

// publishLocked builds and stores a new snapshot; t.mu must be held.
func (t *Table) publishLocked() *Snapshot {
	s := &Snapshot{PoPs: make([]State, len(t.pops)), Stale: t.stale}
	for i, p := range t.pops {
		c := p.cap
		if p.cfg.Capacity > 0 {
			c = p.cfg.Capacity
		}
		why := p.beaconWhy
		if p.probeWhy != "" {
			if why != "" {
				why += "; "
			}
			why += p.probeWhy
		}
		if why == "" {
			why = "no evidence yet (cold start)"
		}
		var last time.Time
		if p.beacon != Unknown || p.beaconGood > 0 {
			last = p.lastBeacon
		}
		s.PoPs[i] = State{
			ID: p.cfg.ID, Served: p.served(), Beacon: p.beacon, Probe: p.probe,
			Load: p.load, Capacity: c, Keep: Keep(p.load, c, p.cfg.Threshold),
			LastBeacon: last, Reason: why,
		}
	}
	t.snap.Store(s)
	return s
}

// Keep returns the share of its clients a PoP keeps at the given load:
// 1 below threshold×capacity, then falling linearly to 0 at capacity.
// Capacity <= 0 means unlimited; a threshold outside (0,1] is taken as 1.
func Keep(load, capacity, threshold float64) float64 {
	if capacity <= 0 {
		return 1
	}
	if threshold <= 0 || threshold > 1 {
		threshold = 1
	}
	start := threshold * capacity
	if load < start {
		return 1
	}
	if load >= capacity {
		return 0
	}
	return (capacity - load) / (capacity - start)
}

// Run ages beacons and runs the active probes until ctx is done.
func (t *Table) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t.probeLoop(ctx)
	}()
	tick := time.NewTicker(t.tickPeriod())
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-tick.C:
			t.tick(t.cfg.Now())
		}
	}
}

// tickPeriod is how often Run ages the table.
func (t *Table) tickPeriod() time.Duration {
	return max(t.cfg.BeaconInterval/2, time.Millisecond)
}

// tick is one firing of Run's ticker at now. A tick much later than its
// period (by more than half a beacon interval) means this process was not
// scheduled for that long (a stall: machine load, swapping, a stopped VM):
// the beacons of that time are most likely queued in the subscription,
// not missing, and ageing before they are read would take every PoP out
// at once. The time the process stood still is therefore not counted:
// every PoP's last beacon moves forward by the lateness, so each keeps
// the grace it had before the stall and its queued beacons are read
// before it runs out, while a PoP that is really gone still goes out
// (ageing advances with every tick on time, even when stalls recur).
func (t *Table) tick(now time.Time) {
	t.mu.Lock()
	last := t.lastTick
	t.lastTick = now
	late := now.Sub(last) - t.tickPeriod()
	stalled := !last.IsZero() && late > t.cfg.BeaconInterval/2 && t.watching && !t.stale
	if stalled {
		for _, p := range t.pops {
			p.lastBeacon = p.lastBeacon.Add(late)
			if p.lastBeacon.After(now) {
				p.lastBeacon = now
			}
		}
	}
	t.mu.Unlock()
	if stalled {
		t.cfg.Logger.Warn("dns: health ticker ran late (this process was stalled); the stall does not count against the PoPs' beacons", "late", late.Round(time.Millisecond))
	}
	t.age(now)
}

// age applies missed-beacon rules and the stale mode.
func (t *Table) age(now time.Time) {
	t.mu.Lock()
	if !t.watching {
		t.mu.Unlock()
		return
	}
	changed := false
	up := t.feedUp == nil || t.feedUp()
	switch {
	case !up && !t.stale:
		t.stale, changed = true, true
		t.cfg.Logger.Warn("dns: beacon feed unreachable; answering from the last health view (stale)")
	case up && t.stale:
		t.stale, changed = false, true
		// Beacons could not arrive while the feed was down: give every PoP a
		// fresh grace period rather than dropping them all at once.
		for _, p := range t.pops {
			p.lastBeacon = now
		}
		t.cfg.Logger.Info("dns: beacon feed back; health view live again")
	}
	type change struct {
		id     string
		before bool
		log    stateLog
	}
	var changes []change
	if !t.stale {
		limit := time.Duration(t.cfg.MissedBeacons) * t.cfg.BeaconInterval
		for _, p := range t.pops {
			if p.beacon != Down && now.Sub(p.lastBeacon) > limit {
				before := p.served()
				p.beacon, p.beaconGood = Down, 0
				p.beaconWhy = fmt.Sprintf("no beacon for %d intervals of %s", t.cfg.MissedBeacons, t.cfg.BeaconInterval)
				changes = append(changes, change{p.cfg.ID, before, p.forLog()})
				changed = true
			}
		}
	}
	var s *Snapshot
	if changed {
		s = t.publishLocked()
	}
	t.mu.Unlock()
	for _, c := range changes {
		t.logChange(c.id, c.before, c.log)
	}
	if s != nil {
		t.notify(s)
	}
}

func (t *Table) probeLoop(ctx context.Context) {
	tick := time.NewTicker(t.cfg.ProbeInterval)
	defer tick.Stop()
	for {
		t.probeAll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (t *Table) probeAll(ctx context.Context) {
	t.mu.Lock()
	var targets []PoP
	for _, p := range t.pops {
		if p.cfg.HealthURL != "" {
			targets = append(targets, p.cfg)
		}
	}
	t.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := t.probe(ctx, p.HealthURL)
			if ctx.Err() != nil {
				return
			}
			t.recordProbe(p.ID, p.HealthURL, err)
		}()
	}
	wg.Wait()
}

func (t *Table) probe(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, t.cfg.ProbeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := t.cfg.Client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("status %s", resp.Status)
	}
	return nil
}

func (t *Table) recordProbe(id, url string, err error) {
	t.mu.Lock()
	var st *popState
	for _, p := range t.pops {
		if p.cfg.ID == id && p.cfg.HealthURL == url {
			st = p
		}
	}
	if st == nil {
		t.mu.Unlock()
		return
	}
	before := st.served()
	prev := st.probe
	if err == nil {
		st.probeGood++
		st.probeBad = 0
		if st.probe == Unknown || (st.probe == Down && st.probeGood >= t.cfg.Rise) {
			st.probe, st.probeWhy = Up, ""
		}
	} else {
		st.probeBad++
		st.probeGood = 0
		if st.probe != Down && st.probeBad >= t.cfg.Fall {
			st.probe = Down
		}
		if st.probe == Down {
			st.probeWhy = fmt.Sprintf("probe %s failed: %v", url, err)
		}
	}
	var s *Snapshot
	if prev != st.probe {
		s = t.publishLocked()
	}
	l := st.forLog()
	t.mu.Unlock()
	t.logChange(id, before, l)
	if s != nil {
		t.notify(s)
	}
}
