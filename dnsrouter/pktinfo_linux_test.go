package dnsrouter

import (
	"context"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// loopbackOnly binds a socket to the loopback interface (SO_BINDTODEVICE,
// open to unprivileged processes since Linux 5.7), so that a test can
// listen on the wildcard address and still take traffic from loopback
// only.
func loopbackOnly(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptString(int(fd), syscall.SOL_SOCKET, syscall.SO_BINDTODEVICE, "lo")
	})
	if err != nil {
		return err
	}
	return serr
}

// A server listening on the wildcard address (0.0.0.0:53, as on a node
// with an anycast address beside its own) must answer each UDP query from
// the address it was sent to: a resolver drops an answer from another
// address. Every 127.0.0.0/8 address is the host's, like an anycast
// address on lo, and the kernel would pick 127.0.0.1 as the source.
func TestWildcardListenerAnswersFromTheAddressAsked(t *testing.T) {
	s, err := New(DevOptions())
	if err != nil {
		t.Fatal(err)
	}
	s.control = loopbackOnly
	if err := s.Start(context.Background(), "0.0.0.0:0"); err != nil {
		t.Fatalf("Start on 0.0.0.0:0 bound to lo: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	_, port, _ := net.SplitHostPort(s.Addr())
	for _, host := range []string{"127.0.0.2", "127.0.0.53", "127.0.0.1", "::1"} {
		for _, netw := range []string{"udp", "tcp"} {
			addr := net.JoinHostPort(host, port)
			// A connected UDP socket, as resolvers use: the kernel drops
			// datagrams from any other address.
			c := &dns.Client{Net: netw, Timeout: time.Second}
			for i := range 3 { // each worker's cached source, not only the first
				r, _, err := c.Exchange(query("www.example.test.", dns.TypeA, "203.0.113.0/24"), addr)
				if err != nil {
					t.Fatalf("%s query %d to %s: %v (an answer from another address is dropped)", netw, i, addr, err)
				}
				if got := addrs(r); len(got) != 1 || got[0] != "127.0.0.13" {
					t.Errorf("%s via %s: %v, want Tokyo's 127.0.0.13", netw, addr, got)
				}
			}
		}
	}
	// The raw way, for the record: the answer's source is the address asked.
	for _, host := range []string{"127.0.0.2", "127.0.0.77"} {
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		pkt, _ := query("www.example.test.", dns.TypeA, "").Pack()
		p, _ := strconv.Atoi(port)
		to := &net.UDPAddr{IP: net.ParseIP(host), Port: p}
		if _, err := pc.WriteTo(pkt, to); err != nil {
			t.Fatal(err)
		}
		pc.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 512)
		_, from, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("no answer to a query sent to %s: %v", to, err)
		}
		if from.(*net.UDPAddr).IP.String() != host {
			t.Errorf("query sent to %s answered from %s", to, from)
		}
	}
}

// The same on an IPv4-only wildcard socket (a host without IPv6, where Go
// binds 0.0.0.0 as AF_INET): the IPv4 branch of askDestination.
func TestIPv4WildcardSocketAnswersFromTheAddressAsked(t *testing.T) {
	s, err := New(DevOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	lc := net.ListenConfig{Control: loopbackOnly}
	pc, err := lc.ListenPacket(context.Background(), "udp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	conn := pc.(*net.UDPConn)
	ok, err := askDestination(conn)
	if !ok || err != nil {
		t.Fatalf("askDestination on %s: %v, %v", conn.LocalAddr(), ok, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.serveUDP(conn, true)
	}()
	defer func() {
		conn.Close()
		<-done
	}()
	_, port, _ := net.SplitHostPort(conn.LocalAddr().String())
	for _, host := range []string{"127.0.0.2", "127.0.0.9", "127.0.0.1"} {
		c := &dns.Client{Net: "udp", Timeout: time.Second}
		r, _, err := c.Exchange(query("www.example.test.", dns.TypeA, ""), net.JoinHostPort(host, port))
		if err != nil {
			t.Fatalf("query to %s: %v (an answer from another address is dropped)", host, err)
		}
		if len(r.Answer) != 1 {
			t.Errorf("via %s: %v", host, r.Answer)
		}
	}
}
