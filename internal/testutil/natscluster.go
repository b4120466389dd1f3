package testutil

import (
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// NATSCluster is a 3-node NATS cluster with JetStream, started in-process on
// loopback for cluster and partition tests. Every route between two servers
// runs through a TCP proxy of the test's own, so a test can cut a server off
// from the others (Partition) and heal it (Heal) while clients stay
// connected to their own server.
type NATSCluster struct {
	Servers []*server.Server
	proxies map[[2]int]*LinkProxy
}

// StartNATSCluster starts the cluster and waits until JetStream has a meta
// leader. Everything is shut down at the end of the test.
//
// Each server's cluster Advertise address points at a closed port, and
// clients are not told about the other servers (NoAdvertise): otherwise
// servers would gossip their real route addresses and dial around the
// proxies, and clients would reconnect around a cut.
func StartNATSCluster(t testing.TB) *NATSCluster {
	t.Helper()
	const size = 3
	free := FreePorts(t, size+1)
	ports := free[:size]
	c := &NATSCluster{proxies: map[[2]int]*LinkProxy{}}
	// One proxy per direction of each pair: every server needs configured
	// routes (JetStream refuses to start a clustered server without), and
	// the servers keep one of the two connections.
	for i := range size {
		for j := range size {
			if i != j {
				c.proxies[[2]int{i, j}] = StartLinkProxy(t, fmt.Sprintf("127.0.0.1:%d", ports[j]))
			}
		}
	}
	dead := fmt.Sprintf("127.0.0.1:%d", free[size])
	for i := range size {
		var routes []*url.URL
		for j := range size {
			if j == i {
				continue
			}
			routes = append(routes, &url.URL{Scheme: "nats", Host: c.proxies[[2]int{i, j}].Addr()})
		}
		opts := &server.Options{
			ServerName: fmt.Sprintf("n%d", i),
			Host:       "127.0.0.1",
			Port:       server.RANDOM_PORT,
			NoLog:      true,
			NoSigs:     true,
			JetStream:  true,
			StoreDir:   t.TempDir(),
			Cluster: server.ClusterOpts{
				Name:        "meridian-test",
				Host:        "127.0.0.1",
				Port:        ports[i],
				Advertise:   dead,
				NoAdvertise: true,
				PoolSize:    -1, // one route connection per pair: simpler to cut
			},
			Routes: routes,
		}
		s, err := server.NewServer(opts)
		if err != nil {
			t.Fatalf("nats cluster: server %d: %v", i, err)
		}
		go s.Start()
		c.Servers = append(c.Servers, s)
		t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	}
	for i, s := range c.Servers {
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatalf("nats cluster: server %d not ready", i)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		ready := true
		for _, s := range c.Servers {
			if s.NumRoutes() < size-1 || !s.JetStreamIsClustered() || s.JetStreamIsCurrent() == false {
				ready = false
			}
		}
		if ready {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("nats cluster: routes or JetStream meta leader not ready after 20s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return c
}

// ClientURL is the URL of server i's client port.
func (c *NATSCluster) ClientURL(i int) string { return c.Servers[i].ClientURL() }

// Partition cuts server i off from the other servers.
func (c *NATSCluster) Partition(i int) {
	for k, p := range c.proxies {
		if k[0] == i || k[1] == i {
			p.Cut()
		}
	}
}

// Heal restores every cut link.
func (c *NATSCluster) Heal() {
	for _, p := range c.proxies {
		p.Heal()
	}
}

// LinkProxy forwards TCP connections on loopback to a target, can cut them
// (partition tests) and can delay them (links as long as the planet's): tc
// netem is not available on these machines, so this runs in user space.
type LinkProxy struct {
	l      net.Listener
	target string

	mu    sync.Mutex
	cut   bool
	delay time.Duration
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// StartLinkProxy starts a proxy to target on a free loopback port; it is
// closed at the end of the test.
func StartLinkProxy(t testing.TB, target string) *LinkProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &LinkProxy{l: l, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// Addr is the proxy's listen address.
func (p *LinkProxy) Addr() string { return p.l.Addr().String() }

// Cut closes every proxied connection and refuses new ones until Heal.
func (p *LinkProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for c := range p.conns {
		c.Close()
	}
}

// SetDelay makes every byte take d longer to cross the proxy, in each
// direction (a one-way delay), for connections opened afterwards.
func (p *LinkProxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// Heal lets connections through again.
func (p *LinkProxy) Heal() {
	p.mu.Lock()
	p.cut = false
	p.mu.Unlock()
}

// Close stops the proxy and waits for its goroutines.
func (p *LinkProxy) Close() {
	p.l.Close()
	p.Cut()
	p.wg.Wait()
}

func (p *LinkProxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			in.Close()
			continue
		}
		out, err := net.DialTimeout("tcp", p.target, 2*time.Second)
		if err != nil {
			p.mu.Unlock()
			in.Close()
			continue
		}
		p.conns[in], p.conns[out] = struct{}{}, struct{}{}
		p.wg.Add(2)
		delay := p.delay
		p.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			defer p.wg.Done()
			if delay > 0 {
				copyDelayed(dst, src, delay)
			} else {
				_, _ = io.Copy(dst, src)
			}
			dst.Close()
			src.Close()
			p.mu.Lock()
			delete(p.conns, dst)
			delete(p.conns, src)
			p.mu.Unlock()
		}
		go pipe(out, in)
		go pipe(in, out)
	}
}

// copyDelayed copies src to dst, each chunk written delay after it was read,
// in order.
func copyDelayed(dst io.Writer, src io.Reader, delay time.Duration) {
	type chunk struct {
		at   time.Time
		data []byte
	}
	ch := make(chan chunk, 4096)
	done := make(chan struct{})
	go func() {
		defer close(done)
		failed := false
		for c := range ch {
			if failed {
				continue // drain so the reader never blocks forever
			}
			time.Sleep(time.Until(c.at))
			if _, err := dst.Write(c.data); err != nil {
				failed = true
			}
		}
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			ch <- chunk{at: time.Now().Add(delay), data: append([]byte(nil), buf[:n]...)}
		}
		if err != nil {
			break
		}
	}
	close(ch)
	<-done
}
