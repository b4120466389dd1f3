package plugins

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/meridian-edge/meridian/plugins/abi"
)

// Chain is a site's ordered list of plugins.
type Chain struct {
	Site string
	// FailClosed answers 503 when a plugin fails; otherwise (fail open) the
	// failed plugin is skipped and the request goes on.
	FailClosed bool
	Entries    []Entry
}

// Entry is one plugin in a chain with its own config.
type Entry struct {
	// Plugin is the plugin's name within the site (as uploaded).
	Plugin string
	// Config is what the plugin reads with config_get. Do not change the
	// map once the chain serves requests (requests read it concurrently):
	// give the entry a new map. Instances are matched to their config by
	// the map's identity first, and by content when it is another map.
	Config map[string]string
	// RequestHeaders are the request headers passed to on_request
	// (case-insensitive; "*" passes all). Every byte crosses the wasm
	// boundary on every request: ask only for what the plugin reads.
	RequestHeaders []string
	// ResponseHeaders are the response headers passed to on_response.
	ResponseHeaders []string
	// Unavailable, when set, says why this PoP cannot run the plugin now
	// (for example: its bytes could not be fetched yet). Every call of the
	// entry then fails at once with KindUnavailable and this text, without
	// running anything or adding a plugin log line per request, and the
	// chain's policy applies: a fail-closed chain answers 503 instead of
	// serving the request without the plugin. rollout sets it for a plugin
	// a fail-closed site ran before this PoP started, until it is active.
	Unavailable string
}

// Exchange runs a chain for one request: on_request per entry in order, then
// on_response in reverse order on the same instances. Not safe for
// concurrent use. Close must be called exactly once, when the response is
// done; the Exchange is then recycled and must not be used any more.
type Exchange struct {
	h     *Host
	chain *Chain
	geo   GeoInfo
	held  []held
	buf   []byte
	env   CallEnv
	// begun is the mono reading at Begin (Time); last is the start of the
	// next on_request call's time: Begin's reading, then each call's end
	// (so a request reads the clock once per call, plus once per
	// on_response start).
	begun, last time.Duration
	// fakeAt is Options.Now at Begin, when the Host has an injected clock.
	fakeAt time.Time
	// Room for a short chain and a typical request description, so Begin
	// allocates once.
	heldArr [2]held
	bufArr  [384]byte
	// slots remembers the slots of the first entries the last time this
	// (recycled) Exchange resolved them, while the plugin table is the same.
	slots [4]slotMemo
	// shard picks the breakers' success counter this Exchange adds to:
	// random once per Exchange, and Exchanges are recycled mostly on the
	// same P, so concurrent requests mostly count on different lines.
	shard uint8
}

type held struct {
	v  *live
	s  *slot
	in pooled
}

// slotMemo is one resolved (site, plugin) of a plugin table.
type slotMemo struct {
	table      *map[pluginKey]*slot
	site, name string
	s          *slot
}

// slot returns entry i's slot: from the memo when the plugin table has not
// changed since (two string compares, usually of the same strings), from
// the table otherwise.
func (x *Exchange) slot(i int, e *Entry) (*slot, error) {
	if i >= len(x.slots) {
		return x.h.slot(x.chain.Site, e.Plugin, false)
	}
	m := &x.slots[i]
	t := x.h.plugins.Load()
	if m.table == t && m.s != nil && m.site == x.chain.Site && m.name == e.Plugin && !x.h.closed.Load() {
		return m.s, nil
	}
	s, err := x.h.slot(x.chain.Site, e.Plugin, false)
	if err != nil {
		*m = slotMemo{}
		return nil, err
	}
	*m = slotMemo{table: t, site: x.chain.Site, name: e.Plugin, s: s}
	return s, nil
}

// Begin starts running chain for one request whose client is at geo.
func (h *Host) Begin(chain *Chain, geo GeoInfo) *Exchange {
	return h.BeginAt(chain, geo, time.Time{})
}

// BeginAt is Begin for a request that began at start, a time.Now reading
// the caller already took (the zero time reads the clock): the request's
// time and its first call's timing count from it.
func (h *Host) BeginAt(chain *Chain, geo GeoInfo, start time.Time) *Exchange {
	x, _ := h.exchanges.Get().(*Exchange)
	if x == nil {
		x = &Exchange{shard: uint8(rand.Uint32())}
		x.buf = x.bufArr[:0]
	}
	x.h, x.chain, x.geo = h, chain, geo
	if start.IsZero() {
		x.begun = h.mono()
	} else {
		x.begun = start.Sub(h.epoch)
	}
	x.last = x.begun
	if h.fakeNow {
		x.fakeAt = h.opts.Now()
	}
	if n := len(chain.Entries); n <= len(x.heldArr) {
		x.held = x.heldArr[:n]
	} else {
		x.held = make([]held, n)
	}
	return x
}

