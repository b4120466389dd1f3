package plugins

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	// Config is what the plugin reads with config_get.
	Config map[string]string
	// RequestHeaders are the request headers passed to on_request
	// (case-insensitive; "*" passes all). Every byte crosses the wasm
	// boundary on every request: ask only for what the plugin reads.
	RequestHeaders []string
	// ResponseHeaders are the response headers passed to on_response.
	ResponseHeaders []string
}

// Exchange runs a chain for one request: on_request per entry in order, then
// on_response in reverse order on the same instances. Not safe for
// concurrent use. Close must be called once the response is done.
type Exchange struct {
	h     *Host
	chain *Chain
	geo   GeoInfo
	held  []held
	buf   []byte
	env   CallEnv
	// Room for a short chain and a typical request description, so Begin
	// allocates once.
	heldArr [2]held
	bufArr  [384]byte
}

type held struct {
	v  *live
	in pooled
}

// Begin starts running chain for one request whose client is at geo.
func (h *Host) Begin(chain *Chain, geo GeoInfo) *Exchange {
	x := &Exchange{h: h, chain: chain, geo: geo}
	if n := len(chain.Entries); n <= len(x.heldArr) {
		x.held = x.heldArr[:n]
	} else {
		x.held = make([]held, n)
	}
	x.buf = x.bufArr[:0]
	return x
}

// Len is the number of entries in the chain.
func (x *Exchange) Len() int { return len(x.chain.Entries) }

// Request runs entry i's on_request with req and decodes its actions into
// out. A non-nil error is a *CallError; the caller applies the chain's
// failure policy. After success the instance stays pinned for Response.
func (x *Exchange) Request(ctx context.Context, i int, req *abi.Request, out *abi.Actions) error {
	e := &x.chain.Entries[i]
	s, err := x.h.slot(x.chain.Site, e.Plugin, false)
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
		return &CallError{Kind: KindBreakerOpen, Err: fmt.Errorf("plugin %q failed %d times in a row; skipped for %v", e.Plugin, x.h.opts.BreakerThreshold, x.h.opts.BreakerCooldown)}
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
		x.held[i] = held{v: v, in: in}
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
	s, serr := x.h.slot(x.chain.Site, e.Plugin, false)
	defer hd.v.releaseRef()
	if serr != nil {
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

// Close returns pinned instances. Call it once the response is written.
func (x *Exchange) Close() {
	for i, hd := range x.held {
		if hd.in.in != nil {
			x.put(hd.v, hd.in, false)
			hd.v.releaseRef()
			x.held[i] = held{}
		}
	}
}

func (x *Exchange) call(ctx context.Context, s *slot, v *live, e *Entry, fn string, phase abi.Phase, out *abi.Actions) (pooled, error) {
	in, err := v.pool.get(ctx, e.Config)
	if err != nil {
		s.breaker.record(false)
		return pooled{}, x.fail(v, e, err)
	}
	return x.callOn(ctx, s, v, in, e, fn, phase, out)
}

// callOn calls fn on in. On failure the instance is discarded.
func (x *Exchange) callOn(ctx context.Context, s *slot, v *live, in pooled, e *Entry, fn string, phase abi.Phase, out *abi.Actions) (pooled, error) {
	// The instance's own copy of the config: the one it is bound to.
	x.env = CallEnv{Site: x.chain.Site, Config: in.cfg, KV: x.h.opts.KV, Geo: x.geo, Log: v.log}
	start := time.Now()
	res, err := in.in.Call(ctx, fn, x.buf, &x.env)
	if err == nil {
		if derr := abi.DecodeActions(phase, res, out); derr != nil {
			err = &CallError{Kind: KindBadOutput, Err: derr}
		}
	}
	d := time.Since(start).Seconds()
	if phase == abi.PhaseRequest {
		v.m.callsReq.Inc()
		v.m.secondsReq.Observe(d)
	} else {
		v.m.callsResp.Inc()
		v.m.secondsResp.Observe(d)
	}
	s.breaker.record(err == nil)
	if err != nil {
		x.put(v, in, true)
		return pooled{}, x.fail(v, e, err)
	}
	return in, nil
}

func (x *Exchange) put(v *live, in pooled, broken bool) {
	if !broken {
		v.m.memory.Set(float64(in.in.MemoryBytes()))
	}
	v.pool.put(in, broken)
	live, idle := v.pool.stats()
	v.m.live.Set(float64(live))
	v.m.idle.Set(float64(idle))
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
	x.h.logs.add(LogLine{Time: x.h.opts.Now(), Site: x.chain.Site, Plugin: e.Plugin, Version: ver, Level: slog.LevelError,
		Msg: "host: " + ce.Error()})
	x.h.opts.Logger.Debug("plugin call failed", "site", x.chain.Site, "plugin", e.Plugin, "version", ver, "kind", ce.Kind, "err", ce.Err)
	return ce
}
