package plugins

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"unsafe"

	"github.com/meridian-edge/meridian/plugins/abi"
)

// pool keeps warm instances of one program. Instances are made on demand up
// to max live, reused while healthy and discarded after any failed call.
//
// An instance serves one chain-entry config for its whole life, as an
// Extism plugin's config is fixed when the plugin is made: a plugin may read
// its config once and keep it (the Go kit does). An instance is bound to
// the config of its first call; get hands out only instances bound to the
// asked config, or unbound (warm) ones.
//
// A request costs one lock on get and one on put: the bound on busy
// instances is a counter under the same lock, and only a request that finds
// every instance busy makes a channel to wait on.
type pool struct {
	prog    Program
	maxIdle int
	maxBusy int

	mu      sync.Mutex
	idle    []pooled // oldest first
	live    int
	busy    int             // instances handed out (and slots handed to waiters)
	waiters []chan struct{} // requests waiting for a busy slot, oldest first
	closed  bool
	memory  uint64 // MemoryBytes of the newest idle instance when last reported
}

// pooled is an instance with the config it is bound to.
type pooled struct {
	in    Instance
	cfg   map[string]string // a copy, owned by the pool
	src   map[string]string // the map cfg was copied from, kept for identity
	bound bool
	// slow is set by take when the request waited for a busy slot or made
	// the instance: the call's time must not count that.
	slow bool
	// memo holds the instance's last small answer per phase (request,
	// response) and its decoding: the same answer again costs a copy of
	// the decoded actions (see abi.ActionsMemo).
	memo *[2]abi.ActionsMemo
}

// bind binds an unbound instance to cfg (copied: the caller's map may
// change later without changing what the instance serves).
func (it *pooled) bind(cfg map[string]string) {
	if !it.bound {
		it.cfg, it.src, it.bound = maps.Clone(cfg), cfg, true
	}
}

// serves reports whether the instance is bound to a config equal to cfg.
// The chain's own map (Entry.Config) is compared by identity first: chains
// are read concurrently by every request, so a config changes by building
// a new map, never in place (see Entry.Config). src is kept referenced, so
// its address cannot be reused by another map.
func (it *pooled) serves(cfg map[string]string) bool {
	if mapID(it.src) == mapID(cfg) && len(it.cfg) == len(cfg) {
		return true
	}
	return maps.Equal(it.cfg, cfg)
}

// mapID is the identity of a map (maps are pointers to their header).
func mapID(m map[string]string) unsafe.Pointer { return *(*unsafe.Pointer)(unsafe.Pointer(&m)) }

func newPool(prog Program, maxLive, maxIdle int) *pool {
	return &pool{prog: prog, maxIdle: maxIdle, maxBusy: maxLive}
}

// get returns an idle instance bound to cfg (or an unbound one) or makes
// one. It waits for a free slot until ctx ends when max live instances are
// busy.
func (p *pool) get(ctx context.Context, cfg map[string]string) (pooled, error) {
	return p.take(ctx, cfg, true)
}

// take is get; with bind false it hands out an unbound instance (warm).
func (p *pool) take(ctx context.Context, cfg map[string]string, bind bool) (pooled, error) {
	p.mu.Lock()
	waited := false
	if p.busy >= p.maxBusy && !p.closed {
		if err := p.wait(ctx); err != nil { // unlocks and locks again
			p.mu.Unlock()
			return pooled{}, err
		}
		waited = true
	} else {
		p.busy++
	}
	if p.closed {
		p.releaseLocked()
		p.mu.Unlock()
		return pooled{}, &CallError{Kind: KindInstance, Err: fmt.Errorf("plugin version was retired")}
	}
	// Newest first: the most recently used instance is the warmest. One
	// config per plugin is the common case; then the first one matches.
	pick := -1
	for i := len(p.idle) - 1; i >= 0; i-- {
		it := &p.idle[i]
		if bind && it.bound && it.serves(cfg) {
			pick = i
			break
		}
		if !it.bound && pick < 0 {
			pick = i
		}
	}
	if pick >= 0 {
		it := p.idle[pick]
		p.idle = append(p.idle[:pick], p.idle[pick+1:]...)
		p.idle[len(p.idle):cap(p.idle)][0] = pooled{} // drop the moved-out copy's references
		p.mu.Unlock()
		if bind {
			it.bind(cfg)
		}
		it.slow = waited
		return it, nil
	}
	p.live++
	p.mu.Unlock()
	in, err := p.prog.Instantiate(ctx)
	if err != nil {
		p.mu.Lock()
		p.live--
		p.releaseLocked()
		p.mu.Unlock()
		return pooled{}, err
	}
	it := pooled{in: in, slow: true, memo: new([2]abi.ActionsMemo)}
	if bind {
		it.bind(cfg)
	}
	return it, nil
}

