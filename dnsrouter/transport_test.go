package dnsrouter

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
)

// A PoP with many addresses makes answers larger than UDP allows.
func bigOptions(n int) Options {
	o := DevOptions()
	o.PoPs = o.PoPs[:1]
	o.PoPs[0].IPv4 = nil
	for i := range n {
		o.PoPs[0].IPv4 = append(o.PoPs[0].IPv4, netip.AddrFrom4([4]byte{10, 0, byte(i / 256), byte(i % 256)}))
	}
	return o
}

func TestTruncationAndTCPRetry(t *testing.T) {
	_, addr := start(t, bigOptions(100)) // 100 A records ≈ 1,650 bytes
	cases := []struct {
		name   string
		msg    *dns.Msg
		netw   string
		wantTC bool
		wantN  int
		maxLen int
	}{
		{"UDP without EDNS: 512 bytes, TC", query("www.example.test.", dns.TypeA, ""), "udp", true, 0, 512},
		{"UDP with EDNS 4096 capped at 1232: TC", withOPT(query("www.example.test.", dns.TypeA, ""), 4096, 0), "udp", true, 0, 1232},
		{"UDP with EDNS 800: TC", withOPT(query("www.example.test.", dns.TypeA, ""), 800, 0), "udp", true, 0, 800},
		{"TCP: the full answer", query("www.example.test.", dns.TypeA, ""), "tcp", false, 100, 65535},
		{"TCP with EDNS: the full answer", withOPT(query("www.example.test.", dns.TypeA, ""), 512, 0), "tcp", false, 100, 65535},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := exchange(t, c.netw, addr, c.msg)
			if r.Truncated != c.wantTC || len(r.Answer) != c.wantN {
				t.Errorf("TC=%v with %d answers, want TC=%v with %d", r.Truncated, len(r.Answer), c.wantTC, c.wantN)
			}
			packed, _ := r.Pack()
			if len(packed) > c.maxLen {
				t.Errorf("answer of %d bytes exceeds the %d the client allows", len(packed), c.maxLen)
			}
			if len(r.Question) != 1 || r.Question[0].Name != "www.example.test." {
				t.Errorf("question not echoed in the truncated answer: %v", r.Question)
			}
		})
	}
	// The way a stub does it: UDP first, TCP on TC.
	c := &dns.Client{Net: "udp", Timeout: 3 * time.Second}
	r, _, err := c.Exchange(query("www.example.test.", dns.TypeA, ""), addr)
	if err != nil || !r.Truncated {
		t.Fatalf("udp: %v TC=%v", err, r != nil && r.Truncated)
	}
	c.Net = "tcp"
	r, _, err = c.Exchange(query("www.example.test.", dns.TypeA, ""), addr)
	if err != nil || r.Truncated || len(r.Answer) != 100 {
		t.Fatalf("tcp retry: %v, %d answers", err, len(r.Answer))
	}
}

// Raw packets that a library would never produce.
func TestMalformedPackets(t *testing.T) {
	_, addr := start(t, DevOptions())
	good, _ := query("www.example.test.", dns.TypeA, "").Pack()
	resp := func() []byte {
		m := query("www.example.test.", dns.TypeA, "")
		m.Response = true
		b, _ := m.Pack()
		return b
	}()
	oversized := func() []byte {
		m := withOPT(query("www.example.test.", dns.TypeA, ""), 1232, 0, &dns.EDNS0_PADDING{Padding: make([]byte, 3000)})
		b, _ := m.Pack()
		return b
	}()
	cases := []struct {
		name      string
		pkt       []byte
		wantRcode int // -1: no answer at all
		maxLen    int
	}{
		{"empty datagram", nil, -1, 0},
		{"shorter than a header", good[:7], -1, 0},
		{"a response, not a query", resp, -1, 0},
		{"question cut in the middle", good[:len(good)-3], dns.RcodeFormatError, 12},
		{"header claims 3 questions, carries 1", func() []byte { b := append([]byte(nil), good...); b[5] = 3; return b }(), dns.RcodeFormatError, 12},
		{"label length runs past the end", append(append([]byte(nil), good[:12]...), 63, 'a'), dns.RcodeFormatError, 12},
		{"trailing garbage after a valid query is ignored", append(append([]byte(nil), good...), 1, 2, 3), dns.RcodeSuccess, 512},
		{"oversized query (3 kB of EDNS padding) still answered small", oversized, dns.RcodeSuccess, 200},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := rawExchange(t, addr, c.pkt, 300*time.Millisecond)
			if c.wantRcode < 0 {
				if b != nil {
					t.Fatalf("got a %d-byte answer, want silence", len(b))
				}
				return
			}
			if b == nil {
				t.Fatal("no answer")
			}
			r := new(dns.Msg)
			if err := r.Unpack(b); err != nil {
				t.Fatalf("answer does not parse: %v", err)
			}
			if r.Rcode != c.wantRcode {
				t.Errorf("rcode %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[c.wantRcode])
			}
			if len(b) > c.maxLen {
				t.Errorf("answer %d bytes, want at most %d (no amplification)", len(b), c.maxLen)
			}
		})
	}
}

