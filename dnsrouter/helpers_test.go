package dnsrouter

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// start runs a server for opts on a free loopback port; it is closed at
// the end of the test.
func start(t testing.TB, opts Options) (*Server, string) {
	t.Helper()
	s, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := s.Start(context.Background(), "127.0.0.1:0"); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s, s.Addr()
}

// transports is the transports a table case runs on: the ones it names,
// or both UDP and TCP when it names none.
func transports(nets []string) []string {
	if nets == nil {
		return []string{"udp", "tcp"}
	}
	return nets
}

// startNSIDPair starts two servers from base(): one with id as its NSID,
// one without, so a test can compare their answers to the same query.
func startNSIDPair(t testing.TB, base func() Options, id []byte) (addr, addrUnset string) {
	t.Helper()
	o := base()
	o.NSID = id
	_, addr = start(t, o)
	_, addrUnset = start(t, base())
	return addr, addrUnset
}

// query builds a query for name/qtype, optionally with EDNS and ECS.
func query(name string, qtype uint16, ecs string) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.RecursionDesired = false
	if ecs != "" {
		p := netip.MustParsePrefix(ecs)
		o := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
		o.SetUDPSize(1232)
		fam := uint16(1)
		if p.Addr().Is6() {
			fam = 2
		}
		o.Option = append(o.Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: fam, SourceNetmask: uint8(p.Bits()), Address: net.IP(p.Addr().AsSlice())})
		m.Extra = append(m.Extra, o)
	}
	return m
}

// exchange sends m over net ("udp" or "tcp") and returns the answer.
func exchange(t testing.TB, netw, addr string, m *dns.Msg) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: netw, Timeout: 3 * time.Second, UDPSize: 65535}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s exchange %s %s: %v", netw, m.Question[0].Name, dns.TypeToString[m.Question[0].Qtype], err)
	}
	return r
}

// rawExchange sends raw bytes over UDP and returns the raw answer, or nil
// when no answer arrives within wait.
func rawExchange(t testing.TB, addr string, pkt []byte, wait time.Duration) []byte {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(pkt); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 65535)
	n, err := c.Read(buf)
	if err != nil {
		return nil
	}
	return buf[:n]
}

// addrs returns the A/AAAA addresses of an answer section, in order.
func addrs(m *dns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		switch r := rr.(type) {
		case *dns.A:
			out = append(out, r.A.String())
		case *dns.AAAA:
			out = append(out, r.AAAA.String())
		}
	}
	return out
}

// ecsOf returns the ECS option of a response, or nil.
func ecsOf(m *dns.Msg) *dns.EDNS0_SUBNET {
	o := m.IsEdns0()
	if o == nil {
		return nil
	}
	for _, e := range o.Option {
		if s, ok := e.(*dns.EDNS0_SUBNET); ok {
			return s
		}
	}
	return nil
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for: %s", what)
}
