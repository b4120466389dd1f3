package realip_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway/realip"
)

// The L7 proxies of these tests: an ALB subnet and an ingress, as ops
// would list them.
var proxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8:ffff::/48")}

var alb = netip.MustParseAddrPort("10.1.2.3:40000")

// fields returns a header reader that gives vs for the header named want
// (lower case), and fails the test when asked for another.
func fields(t *testing.T, want string, vs ...string) func(string) [][]byte {
	return func(name string) [][]byte {
		if name != want {
			t.Errorf("asked for header %q, want %q", name, want)
			return nil
		}
		out := make([][]byte, len(vs))
		for i, v := range vs {
			out[i] = []byte(v)
		}
		return out
	}
}

// TestResolverXForwardedFor: nginx's real_ip_recursive on, over
// X-Forwarded-For: from the right, trusted hops skipped; the first other
// address is the client; all trusted: the leftmost; a bad entry stops at
// the last good address.
func TestResolverXForwardedFor(t *testing.T) {
	cases := []struct {
		name  string
		peer  netip.AddrPort
		lines []string
		want  string
	}{
		{"one hop", alb, []string{"203.0.113.7"}, "203.0.113.7:0"},
		{"the client's own chain before it", alb, []string{"198.51.100.1, 203.0.113.7"}, "203.0.113.7:0"},
		{"trusted hops skipped", alb, []string{"203.0.113.7, 10.9.9.9, 10.0.0.1"}, "203.0.113.7:0"},
		{"over several lines", alb, []string{"192.0.2.50, 203.0.113.7", "10.9.9.9", "10.0.0.1"}, "203.0.113.7:0"},
		{"all trusted: the leftmost", alb, []string{"10.0.0.5, 10.0.0.6"}, "10.0.0.5:0"},
		{"spaces and empty elements", alb, []string{" ,203.0.113.7 ,, 10.0.0.1,\t"}, "203.0.113.7:0"},
		{"with a port (Azure)", alb, []string{"203.0.113.7:51000"}, "203.0.113.7:51000"},
		{"IPv6", alb, []string{"2001:db8:1::7"}, "[2001:db8:1::7]:0"},
		{"IPv6 bracketed with a port", alb, []string{"[2001:db8:1::7]:443"}, "[2001:db8:1::7]:443"},
		{"IPv4-mapped is unmapped", alb, []string{"::ffff:203.0.113.7"}, "203.0.113.7:0"},
		{"trusted IPv6 hop skipped", alb, []string{"203.0.113.7, 2001:db8:ffff::1"}, "203.0.113.7:0"},
		{"no header", alb, nil, alb.String()},
		{"empty header", alb, []string{""}, alb.String()},
		{"nearest entry malformed: the peer", alb, []string{"203.0.113.7, not-an-ip"}, alb.String()},
		{"malformed beyond a trusted hop: that hop", alb, []string{"203.0.113.7, garbage, 10.0.0.9"}, "10.0.0.9:0"},
		{"a hostname", alb, []string{"client.example"}, alb.String()},
		{"leading zeros", alb, []string{"203.0.113.07"}, alb.String()},
		{"octet too large", alb, []string{"203.0.113.256"}, alb.String()},
		{"zone", alb, []string{"fe80::1%eth0"}, alb.String()},
		{"port 0", alb, []string{"203.0.113.7:0"}, alb.String()},
		{"port too large", alb, []string{"203.0.113.7:65536"}, alb.String()},
		{"unknown", alb, []string{"unknown"}, alb.String()},
		{"untrusted peer: ignored", netip.MustParseAddrPort("192.0.2.9:5000"), []string{"203.0.113.7"}, "192.0.2.9:5000"},
		{"mapped trusted peer", netip.MustParseAddrPort("[::ffff:10.1.2.3]:80"), []string{"203.0.113.7"}, "203.0.113.7:0"},
	}
	r, err := realip.NewResolver(realip.HeaderOptions{Trusted: proxies})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := r.Client(c.peer, fields(t, "x-forwarded-for", c.lines...)); got.String() != c.want {
				t.Errorf("client %s, want %s", got, c.want)
			}
		})
	}
}

