package plugins

import (
	"context"
	"fmt"
	"maps"
	"sync"
)

// pool keeps warm instances of one program. Instances are made on demand up
// to max live, reused while healthy and discarded after any failed call.
//
// An instance serves one chain-entry config for its whole life, as an
// Extism plugin's config is fixed when the plugin is made: a plugin may read
// its config once and keep it (the Go kit does). An instance is bound to
// the config of its first call; get hands out only instances bound to the
// asked config, or unbound (warm) ones.
type pool struct {
	prog    Program
	maxIdle int
	slots   chan struct{} // one token per live instance allowed

	mu     sync.Mutex
	idle   []pooled // oldest first
	live   int
	closed bool
}

// pooled is an instance with the config it is bound to.
type pooled struct {
	in    Instance
	cfg   map[string]string // a copy, owned by the pool
	bound bool
}

// bind binds an unbound instance to cfg (copied: the caller's map may
// change later without changing what the instance serves).
func (it *pooled) bind(cfg map[string]string) {
	if !it.bound {
		it.cfg, it.bound = maps.Clone(cfg), true
	}
}

func newPool(prog Program, maxLive, maxIdle int) *pool {
	return &pool{prog: prog, maxIdle: maxIdle, slots: make(chan struct{}, maxLive)}
}

// get returns an idle instance bound to cfg (or an unbound one) or makes
// one. It waits for a free slot until ctx ends when max live instances are
// busy.
func (p *pool) get(ctx context.Context, cfg map[string]string) (pooled, error) {
	return p.take(ctx, cfg, true)
}

// take is get; with bind false it hands out an unbound instance (warm).
func (p *pool) take(ctx context.Context, cfg map[string]string, bind bool) (pooled, error) {
	select {
	case p.slots <- struct{}{}:
	default:
		select {
		case p.slots <- struct{}{}:
		case <-ctx.Done():
			return pooled{}, &CallError{Kind: KindBusy, Err: fmt.Errorf("all %d instances busy: %w", cap(p.slots), ctx.Err())}
		}
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.slots
		return pooled{}, &CallError{Kind: KindInstance, Err: fmt.Errorf("plugin version was retired")}
	}
	// Newest first: the most recently used instance is the warmest. One
	// config per plugin is the common case; then the first one matches.
	pick := -1
	for i := len(p.idle) - 1; i >= 0; i-- {
		it := &p.idle[i]
		if bind && it.bound && maps.Equal(it.cfg, cfg) {
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
		p.mu.Unlock()
		if bind {
			it.bind(cfg)
		}
		return it, nil
	}
	p.live++
	p.mu.Unlock()
	in, err := p.prog.Instantiate(ctx)
	if err != nil {
		p.mu.Lock()
		p.live--
		p.mu.Unlock()
		<-p.slots
		return pooled{}, err
	}
	it := pooled{in: in}
	if bind {
		it.bind(cfg)
	}
	return it, nil
}

// put returns an instance. A broken one (after any failed call) is closed,
// never reused: its memory or globals may be in any state. When the idle
// list is full the oldest idle instance makes room: the one just used is
// bound to a config in demand.
func (p *pool) put(it pooled, broken bool) {
	p.mu.Lock()
	if broken || p.closed {
		p.live--
		p.mu.Unlock()
		_ = it.in.Close(context.Background())
		<-p.slots
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
	<-p.slots
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
	for range min(n, p.maxIdle, cap(p.slots)) {
		it, err := p.take(ctx, nil, false)
		if err != nil {
			return err
		}
		ins = append(ins, it)
	}
	return nil
}

// stats reports live and idle instances.
func (p *pool) stats() (live, idle int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.live, len(p.idle)
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
