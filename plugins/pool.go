package plugins

import (
	"context"
	"fmt"
	"sync"
)

// pool keeps warm instances of one program. Instances are made on demand up
// to max live, reused while healthy and discarded after any failed call.
type pool struct {
	prog    Program
	maxIdle int
	slots   chan struct{} // one token per live instance allowed

	mu     sync.Mutex
	idle   []Instance
	live   int
	closed bool
}

func newPool(prog Program, maxLive, maxIdle int) *pool {
	return &pool{prog: prog, maxIdle: maxIdle, slots: make(chan struct{}, maxLive)}
}

// get returns an idle instance or makes one. It waits for a free slot until
// ctx ends when max live instances are busy.
func (p *pool) get(ctx context.Context) (Instance, error) {
	select {
	case p.slots <- struct{}{}:
	default:
		select {
		case p.slots <- struct{}{}:
		case <-ctx.Done():
			return nil, &CallError{Kind: KindBusy, Err: fmt.Errorf("all %d instances busy: %w", cap(p.slots), ctx.Err())}
		}
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.slots
		return nil, &CallError{Kind: KindInstance, Err: fmt.Errorf("plugin version was retired")}
	}
	if n := len(p.idle); n > 0 {
		in := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return in, nil
	}
	p.live++
	p.mu.Unlock()
	in, err := p.prog.Instantiate(ctx)
	if err != nil {
		p.mu.Lock()
		p.live--
		p.mu.Unlock()
		<-p.slots
		return nil, err
	}
	return in, nil
}

// put returns an instance. A broken one (after any failed call) is closed,
// never reused: its memory or globals may be in any state.
func (p *pool) put(in Instance, broken bool) {
	p.mu.Lock()
	if broken || p.closed || len(p.idle) >= p.maxIdle {
		p.live--
		p.mu.Unlock()
		_ = in.Close(context.Background())
		<-p.slots
		return
	}
	p.idle = append(p.idle, in)
	p.mu.Unlock()
	<-p.slots
}

// warm makes n idle instances ahead of traffic.
func (p *pool) warm(ctx context.Context, n int) error {
	ins := make([]Instance, 0, n)
	defer func() {
		for _, in := range ins {
			p.put(in, false)
		}
	}()
	for range min(n, p.maxIdle, cap(p.slots)) {
		in, err := p.get(ctx)
		if err != nil {
			return err
		}
		ins = append(ins, in)
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
	for _, in := range idle {
		_ = in.Close(context.Background())
	}
}