// TestResolverForwarded: RFC 7239's for=, quoted or not, with other
// parameters, IPv6 in brackets and quotes, and the nodes that are not
// addresses.
func TestResolverForwarded(t *testing.T) {
	cases := []struct {
		name  string
		lines []string
		want  string
	}{
		{"token", []string{"for=203.0.113.7"}, "203.0.113.7:0"},
		{"quoted IPv6 with a port", []string{`for="[2001:db8::1]:4711"`}, "[2001:db8::1]:4711"},
		{"quoted IPv6", []string{`for="[2001:db8::1]"`}, "[2001:db8::1]:0"},
		{"case and other parameters", []string{`proto=https;For=203.0.113.7;host="a.test"`}, "203.0.113.7:0"},
		{"chain with trusted hops", []string{`for=203.0.113.7;proto=https, for=10.0.0.1`, `for="[2001:db8:ffff::2]"`}, "203.0.113.7:0"},
		{"comma inside a quoted value", []string{`for=203.0.113.7;host="a,b", for=10.0.0.1`}, "203.0.113.7:0"},
		{"all trusted", []string{`for=10.0.0.4, for=10.0.0.1`}, "10.0.0.4:0"},
		{"unknown stops at the last good", []string{`for=198.51.100.1, for=unknown, for=10.0.0.2`}, "10.0.0.2:0"},
		{"obfuscated nearest: the peer", []string{`for=_hidden`}, alb.String()},
		{"element without for", []string{`for=203.0.113.7, proto=https`}, alb.String()},
		{"two for in one element", []string{`for=203.0.113.7;for=198.51.100.1`}, alb.String()},
		{"bare IPv6 (needs brackets)", []string{`for="2001:db8::1"`}, alb.String()},
		{"unterminated quote", []string{`for=203.0.113.7, for="[2001:db8::1]`}, alb.String()},
		{"unterminated quote on an earlier line", []string{`for="203.0.113.7`, `for=10.0.0.1`}, "10.0.0.1:0"},
		{"quoted-pair", []string{`for="203.0.113.\7"`}, alb.String()},
		{"empty value", []string{`for=`}, alb.String()},
		{"no pair", []string{`203.0.113.7`}, alb.String()},
	}
	r, err := realip.NewResolver(realip.HeaderOptions{Trusted: proxies, Header: "forwarded"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := r.Client(alb, fields(t, "forwarded", c.lines...)); got.String() != c.want {
				t.Errorf("client %s, want %s", got, c.want)
			}
		})
	}
}

// TestResolverSingleAddressHeader: a CDN's header holds the client alone.
func TestResolverSingleAddressHeader(t *testing.T) {
	cases := []struct {
		name  string
		lines []string
		want  string
	}{
		{"IPv4", []string{"203.0.113.7"}, "203.0.113.7:0"},
		{"IPv6", []string{" 2001:db8::7 "}, "[2001:db8::7]:0"},
		{"a trusted address is still the client", []string{"10.0.0.1"}, "10.0.0.1:0"},
		{"absent", nil, alb.String()},
		{"a list", []string{"203.0.113.7, 198.51.100.1"}, alb.String()},
		{"two lines", []string{"203.0.113.7", "198.51.100.1"}, alb.String()},
		{"garbage", []string{"<script>"}, alb.String()},
	}
	r, err := realip.NewResolver(realip.HeaderOptions{Trusted: proxies, Header: "CF-Connecting-IP"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := r.Client(alb, fields(t, "cf-connecting-ip", c.lines...)); got.String() != c.want {
				t.Errorf("client %s, want %s", got, c.want)
			}
		})
	}
}

