package config

import (
	"fmt"
	"net/netip"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// RealIP says which L7 proxies in front of a PoP may name the client, and
// in which header.
type RealIP struct {
	// Trusted are the proxies' addresses: IPs or CIDR blocks, e.g.
	// 10.0.0.0/8 (nginx's set_real_ip_from). Only a request whose
	// connection comes from one of them has its header read. The header
	// is read from the right (the nearest hop), skipping these addresses:
	// the first address that is not one is the client (nginx's
	// real_ip_recursive on); when all are, the leftmost. A malformed entry
	// stops the walk at the last good address. Never list 0.0.0.0/0 unless
	// nothing but the proxies can reach the PoP: any client could then
	// name itself.
	Trusted []string `yaml:"trusted"`
	// Header carries the client's address (nginx's real_ip_header):
	// X-Forwarded-For (default; "client, proxy1, proxy2", as an ALB, a GCP
	// load balancer or ingress-nginx send it), Forwarded (RFC 7239's for=,
	// e.g. for="[2001:db8::1]:4711"), or a header that holds the client's
	// address alone, such as True-Client-IP, CF-Connecting-IP or X-Real-IP.
	Header string `yaml:"header"`
}

// TrustedPrefixes returns Trusted as prefixes, as
// ProxyProtocol.TrustedPrefixes does.
func (r *RealIP) TrustedPrefixes() []netip.Prefix {
	if r == nil {
		return nil
	}
	return (&ProxyProtocol{Trusted: r.Trusted}).TrustedPrefixes()
}

// notAddressHeaders carry something else than a client's address; naming
// one in real_ip.header is a mistake with a clear fix.
var notAddressHeaders = map[string]bool{
	"host": true, "x-forwarded-host": true, "x-forwarded-proto": true, "x-forwarded-port": true,
	"x-forwarded-server": true, "x-forwarded-scheme": true, "via": true, "x-request-id": true,
	"user-agent": true, "referer": true, "cookie": true, "authorization": true,
}

// realIP checks a PoP's real_ip section.
func (v *validation) realIP(f string, ri *RealIP) {
	if len(ri.Trusted) == 0 {
		v.add(f+".trusted", "missing; list the L7 proxies' addresses or CIDR blocks, e.g. [10.0.0.0/8]: only their header names the client")
	}
	v.trustedList(f+".trusted", ri.Trusted)
	const expected = "expected X-Forwarded-For (the default), Forwarded, or a header holding the client's address alone, such as True-Client-IP, CF-Connecting-IP or X-Real-IP"
	h := ri.Header
	switch lh := strings.ToLower(h); {
	case lh == "proxy_protocol" || lh == "proxy-protocol":
		v.add(f+".header", "%q is not a header: for an L4 balancer that sends PROXY protocol headers, set %s instead (both may be set: the PROXY header is read first)", h, strings.TrimSuffix(f, ".real_ip")+".proxy_protocol")
	case !httpguts.ValidHeaderFieldName(h):
		v.add(f+".header", "%q is not a header field name; %s", h, expected)
	case notAddressHeaders[lh]:
		v.add(f+".header", "%s carries no client address; %s", h, expected)
	}
}

// trustedList checks a list of trusted IPs and CIDR blocks.
func (v *validation) trustedList(f string, list []string) {
	for i, s := range list {
		tf := fmt.Sprintf("%s[%d]", f, i)
		p, err := parseTrusted(s)
		switch {
		case err != nil:
			v.add(tf, "%q is not an IP address or CIDR block; expected e.g. 10.0.0.0/8, 2001:db8::/32 or 10.1.2.3", s)
		case p.Masked() != p:
			v.add(tf, "%s has host bits set; did you mean %s?", s, p.Masked())
		}
	}
}