// wait waits, with p.mu held on entry and on return, until a returning
// request hands this one its slot (nil) or ctx ends (a KindBusy error).
func (p *pool) wait(ctx context.Context) error {
	ch := make(chan struct{})
	p.waiters = append(p.waiters, ch)
	p.mu.Unlock()
	select {
	case <-ch:
		p.mu.Lock()
		return nil
	case <-ctx.Done():
	}
	p.mu.Lock()
	for i, w := range p.waiters {
		if w == ch {
			p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
			return &CallError{Kind: KindBusy, Err: fmt.Errorf("all %d instances busy: %w", p.maxBusy, ctx.Err())}
		}
	}
	return nil // the slot was handed over as ctx ended: use it
}

// releaseLocked gives a busy slot to the oldest waiter, or frees it.
func (p *pool) releaseLocked() {
	if len(p.waiters) > 0 {
		ch := p.waiters[0]
		p.waiters = append(p.waiters[:0], p.waiters[1:]...)
		close(ch) // busy stays: the slot passes to the waiter
		return
	}
	p.busy--
}

// report gives the metrics: live and idle instances, and the memory of the
// most recently returned idle instance (idle instances are not in use, so
// reading them under the lock is safe).
func (p *pool) report() (live, idle, waiting int, memory uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := len(p.idle); n > 0 {
		p.memory = p.idle[n-1].in.MemoryBytes()
	}
	return p.live, len(p.idle), len(p.waiters), p.memory
}

// put returns an instance. A broken one (after any failed call) is closed, never reused: its memory or
// globals may be in any state. When the idle list is full the oldest idle
// instance makes room: the one just used is bound to a config in demand.
func (p *pool) put(it pooled, broken bool) {
	p.mu.Lock()
	p.releaseLocked()
	if broken || p.closed {
		p.live--
		p.mu.Unlock()
		_ = it.in.Close(context.Background())
		return
	}
	var evict Instance
	if len(p.idle) >= p.maxIdle {
		evict = p.idle[0].in
		p.idle = append(p.idle[:0], p.idle[1:]...)
		p.live--
	}
	p.idle = append(p.idle, it)
	p.mu.Unlock()
	if evict != nil {
		_ = evict.Close(context.Background())
	}
}

// warm makes n idle instances ahead of traffic. They stay unbound: the
// first request binds each to its config.
func (p *pool) warm(ctx context.Context, n int) error {
	ins := make([]pooled, 0, n)
	defer func() {
		for _, it := range ins {
			p.put(it, false)
		}
	}()
	for range min(n, p.maxIdle, p.maxBusy) {
		it, err := p.take(ctx, nil, false)
		if err != nil {
			return err
		}
		ins = append(ins, it)
	}
	return nil
}

// close closes the idle instances and refuses new ones. Busy instances are
// closed when returned.
func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	idle := p.idle
	p.idle = nil
	p.live -= len(idle)
	p.mu.Unlock()
	for _, it := range idle {
		_ = it.in.Close(context.Background())
	}
}