// TestResolverOptions: off without trusted proxies; bad options refused
// and the running configuration kept.
func TestResolverOptions(t *testing.T) {
	r, err := realip.NewResolver(realip.HeaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Client(alb, fields(t, "x-forwarded-for", "203.0.113.7")); got != alb {
		t.Errorf("off: client %s, want the peer", got)
	}
	if err := r.Update(realip.HeaderOptions{Trusted: proxies}); err != nil {
		t.Fatal(err)
	}
	if err := r.Update(realip.HeaderOptions{Trusted: []netip.Prefix{{}}}); err == nil {
		t.Error("an invalid prefix was accepted")
	}
	if err := r.Update(realip.HeaderOptions{Trusted: proxies, Header: "X Forwarded For"}); err == nil || !strings.Contains(err.Error(), "header field name") {
		t.Errorf("a header name with spaces: %v", err)
	}
	if got := r.Client(alb, fields(t, "x-forwarded-for", "203.0.113.7")); got.String() != "203.0.113.7:0" {
		t.Errorf("after refused updates: client %s, want the header's (the last good configuration)", got)
	}
}

// TestResolverHandler: over real sockets, a request from a trusted proxy
// reaches the next handler with the client as RemoteAddr and the proxy in
// the context; one from anyone else is untouched. A Update applies to the
// next request, on the same connection too.
func TestResolverHandler(t *testing.T) {
	r, err := realip.NewResolver(realip.HeaderOptions{Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: r.Handler(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		peer, ok := realip.PeerFromContext(req.Context())
		fmt.Fprintf(w, "%s peer=%v %v", req.RemoteAddr, peer, ok)
	})), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	ask := func(c net.Conn, xff string) string {
		t.Helper()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: a.test\r\nX-Forwarded-For: "+xff+"\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	proxy := dial(t, ln.Addr().String(), balancerIP)
	port := proxy.LocalAddr().(*net.TCPAddr).Port
	if got, want := ask(proxy, "198.51.100.1, 203.0.113.7"), fmt.Sprintf("203.0.113.7:0 peer=127.0.0.2:%d true", port); got != want {
		t.Errorf("trusted proxy: %q, want %q", got, want)
	}
	direct := dial(t, ln.Addr().String(), nil)
	dport := direct.LocalAddr().(*net.TCPAddr).Port
	if got, want := ask(direct, "203.0.113.7"), fmt.Sprintf("127.0.0.1:%d peer=invalid AddrPort false", dport); got != want {
		t.Errorf("untrusted peer: %q, want %q", got, want)
	}
	if err := r.Update(realip.HeaderOptions{Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}); err != nil {
		t.Fatal(err)
	}
	if got, want := ask(proxy, "203.0.113.7"), fmt.Sprintf("127.0.0.2:%d peer=invalid AddrPort false", port); got != want {
		t.Errorf("no longer trusted: %q, want %q", got, want)
	}
	if got, want := ask(direct, "203.0.113.8"), fmt.Sprintf("203.0.113.8:0 peer=127.0.0.1:%d true", dport); got != want {
		t.Errorf("now trusted: %q, want %q", got, want)
	}
}

// FuzzResolver: whatever a trusted proxy's header holds, the resolver
// does not panic, and its answer is the peer or an address written in the
// header.
func FuzzResolver(f *testing.F) {
	for _, s := range []string{
		"203.0.113.7", "198.51.100.1, 203.0.113.7, 10.0.0.1", `for="[2001:db8::1]:4711"`, `for=10.0.0.1;proto=https, for=unknown`,
		"[2001:db8::1]:443", `for="a,b`, "::ffff:1.2.3.4", ",,,", `"\"`, "1.2.3.4:99999",
	} {
		f.Add(s, "")
		f.Add(s, "10.0.0.1")
	}
	rs := map[string]*realip.Resolver{}
	for _, h := range []string{"X-Forwarded-For", "Forwarded", "True-Client-IP"} {
		r, err := realip.NewResolver(realip.HeaderOptions{Trusted: proxies, Header: h})
		if err != nil {
			f.Fatal(err)
		}
		rs[strings.ToLower(h)] = r
	}
	f.Fuzz(func(t *testing.T, line1, line2 string) {
		lines := [][]byte{[]byte(line1)}
		if line2 != "" {
			lines = append(lines, []byte(line2))
		}
		for name, r := range rs {
			got := r.Client(alb, func(string) [][]byte { return lines })
			if got == alb {
				continue
			}
			if !got.Addr().IsValid() || got.Addr().Is4In6() || got.Addr().Zone() != "" {
				t.Fatalf("%s: %q %q gave %v", name, line1, line2, got)
			}
			// The address must be in the header (in some spelling).
			all := line1 + "," + line2
			if !strings.Contains(all, got.Addr().String()) && !mentions(all, got.Addr()) {
				t.Fatalf("%s: %q %q gave %v, which the header does not hold", name, line1, line2, got)
			}
		}
	})
}

// mentions reports whether some token of s parses as a, for spellings
// netip does not print (an IPv4-mapped or uncompressed IPv6 address).
func mentions(s string, a netip.Addr) bool {
	for _, tok := range strings.FieldsFunc(s, func(r rune) bool { return strings.ContainsRune(` ,;"=[]`+"\t", r) }) {
		for _, cand := range []string{tok, strings.TrimSuffix(tok, ":"+lastPart(tok))} {
			if b, err := netip.ParseAddr(cand); err == nil && b.Unmap() == a {
				return true
			}
		}
	}
	return false
}

func lastPart(s string) string {
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		return s[i+1:]
	}
	return ""
}
