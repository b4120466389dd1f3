package dnsrouter

import (
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// A UDP socket bound to the wildcard address (0.0.0.0:53, [::]:53)
// receives queries sent to every address of the host, but an answer
// written with a plain sendto leaves from whatever address the kernel's
// routing picks. On a node with several addresses — an anycast address
// beside its own, IPv6 privacy addresses — that is often not the one the
// query was sent to, and resolvers drop such answers as spoofed. So on a
// wildcard socket the server asks the kernel for each query's destination
// address (IP_PKTINFO / IPV6_PKTINFO) and sends the answer from it, as
// BIND, Knot and miekg/dns do. TCP needs nothing: a connection has one
// local address.

// askDestination turns on destination-address reporting when conn is bound
// to the wildcard address. It reports whether it did; an error means the
// system cannot (the server then answers as the kernel routes).
func askDestination(conn *net.UDPConn) (bool, error) {
	la, ok := conn.LocalAddr().(*net.UDPAddr)
	if !ok || !la.IP.IsUnspecified() {
		return false, nil
	}
	var err error
	if isIPv4Socket(conn) {
		err = ipv4.NewPacketConn(conn).SetControlMessage(ipv4.FlagDst, true)
	} else {
		// Go binds 0.0.0.0 with network "udp" as a dual-stack IPv6 socket;
		// Linux then reports IPv4 destinations as IPv4-mapped IPv6.
		err = ipv6.NewPacketConn(conn).SetControlMessage(ipv6.FlagDst, true)
	}
	return err == nil, err
}

// isIPv4Socket reports whether conn is an IPv4-only socket: askDestination
// then asks for IP_PKTINFO, and a query's control message is IPv4's.
// Otherwise it asks for IPV6_PKTINFO, which Linux also uses for IPv4
// queries on a dual-stack socket (as IPv4-mapped addresses).
func isIPv4Socket(conn *net.UDPConn) bool {
	la, ok := conn.LocalAddr().(*net.UDPAddr)
	return ok && la.IP.To4() != nil
}

// sourceCache turns the control message a query came with into the one
// that sends its answer from the query's destination address. It keeps
// the last one made: a node answers on a few addresses, so in the steady
// state the only allocation is x/net's parse of the incoming message (one
// small slice per query, on wildcard sockets only). One per UDP worker.
type sourceCache struct {
	// ipv4: the socket reports IPv4 control messages (isIPv4Socket), so
	// only those are parsed; parsing is the per-query cost here.
	ipv4 bool
	dst  netip.Addr
	msg  []byte
	cm4  ipv4.ControlMessage
	cm6  ipv6.ControlMessage
}

// oob returns the control message for the answer, or nil (the kernel
// picks) when in carries no destination address.
func (c *sourceCache) oob(in []byte) []byte {
	dst := c.destination(in)
	if !dst.IsValid() {
		return nil
	}
	if dst == c.dst {
		return c.msg
	}
	if dst.Is4() {
		// IP_PKTINFO works on a dual-stack socket too (Linux passes it to
		// the IPv4 path), where IPV6_PKTINFO cannot carry a mapped address.
		c.msg = (&ipv4.ControlMessage{Src: net.IP(dst.AsSlice())}).Marshal()
	} else {
		c.msg = (&ipv6.ControlMessage{Src: net.IP(dst.AsSlice())}).Marshal()
	}
	c.dst = dst
	return c.msg
}

// destination parses the query's destination address from in, unmapped.
// The parsers fill Dst in place when it is long enough, so it is kept at
// full length and zeroed: a received packet never has the unspecified
// address as its destination.
func (c *sourceCache) destination(in []byte) netip.Addr {
	if len(in) == 0 {
		return netip.Addr{}
	}
	if c.ipv4 {
		if len(c.cm4.Dst) != net.IPv4len {
			c.cm4.Dst = make(net.IP, net.IPv4len)
		}
		clear(c.cm4.Dst)
		if c.cm4.Parse(in) == nil && !c.cm4.Dst.IsUnspecified() {
			a, _ := netip.AddrFromSlice(c.cm4.Dst)
			return a
		}
		return netip.Addr{}
	}
	if len(c.cm6.Dst) != net.IPv6len {
		c.cm6.Dst = make(net.IP, net.IPv6len)
	}
	clear(c.cm6.Dst)
	if c.cm6.Parse(in) == nil && !c.cm6.Dst.IsUnspecified() {
		a, _ := netip.AddrFromSlice(c.cm6.Dst)
		return a.Unmap()
	}
	return netip.Addr{}
}
