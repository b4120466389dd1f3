package realip

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"net/textproto"
	"strings"
	"sync/atomic"

	"golang.org/x/net/http/httpguts"
)

// The header forms a Resolver reads (HeaderOptions.Header).
const (
	// HeaderXFF is X-Forwarded-For: a comma-separated list of addresses,
	// one per hop, the nearest hop last. The default.
	HeaderXFF = "X-Forwarded-For"
	// HeaderForwarded is RFC 7239's Forwarded: the for= parameter of each
	// element, the nearest hop last.
	HeaderForwarded = "Forwarded"
)

// Header forms.
const (
	formList      = iota // X-Forwarded-For
	formForwarded        // RFC 7239
	formSingle           // one address: True-Client-IP, CF-Connecting-IP, X-Real-IP
)

// HeaderOptions configures a Resolver: which L7 proxies (an AWS ALB, a GCP
// HTTPS load balancer, a Kubernetes ingress, a CDN) in front of a PoP may
// tell it the client's address, and in which header, as nginx's
// set_real_ip_from, real_ip_header and real_ip_recursive on do.
type HeaderOptions struct {
	// Trusted are the proxies' addresses. Only a request whose connection
	// comes from one of them has its header read; for anyone else the
	// header is passed on untouched and the connection's address is the
	// client. Empty: off.
	Trusted []netip.Prefix
	// Header names the header: X-Forwarded-For (the default when empty),
	// Forwarded (RFC 7239 for=), or any other field name, read as a single
	// address (True-Client-IP, CF-Connecting-IP, X-Real-IP).
	Header string
}

// Validate reports what is wrong with o, the same errors NewResolver and
// Update return, for a caller that must check a whole reload before it
// applies any part of it.
func (o HeaderOptions) Validate() error {
	_, err := newHeaderPolicy(o)
	return err
}

// headerPolicy is one configuration of a Resolver, swapped whole.
type headerPolicy struct {
	trusted []netip.Prefix
	header  string // canonical, for http.Header
	lower   string // lower case, for the fast path's fields
	form    int
}

func newHeaderPolicy(o HeaderOptions) (*headerPolicy, error) {
	if len(o.Trusted) == 0 {
		return nil, nil
	}
	trusted, err := normalize(o.Trusted)
	if err != nil {
		return nil, err
	}
	name := o.Header
	if name == "" {
		name = HeaderXFF
	}
	if !httpguts.ValidHeaderFieldName(name) {
		return nil, fmt.Errorf("realip: header %q is not a header field name", name)
	}
	p := &headerPolicy{trusted: trusted, header: textproto.CanonicalMIMEHeaderKey(name), lower: strings.ToLower(name), form: formSingle}
	switch p.header {
	case HeaderXFF:
		p.form = formList
	case HeaderForwarded:
		p.form = formForwarded
	}
	return p, nil
}

// normalize checks prefixes and puts them in the form peers are compared
// in: masked, and an IPv4-mapped block as the IPv4 block (peers are
// unmapped before the check).
func normalize(in []netip.Prefix) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, len(in))
	for i, p := range in {
		if !p.IsValid() {
			return nil, fmt.Errorf("realip: trusted prefix %d is not a valid prefix", i)
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		out[i] = p.Masked()
	}
	return out, nil
}