// A taken port fails with the address; nothing keeps listening.
func TestStartPortTaken(t *testing.T) {
	l, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s, err := New(DevOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	taken := l.LocalAddr().String()
	err = s.Start(context.Background(), taken)
	if err == nil || !strings.Contains(err.Error(), taken) {
		t.Fatalf("Start on a taken port: %v, want an error naming %s", err, taken)
	}
	// TCP taken, UDP free: fails too, and releases the UDP socket.
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	err = s.Start(context.Background(), tl.Addr().String())
	if err == nil || !strings.Contains(err.Error(), tl.Addr().String()) {
		t.Fatalf("Start with TCP taken: %v", err)
	}
	u, err := net.ListenPacket("udp", tl.Addr().String())
	if err != nil {
		t.Fatalf("UDP port not released after the failed start: %v", err)
	}
	u.Close()
}

func TestStopsWithContext(t *testing.T) {
	s, err := New(DevOptions())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := s.Start(ctx, "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	addr := s.Addr()
	exchange(t, "tcp", addr, query("www.example.test.", dns.TypeA, ""))
	cancel()
	eventually(t, "listener closed", func() bool {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	mod := func(f func(o *Options)) Options { o := DevOptions(); f(&o); return o }
	cases := []struct {
		name string
		opts Options
		want string
	}{
		{"no zones", mod(func(o *Options) { o.Zones = nil }), "Zones: at least one zone"},
		{"no PoPs", mod(func(o *Options) { o.PoPs = nil }), "PoPs: at least one PoP"},
		{"bad apex", mod(func(o *Options) { o.Zones[0].Apex = "exa mple..test" }), "Zones[0].Apex"},
		{"served name outside the zone", mod(func(o *Options) { o.Zones[0].Names = []string{"www.example.org."} }), "Zones[0].Names[0]: www.example.org. is outside the zone example.test."},
		{"in-zone NS without glue", mod(func(o *Options) { o.Zones[0].NS[0].Addrs = nil }), "Zones[0].NS[0].Addrs: ns1.example.test. is inside the zone and needs glue"},
		{"no NS", mod(func(o *Options) { o.Zones[0].NS = nil }), "Zones[0].NS: at least one name server"},
		{"alias to an unserved name", mod(func(o *Options) { o.Zones[0].Aliases = map[string]string{"cdn": "nope"} }), "target nope.example.test. is not one of the zone's served Names"},
		{"alias at the apex", mod(func(o *Options) { o.Zones[0].Aliases = map[string]string{"@": "www"} }), "the apex cannot be a CNAME"},
		{"duplicate PoP", mod(func(o *Options) { o.PoPs[1].ID = "us-east-1" }), `PoPs[1].ID: duplicate PoP id "us-east-1"`},
		{"unknown region", mod(func(o *Options) { o.PoPs[0].Region = "mars-1" }), `PoPs[0].Region: unknown region "mars-1"`},
		{"lat out of range", mod(func(o *Options) { o.PoPs[0].Lat = 91; o.PoPs[0].Lon = 1 }), "PoPs[0].Lat: want -90..90, got 91"},
		{"no addresses", mod(func(o *Options) { o.PoPs[0].IPv4 = nil }), "at least one address in IPv4 or IPv6"},
		{"IPv6 in IPv4", mod(func(o *Options) { o.PoPs[0].IPv4 = []netip.Addr{netip.MustParseAddr("::1")} }), "PoPs[0].IPv4: ::1 is not an IPv4 address"},
		{"threshold over 1", mod(func(o *Options) { o.PoPs[0].CapacityThreshold = 1.5 }), "PoPs[0].CapacityThreshold: want a share in (0, 1], got 1.5"},
		{"health URL not http", mod(func(o *Options) { o.PoPs[0].HealthURL = "tcp://x" }), "PoPs[0].HealthURL"},
		{"unknown default region", mod(func(o *Options) { o.DefaultRegion = "atlantis" }), `DefaultRegion: unknown region "atlantis"`},
		{"too many answers", mod(func(o *Options) { o.Answers = 17 }), "Answers: at most 16"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := New(c.opts)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("New: %v, want an error containing %q", err, c.want)
			}
		})
	}
}

// Several queries pipelined on one TCP connection get one answer each, in
// order.
func TestTCPPipelining(t *testing.T) {
	_, addr := start(t, DevOptions())
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ecs := []string{"203.0.113.0/24", "198.51.100.0/24", "192.0.2.0/24"}
	var out []byte
	for i, e := range ecs {
		m := query("www.example.test.", dns.TypeA, e)
		m.Id = uint16(100 + i)
		b, _ := m.Pack()
		out = append(out, byte(len(b)>>8), byte(len(b)))
		out = append(out, b...)
	}
	if _, err := c.Write(out); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	dc := &dns.Conn{Conn: c}
	for i, want := range []string{"127.0.0.13", "127.0.0.12", "127.0.0.11"} {
		r, err := dc.ReadMsg()
		if err != nil {
			t.Fatal(err)
		}
		if r.Id != uint16(100+i) || len(addrs(r)) != 1 || addrs(r)[0] != want {
			t.Errorf("answer %d: id %d %v, want id %d [%s]", i, r.Id, addrs(r), 100+i, want)
		}
	}
}

// An answer that is not ready within the per-query budget is dropped and
// counted, not sent late.
func TestQueryBudget(t *testing.T) {
	o := DevOptions()
	o.QueryBudget = time.Nanosecond // no real answer is that fast
	s, addr := start(t, o)
	pkt, _ := query("www.example.test.", dns.TypeA, "").Pack()
	if b := rawExchange(t, addr, pkt, 300*time.Millisecond); b != nil {
		t.Fatal("answer sent past its time budget")
	}
	eventually(t, "budget drop counted", func() bool {
		return promtest.ToFloat64(s.met.dropped.WithLabelValues("budget")) == 1
	})
}

// PoP coordinates come from configuration even when a geo database places
// the PoP's own address elsewhere.
func TestPoPCoordinatesFromConfigNotGeo(t *testing.T) {
	o := DevOptions()
	// The dev table puts 198.51.100.0/24 in London; give Tokyo's PoP an
	// address there. Tokyo's clients must still get Tokyo.
	o.PoPs[2].IPv4 = []netip.Addr{netip.MustParseAddr("198.51.100.13")}
	_, addr := start(t, o)
	r := exchange(t, "udp", addr, query("www.example.test.", dns.TypeA, "203.0.113.0/24"))
	if got := addrs(r); len(got) != 1 || got[0] != "198.51.100.13" {
		t.Fatalf("Tokyo client got %v, want Tokyo's PoP 198.51.100.13", got)
	}
	r = exchange(t, "udp", addr, query("www.example.test.", dns.TypeA, "198.51.100.0/24"))
	if got := addrs(r); len(got) != 1 || got[0] != "127.0.0.12" {
		t.Fatalf("London client got %v, want London's PoP", got)
	}
}

// Two OPT records, or an OPT not owned by the root, are FORMERR (RFC 6891).
func TestBadOPT(t *testing.T) {
	_, addr := start(t, DevOptions())
	two := withOPT(withOPT(query("www.example.test.", dns.TypeA, ""), 1232, 0), 1232, 0)
	named := withOPT(query("www.example.test.", dns.TypeA, ""), 1232, 0)
	named.Extra[0].Header().Name = "example.test."
	for name, m := range map[string]*dns.Msg{"two OPT": two, "OPT not at root": named} {
		for _, netw := range []string{"udp", "tcp"} {
			if r := exchange(t, netw, addr, m); r.Rcode != dns.RcodeFormatError || len(r.Answer) != 0 {
				t.Errorf("%s over %s: %s with %d answers, want FORMERR", name, netw, dns.RcodeToString[r.Rcode], len(r.Answer))
			}
		}
	}
}

// Past TCPMaxConns, new connections are closed at once rather than queued;
// a freed slot is usable again.
func TestTCPConnectionLimit(t *testing.T) {
	o := DevOptions()
	o.TCPMaxConns = 1
	_, addr := start(t, o)
	first, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	dc := &dns.Conn{Conn: first}
	if err := dc.WriteMsg(query("www.example.test.", dns.TypeA, "")); err != nil {
		t.Fatal(err)
	}
	if _, err := dc.ReadMsg(); err != nil { // the first connection is being served
		t.Fatal(err)
	}
	second, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	second.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := second.Read(make([]byte, 1)); err == nil {
		t.Fatal("second connection over the limit was not closed")
	}
	second.Close()
	first.Close()
	eventually(t, "slot freed", func() bool {
		c := &dns.Client{Net: "tcp", Timeout: 500 * time.Millisecond}
		_, _, err := c.Exchange(query("www.example.test.", dns.TypeA, ""), addr)
		return err == nil
	})
}

// The server listens on IPv6 loopback too, and the resolver's own IPv6
// address places it when there is no ECS.
func TestIPv6Listener(t *testing.T) {
	o := DevOptions()
	o.Geo = nil // every client at the default region
	o.DefaultRegion = "eu-west-2"
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Start(context.Background(), "[::1]:0"); err != nil {
		t.Fatalf("Start on [::1]:0: %v", err)
	}
	for _, netw := range []string{"udp", "tcp"} {
		r := exchange(t, netw, s.Addr(), query("www.example.test.", dns.TypeA, ""))
		if got := addrs(r); len(got) != 1 || got[0] != "127.0.0.12" {
			t.Errorf("%s over ::1: %v, want the default region's PoP 127.0.0.12", netw, got)
		}
	}
}
