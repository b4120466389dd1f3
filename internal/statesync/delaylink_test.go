package statesync

import (
	"net"
	"sync"
	"testing"
	"time"
)

// delayLink is a TCP proxy on loopback whose every byte reaches the other
// side exactly delay after the proxy read it, in each direction: the
// one-way delay of a long link, for the planet benchmark (tc netem is not
// available here).
//
// It exists beside testutil.LinkProxy because that proxy sleeps with Go
// timers, which wake up to a millisecond late (the runtime's netpoller waits
// in whole milliseconds), once per hop: on a 9 ms London-Frankfurt-Stockholm
// path that alone is 1.2x the floor. Here the last two milliseconds of each
// wait are a nanosleep (tens of microseconds late), and every chunk that is
// due by then goes out in one write. Sockets keep Go's TCP_NODELAY, so
// Nagle's algorithm adds nothing either.
type delayLink struct {
	l      net.Listener
	target string
	delay  time.Duration
	mu     sync.Mutex
	conns  []net.Conn
	wg     sync.WaitGroup
}

func startDelayLink(tb testing.TB, target string, delay time.Duration) *delayLink {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &delayLink{l: l, target: target, delay: delay}
	p.wg.Add(1)
	go p.accept()
	tb.Cleanup(p.close)
	return p
}

func (p *delayLink) addr() string { return p.l.Addr().String() }

func (p *delayLink) close() {
	p.l.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *delayLink) accept() {
	defer p.wg.Done()
	for {
		in, err := p.l.Accept()
		if err != nil {
			return
		}
		out, err := net.DialTimeout("tcp", p.target, 2*time.Second)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, in, out)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(out, in)
		go p.pipe(in, out)
	}
}

type delayedChunk struct {
	due  time.Time
	data []byte
}

// pipe copies src to dst, each chunk written delay after it was read.
func (p *delayLink) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	ch := make(chan delayedChunk, 4096)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var next *delayedChunk
		failed := false
		for {
			if next == nil {
				c, ok := <-ch
				if !ok {
					return
				}
				next = &c
			}
			sleepUntil(next.due)
			// Write everything due by now in one go.
			buf := next.data
			next = nil
		more:
			for {
				select {
				case c, ok := <-ch:
					if !ok {
						break more
					}
					if c.due.After(time.Now()) {
						next = &c
						break more
					}
					buf = append(buf, c.data...)
				default:
					break more
				}
			}
			if !failed {
				if _, err := dst.Write(buf); err != nil {
					failed = true // keep draining so the reader never blocks
				}
			}
		}
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			ch <- delayedChunk{due: time.Now().Add(p.delay), data: append([]byte(nil), buf[:n]...)}
		}
		if err != nil {
			break
		}
	}
	close(ch)
	<-done
	dst.Close()
	src.Close()
}

// sleepUntil returns at t or shortly after: a Go timer for all but the last
// two milliseconds (it may wake a millisecond late), then shortSleep: on
// Linux a nanosleep, which blocks this goroutine's thread for at most those
// two milliseconds.
func sleepUntil(t time.Time) {
	if d := time.Until(t) - 2*time.Millisecond; d > 0 {
		time.Sleep(d)
	}
	if d := time.Until(t); d > 0 {
		shortSleep(d)
	}
}