func contains(trusted []netip.Prefix, a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Resolver finds a request's client behind trusted L7 proxies, from the
// header they add. Walking the header from the right (the nearest hop),
// it skips the addresses of trusted proxies; the first address that is
// not one is the client, and when every one is, the leftmost is. An entry
// that is not an address (garbage, "unknown", an obfuscated RFC 7239
// identifier) stops the walk: the last address read before it is the
// client, which is the peer's own when the nearest entry is bad. So the
// client is always either the peer or an address a trusted proxy put in
// the header, never one only an untrusted client wrote.
//
// Its configuration can be replaced while requests run (Update): each
// request reads one configuration, whole.
type Resolver struct {
	p atomic.Pointer[headerPolicy]
}

// NewResolver returns a Resolver for opts; with no Trusted prefixes it is
// off (every request's client is its peer) until Update turns it on.
func NewResolver(opts HeaderOptions) (*Resolver, error) {
	r := &Resolver{}
	return r, r.Update(opts)
}

// Update replaces the configuration atomically: requests already being
// resolved finish with the old one. It fails, changing nothing, on an
// invalid prefix or header name.
func (r *Resolver) Update(opts HeaderOptions) error {
	p, err := newHeaderPolicy(opts)
	if err != nil {
		return err
	}
	r.p.Store(p)
	return nil
}

// Client returns the client of a request that came from peer: peer itself
// unless peer is trusted and the header names another. values returns the
// values of a header field by its lower-case name (each field line's, in
// the order received; valid during the call): the cache's fast path reads
// them from its own parse of the request.
func (r *Resolver) Client(peer netip.AddrPort, values func(lowerName string) [][]byte) netip.AddrPort {
	p := r.p.Load()
	if p == nil || !contains(p.trusted, peer.Addr()) {
		return peer
	}
	return resolve(p, peer, values(p.lower))
}

// resolve walks the header's values vs (p's form) for a trusted peer.
func resolve[S ~string | ~[]byte](p *headerPolicy, peer netip.AddrPort, vs []S) netip.AddrPort {
	switch p.form {
	case formSingle:
		if len(vs) != 1 {
			return peer // absent, or several: which one would be the proxy's?
		}
		if a, ok := parseNode(trimOWS(vs[0]), false); ok {
			return a
		}
		return peer
	case formForwarded:
		return walkForwarded(p.trusted, peer, vs)
	}
	last := peer
	for i := len(vs) - 1; i >= 0; i-- {
		v := vs[i]
		for end := len(v); end >= 0; {
			start := lastComma(v[:end]) + 1
			elem := trimOWS(v[start:end])
			end = start - 1
			if len(elem) == 0 {
				continue // an empty list element (RFC 9110 5.6.1)
			}
			a, ok := parseNode(elem, false)
			if !ok {
				return last
			}
			last = a
			if !contains(p.trusted, a.Addr()) {
				return a
			}
		}
	}
	return last
}

func lastComma[S ~string | ~[]byte](v S) int {
	for i := len(v) - 1; i >= 0; i-- {
		if v[i] == ',' {
			return i
		}
	}
	return -1
}

// span is an element of a Forwarded value: vs[line][start:end].
type span struct{ line, start, end int }

// walkForwarded walks RFC 7239 elements from the right. Commas may appear
// inside quoted strings, so each line is split from the left first (into
// spans, no copy), then read from the right.
func walkForwarded[S ~string | ~[]byte](trusted []netip.Prefix, peer netip.AddrPort, vs []S) netip.AddrPort {
	var buf [16]span
	elems := buf[:0]
	for li, v := range vs {
		start, quoted := 0, false
		for i := 0; i < len(v); i++ {
			switch c := v[i]; {
			case quoted && c == '\\':
				i++ // quoted-pair
			case c == '"':
				quoted = !quoted
			case c == ',' && !quoted:
				elems = append(elems, span{li, start, i})
				start = i + 1
			}
		}
		if quoted {
			// An unterminated quoted string: this line's last element is
			// cut; keep the whole ones before it, then stop there.
			elems = append(elems, span{li, -1, -1})
			continue
		}
		elems = append(elems, span{li, start, len(v)})
	}
	last := peer
	for i := len(elems) - 1; i >= 0; i-- {
		e := elems[i]
		if e.start < 0 {
			return last
		}
		elem := trimOWS(vs[e.line][e.start:e.end])
		if len(elem) == 0 {
			continue
		}
		node, ok := forwardedFor(elem)
		if !ok {
			return last
		}
		a, ok := parseNode(node, true)
		if !ok {
			return last
		}
		last = a
		if !contains(trusted, a.Addr()) {
			return a
		}
	}
	return last
}

// forwardedFor returns the node of an element's for= pair, unquoted; false
// when it has none, several, or a pair is malformed.
func forwardedFor[S ~string | ~[]byte](elem S) (S, bool) {
	var node S
	found := false
	for len(elem) > 0 {
		// One pair: token "=" (token / quoted-string), up to ';'.
		eq := -1
		for i := 0; i < len(elem) && elem[i] != ';'; i++ {
			if elem[i] == '=' {
				eq = i
				break
			}
		}
		if eq <= 0 {
			return node, false
		}
		name := trimOWS(elem[:eq])
		rest := elem[eq+1:]
		var value S
		if len(rest) > 0 && rest[0] == '"' {
			end := -1
			for i := 1; i < len(rest); i++ {
				if rest[i] == '\\' {
					i++
					continue
				}
				if rest[i] == '"' {
					end = i
					break
				}
			}
			if end < 0 {
				return node, false
			}
			value = rest[1:end]
			for i := 0; i < len(value); i++ {
				if value[i] == '\\' {
					// An address never needs a quoted-pair; one here is
					// not an address.
					return node, false
				}
			}
			rest = trimOWS(rest[end+1:])
			if len(rest) > 0 && rest[0] != ';' {
				return node, false
			}
		} else {
			end := len(rest)
			for i := 0; i < len(rest); i++ {
				if rest[i] == ';' {
					end = i
					break
				}
			}
			value, rest = trimOWS(rest[:end]), rest[end:]
		}
		if len(rest) > 0 {
			rest = rest[1:] // the ';'
		}
		if len(name) == 3 && lower(name[0]) == 'f' && lower(name[1]) == 'o' && lower(name[2]) == 'r' {
			if found {
				return node, false
			}
			node, found = value, true
		}
		elem = trimOWS(rest)
	}
	return node, found
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func trimOWS[S ~string | ~[]byte](v S) S {
	for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
		v = v[1:]
	}
	for len(v) > 0 && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
		v = v[:len(v)-1]
	}
	return v
}