// Time is the wall-clock time the exchange began: the request time to give
// plugins (Options.Now when the Host has one). It costs no clock read.
func (x *Exchange) Time() time.Time {
	if x.h.fakeNow {
		return x.fakeAt
	}
	return x.h.wallAt(x.begun)
}

// Len is the number of entries in the chain.
func (x *Exchange) Len() int { return len(x.chain.Entries) }

// Request runs entry i's on_request with req and decodes its actions into
// out. A non-nil error is a *CallError; the caller applies the chain's
// failure policy. After success the instance stays pinned for Response.
func (x *Exchange) Request(ctx context.Context, i int, req *abi.Request, out *abi.Actions) error {
	e := &x.chain.Entries[i]
	if e.Unavailable != "" {
		return &CallError{Kind: KindUnavailable, Err: errors.New(e.Unavailable)}
	}
	s, err := x.slot(i, e)
	if err != nil {
		return x.fail(nil, e, &CallError{Kind: KindInstance, Err: err})
	}
	v := s.acquire()
	if v == nil {
		return x.fail(nil, e, &CallError{Kind: KindInstance, Err: fmt.Errorf("site %s plugin %q has no active version", x.chain.Site, e.Plugin)})
	}
	if !s.breaker.allow() {
		v.m.errors.WithLabelValues(string(KindBreakerOpen)).Inc()
		v.releaseRef()
		return &CallError{Kind: KindBreakerOpen, Err: fmt.Errorf("plugin %q is failing too often: its circuit breaker is open and the call was skipped (the site's plugin logs say why)", e.Plugin)}
	}
	x.buf, err = abi.AppendRequest(x.buf[:0], req)
	if err != nil {
		err = x.fail(v, e, &CallError{Kind: KindInput, Err: err})
		v.releaseRef()
		return err
	}
	in, err := x.call(ctx, s, v, e, "on_request", abi.PhaseRequest, out)
	if err != nil {
		v.releaseRef()
		return err
	}
	if v.info.OnResponse {
		x.held[i] = held{v: v, s: s, in: in}
		return nil
	}
	x.put(v, in, false)
	v.releaseRef()
	return nil
}

// Response runs entry i's on_response, if the plugin has one and its
// on_request succeeded, on the same instance. ran is false when skipped.
func (x *Exchange) Response(ctx context.Context, i int, resp *abi.Response, out *abi.Actions) (ran bool, err error) {
	hd := x.held[i]
	if hd.in.in == nil {
		return false, nil
	}
	x.held[i] = held{}
	e := &x.chain.Entries[i]
	s := hd.s
	defer hd.v.releaseRef()
	if s.removed.Load() || x.h.closed.Load() {
		// The plugin was removed (or the host closed) since on_request.
		x.put(hd.v, hd.in, false)
		return false, nil
	}
	x.buf, err = abi.AppendResponse(x.buf[:0], resp)
	if err != nil {
		x.put(hd.v, hd.in, false)
		return true, x.fail(hd.v, e, &CallError{Kind: KindInput, Err: err})
	}
	// callOn discards the instance on failure.
	if _, err := x.callOn(ctx, s, hd.v, hd.in, e, "on_response", abi.PhaseResponse, out); err != nil {
		return true, err
	}
	x.put(hd.v, hd.in, false)
	return true, nil
}

// ResponsePending reports whether an entry's on_request succeeded on a
// plugin that exports on_response: Response has something to run.
func (x *Exchange) ResponsePending() bool {
	for i := range x.held {
		if x.held[i].in.in != nil {
			return true
		}
	}
	return false
}

// Close returns pinned instances and recycles x. Call it once, when the
// response is written.
func (x *Exchange) Close() {
	h := x.h
	if h == nil {
		return // closed before: a second Close must not recycle x twice
	}
	for i, hd := range x.held {
		if hd.in.in != nil {
			x.put(hd.v, hd.in, false)
			hd.v.releaseRef()
			x.held[i] = held{}
		}
	}
	// Keep the buffer unless one large request grew it: recycled
	// Exchanges should not pin big buffers.
	if cap(x.buf) > 4*len(x.bufArr) {
		x.buf = x.bufArr[:0]
	}
	x.h, x.chain, x.held = nil, nil, nil
	x.env.Config, x.env.KV, x.env.Log = nil, nil, nil
	h.exchanges.Put(x)
}

func (x *Exchange) call(ctx context.Context, s *slot, v *live, e *Entry, fn string, phase abi.Phase, out *abi.Actions) (pooled, error) {
	in, err := v.pool.get(ctx, e.Config)
	if err != nil {
		tr := s.breaker.record(false, x.shard)
		err = x.fail(v, e, err)
		x.noteBreaker(v, e, tr)
		return pooled{}, err
	}
	return x.callOn(ctx, s, v, in, e, fn, phase, out)
}

