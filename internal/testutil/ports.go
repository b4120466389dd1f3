package testutil

import (
	"net"
	"testing"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago, for
// servers that must be told their port before they start (NATS clusters,
// child processes). Ask FreePorts for several: two calls here can return
// the same port, since each releases its port before the next asks.
func FreePort(t testing.TB) int {
	t.Helper()
	return FreePorts(t, 1)[0]
}

// FreePorts returns n distinct TCP ports on 127.0.0.1 that were free a
// moment ago. All n are held open until the last is chosen, so the kernel
// cannot hand one out twice.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// FreeAddr returns host:port free for both TCP and UDP on host, for DNS
// servers, which listen on both. Ask FreeAddrs for several, for the reason
// FreePort gives.
func FreeAddr(t testing.TB, host string) string {
	t.Helper()
	return FreeAddrs(t, host, 1)[0]
}

// FreeAddrs returns n distinct host:port addresses, each free for both TCP
// and UDP on host a moment ago, held open until the last is chosen.
func FreeAddrs(t testing.TB, host string, n int) []string {
	t.Helper()
	addrs := make([]string, 0, n)
	for tries := 0; len(addrs) < n; tries++ {
		if tries == 20*n {
			t.Fatalf("no %d ports free for both TCP and UDP on %s", n, host)
		}
		l, err := net.Listen("tcp", host+":0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		addr := l.Addr().String()
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			continue
		}
		defer pc.Close()
		addrs = append(addrs, addr)
	}
	return addrs
}