// parseNode parses a hop's address: IPv4, IPv4:port, [IPv6], [IPv6]:port,
// and (except in Forwarded, whose RFC requires brackets) a bare IPv6
// address. An IPv4-mapped address is unmapped, as a PROXY header's is. A
// missing port is 0. Zones, "unknown" and obfuscated identifiers are not
// addresses.
func parseNode[S ~string | ~[]byte](v S, bracketsOnly bool) (netip.AddrPort, bool) {
	if len(v) == 0 || len(v) > len("[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535") {
		return netip.AddrPort{}, false
	}
	var port uint16
	if v[0] == '[' {
		end := -1
		for i := range len(v) {
			if v[i] == ']' {
				end = i
				break
			}
		}
		if end < 0 {
			return netip.AddrPort{}, false
		}
		rest := v[end+1:]
		if len(rest) > 0 {
			p, ok := parsePort(rest)
			if !ok {
				return netip.AddrPort{}, false
			}
			port = p
		}
		a, ok := parseIPv6(v[1:end])
		return netip.AddrPortFrom(a, port), ok
	}
	colons, last := 0, -1
	for i := range len(v) {
		if v[i] == ':' {
			colons++
			last = i
		}
	}
	switch {
	case colons == 0:
		a, ok := parseIPv4(v)
		return netip.AddrPortFrom(a, 0), ok
	case colons == 1:
		p, ok := parsePort(v[last:])
		if !ok {
			return netip.AddrPort{}, false
		}
		a, ok := parseIPv4(v[:last])
		return netip.AddrPortFrom(a, p), ok
	case bracketsOnly:
		return netip.AddrPort{}, false
	default:
		a, ok := parseIPv6(v)
		return netip.AddrPortFrom(a, 0), ok
	}
}

// parsePort parses ":port", 1 to 65535.
func parsePort[S ~string | ~[]byte](v S) (uint16, bool) {
	if len(v) < 2 || len(v) > 6 || v[0] != ':' {
		return 0, false
	}
	n := 0
	for i := 1; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	if n == 0 || n > 65535 {
		return 0, false
	}
	return uint16(n), true
}

// parseIPv4 parses dotted decimal without leading zeros (as netip does),
// without allocating: the common case, read on every proxied request.
func parseIPv4[S ~string | ~[]byte](v S) (netip.Addr, bool) {
	var b [4]byte
	field, n, digits := 0, 0, 0
	for i := 0; i <= len(v); i++ {
		if i == len(v) || v[i] == '.' {
			if digits == 0 || field > 3 {
				return netip.Addr{}, false
			}
			b[field] = byte(n)
			field, n, digits = field+1, 0, 0
			continue
		}
		c := v[i]
		if c < '0' || c > '9' || (digits == 1 && n == 0) {
			return netip.Addr{}, false // not a digit, or a leading zero
		}
		n = n*10 + int(c-'0')
		digits++
		if n > 255 {
			return netip.Addr{}, false
		}
	}
	if field != 4 {
		return netip.Addr{}, false
	}
	return netip.AddrFrom4(b), true
}

func parseIPv6[S ~string | ~[]byte](v S) (netip.Addr, bool) {
	for i := range len(v) {
		if v[i] == '%' {
			return netip.Addr{}, false // a zone: a link-local hop, no client
		}
	}
	a, err := netip.ParseAddr(string(v))
	if err != nil || !a.Is6() {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// peerKey is the context key of a request's peer (see PeerFromContext).
type peerKey struct{}

// PeerFromContext returns the address of the peer a request came from (the
// proxy that forwarded it) when Handler replaced the request's RemoteAddr
// with the client's from the header; false when it did not (RemoteAddr is
// the peer). The proxy to the origin appends this address, not the
// client's, to X-Forwarded-For and Forwarded: each hop adds the one it
// received from.
func PeerFromContext(ctx context.Context) (netip.AddrPort, bool) {
	p, ok := ctx.Value(peerKey{}).(netip.AddrPort)
	return p, ok
}

// Handler sets each request's RemoteAddr to its client, as Client finds
// it from the configured header, before next sees it: the access log,
// plugins' geo and rate limits, and X-Forwarded-For to the origin (with
// PeerFromContext) then see the client. A client without a port in the
// header gets port 0, as nginx's realip module gives it. With the Resolver
// off, or a peer that is not trusted, the request is passed on as it is.
func (r *Resolver) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		p := r.p.Load()
		if p == nil {
			next.ServeHTTP(w, req)
			return
		}
		peer, err := netip.ParseAddrPort(req.RemoteAddr)
		if err != nil || !contains(p.trusted, peer.Addr()) {
			next.ServeHTTP(w, req)
			return
		}
		peer = netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port())
		client := resolve(p, peer, req.Header[p.header])
		if client == peer {
			next.ServeHTTP(w, req)
			return
		}
		req = req.WithContext(context.WithValue(req.Context(), peerKey{}, peer))
		req.RemoteAddr = client.String()
		next.ServeHTTP(w, req)
	})
}
