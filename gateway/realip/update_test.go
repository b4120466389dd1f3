package realip_test

import (
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway/realip"
)

// TestListenerUpdate: a listener made with Listen and nothing trusted
// passes connections through; Update trusts a balancer for the
// connections accepted from then on, while one already open keeps the
// rules it was accepted under; a bad update changes nothing.
func TestListenerUpdate(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wl, err := realip.Listen(ln, realip.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.RemoteAddr)
	}), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(wl)
	t.Cleanup(func() { srv.Close() })
	addr := ln.Addr().String()

	before := dial(t, addr, balancerIP)
	if got, err := get(before); err != nil || got != before.LocalAddr().String() {
		t.Fatalf("nothing trusted: %q, %v; want the balancer's own address", got, err)
	}
	// A header is not read while nothing is trusted: net/http sees it as
	// a bad request line.
	c := dial(t, addr, balancerIP)
	header(t, 1, "203.0.113.7:1000").WriteTo(c)
	if got, err := get(c); err == nil && strings.HasPrefix(got, "203.0.113.7") {
		t.Fatalf("a header was read with nothing trusted: %q", got)
	}

	if err := wl.Update(realip.Options{Trusted: trusted, Required: true}); err != nil {
		t.Fatal(err)
	}
	c = dial(t, addr, balancerIP)
	header(t, 2, "203.0.113.7:1000").WriteTo(c)
	if got, err := get(c); err != nil || got != "203.0.113.7:1000" {
		t.Fatalf("after the update: %q, %v; want the header's client", got, err)
	}
	// The connection accepted before the update is still served, without
	// a header, though one is now required of new connections.
	if got, err := get(before); err != nil || got != before.LocalAddr().String() {
		t.Fatalf("connection from before the update: %q, %v", got, err)
	}
	refused(t, dial(t, addr, balancerIP)) // new, without a header: refused (required)

	if err := wl.Update(realip.Options{Required: true}); err == nil {
		t.Fatal("required without trusted was accepted")
	}
	if err := wl.Update(realip.Options{Trusted: []netip.Prefix{{}}}); err == nil {
		t.Fatal("an invalid prefix was accepted")
	}
	c = dial(t, addr, balancerIP)
	header(t, 1, "203.0.113.8:1000").WriteTo(c)
	if got, err := get(c); err != nil || got != "203.0.113.8:1000" {
		t.Fatalf("after refused updates: %q, %v; want the last good rules", got, err)
	}

	if err := wl.Update(realip.Options{}); err != nil {
		t.Fatal(err)
	}
	c = dial(t, addr, balancerIP)
	if got, err := get(c); err != nil || got != c.LocalAddr().String() {
		t.Fatalf("trust removed: %q, %v; want the balancer's own address", got, err)
	}
}