// callOn calls fn on in. On failure the instance is discarded.
func (x *Exchange) callOn(ctx context.Context, s *slot, v *live, in pooled, e *Entry, fn string, phase abi.Phase, out *abi.Actions) (pooled, error) {
	// The instance's own copy of the config: the one it is bound to.
	// Field by field: a whole-struct assignment is a bulk copy with write
	// barriers while the GC runs.
	env := &x.env
	env.Site, env.Config, env.KV, env.Geo, env.Log = x.chain.Site, in.cfg, x.h.opts.KV, x.geo, v.log
	// The time of an on_request call counts from the end of the previous
	// one (or Begin, or BeginAt's start: on the fast path, when the
	// request's head was read): it includes taking the instance and
	// encoding the input, and saves a clock read. on_response starts after
	// the cache.
	start := x.last
	if phase != abi.PhaseRequest || in.slow {
		start = x.h.mono()
	}
	in.slow = false
	res, err := in.in.Call(ctx, fn, x.buf, &x.env)
	if err == nil {
		memo := &in.memo[0]
		if phase != abi.PhaseRequest {
			memo = &in.memo[1]
		}
		if derr := abi.DecodeActionsMemo(phase, res, memo, out); derr != nil {
			err = &CallError{Kind: KindBadOutput, Err: derr}
		}
	}
	end := x.h.mono()
	x.last = end
	d := (end - start).Seconds()
	if phase == abi.PhaseRequest {
		v.m.secondsReq.Observe(d)
	} else {
		v.m.secondsResp.Observe(d)
	}
	// The healthy case stays inline: one load and one add.
	if err == nil && s.breaker.success(x.shard) {
		return in, nil
	}
	tr := s.breaker.recordSlow(err == nil, x.shard)
	if err != nil {
		x.put(v, in, true)
		err = x.fail(v, e, err)
		x.noteBreaker(v, e, tr)
		return pooled{}, err
	}
	x.noteBreaker(v, e, tr)
	return in, nil
}

func (x *Exchange) put(v *live, in pooled, broken bool) {
	v.pool.put(in, broken)
}

// fail counts err and keeps a line for the site owner. v may be nil.
func (x *Exchange) fail(v *live, e *Entry, err error) error {
	var ce *CallError
	if !errors.As(err, &ce) {
		ce = &CallError{Kind: KindTrap, Err: err}
	}
	ver := 0
	if v != nil {
		ver = v.info.Version
		v.m.errors.WithLabelValues(string(ce.Kind)).Inc()
	}
	now := x.h.opts.Now()
	if ce.Output != "" {
		// What the plugin printed (a Go panic's goroutine trace), before
		// the failure's own line, which names only its most telling line.
		x.h.logs.add(LogLine{Time: now, Site: x.chain.Site, Plugin: e.Plugin, Version: ver, Level: slog.LevelError,
			Msg: "host: the plugin's output before it failed (last 2 KiB):\n" + ce.Output})
	}
	x.h.logs.add(LogLine{Time: now, Site: x.chain.Site, Plugin: e.Plugin, Version: ver, Level: slog.LevelError,
		Msg: "host: " + ce.Error()})
	x.h.opts.Logger.Debug("plugin call failed", append(x.h.logNames(x.chain.Site, e.Plugin, ver), "kind", ce.Kind, "err", ce.Err)...)
	return ce
}

// noteBreaker tells the site owner (and ops) that the plugin's breaker
// opened or closed: without it, the skipped or 503 requests that follow
// would look unexplained in the site's plugin logs.
func (x *Exchange) noteBreaker(v *live, e *Entry, tr transition) {
	var (
		lv  slog.Level
		msg string
	)
	policy := "skipped (fail open)"
	if x.chain.FailClosed {
		policy = "answered 503 (fail closed)"
	}
	switch tr.ev {
	case breakerOpened:
		lv = slog.LevelWarn
		msg = fmt.Sprintf("host: circuit breaker opened: %s; requests are %s without running the plugin for %v, then one trial call decides",
			tr.why(), policy, tr.cooldown)
	case breakerReopened:
		lv = slog.LevelWarn
		msg = fmt.Sprintf("host: circuit breaker stays open: the trial call failed; requests are %s without running the plugin for another %v",
			policy, tr.cooldown)
	case breakerRecovered:
		lv = slog.LevelInfo
		msg = "host: circuit breaker closed: the trial call succeeded; the plugin runs on every request again"
	default:
		return
	}
	ver := 0
	if v != nil {
		ver = v.info.Version
	}
	x.h.logs.add(LogLine{Time: x.h.opts.Now(), Site: x.chain.Site, Plugin: e.Plugin, Version: ver, Level: lv, Msg: msg})
	// "detail", not "msg": a second msg key would make the JSON line hold
	// the key twice.
	x.h.opts.Logger.Log(context.Background(), lv, "plugin circuit breaker", append(x.h.logNames(x.chain.Site, e.Plugin, ver), "detail", msg)...)
}
