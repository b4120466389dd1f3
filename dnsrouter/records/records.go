// Package records reads and checks a zone's static records: the records
// an authoritative server must hold beside its geo-routed names for a
// domain to work when delegated to it (MX and TXT for mail, CAA for
// certificate authorities, a CNAME to a hosted service, a plain address).
// They are written in zone-file syntax (RFC 1035 5.1), relative to the
// zone's apex, one record per string:
//
//	@ 3600 MX 10 mail.example.com.
//	_dmarc TXT "v=DMARC1; p=reject"
//	@ CAA 0 issue "letsencrypt.org"
//	mail A 192.0.2.25
//	docs CNAME example.github.io.
//	*.preview TXT "any name under preview"
//	corp NS ns1.corp
//	ns1.corp A 192.0.2.53
//
// A wildcard owner ("*" as the whole first label) answers the names under
// its parent that do not exist themselves (RFC 4592). NS records below the
// apex delegate that name and everything under it to other servers (a
// zone cut); the only records allowed below it are the addresses of those
// servers when they are named under it (glue).
//
// It must not answer queries (dnsrouter does) nor read files.
package records

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/miekg/dns"
)

// DefaultTTL is the TTL of a record that states none.
const DefaultTTL = 3600

// allowed are the types a zone may hold statically. SOA and the apex's NS
// come from the zone's own settings; NS below the apex delegates a
// subdomain (answered with referrals). DNSSEC records would need
// signatures this server does not make.
var allowed = map[uint16]bool{
	dns.TypeA: true, dns.TypeAAAA: true, dns.TypeCNAME: true, dns.TypeTXT: true,
	dns.TypeMX: true, dns.TypeSRV: true, dns.TypeCAA: true, dns.TypePTR: true,
	dns.TypeHTTPS: true, dns.TypeSVCB: true, dns.TypeNS: true,
}

// Types lists the types Parse accepts, for messages.
const Types = "A, AAAA, CNAME, TXT, MX, SRV, CAA, PTR, HTTPS, SVCB, and NS below the apex (a delegation)"

// Parse reads one record in zone-file syntax relative to apex (a name
// without a final dot is under the apex; "@" is the apex). The TTL and the
// class IN may be left out. The owner is returned lower-case.
func Parse(apex, text string) (dns.RR, error) {
	origin := dns.Fqdn(strings.ToLower(apex))
	if strings.TrimSpace(text) == "" {
		return nil, errors.New("empty; write a record such as \"@ MX 10 mail\" or \"www TXT \\\"v=spf1 -all\\\"\"")
	}
	if strings.HasPrefix(strings.TrimSpace(text), "$") {
		return nil, fmt.Errorf("%q is a zone-file directive; write one record", text)
	}
	zp := dns.NewZoneParser(strings.NewReader(text), origin, "")
	zp.SetDefaultTTL(DefaultTTL)
	rr, ok := zp.Next()
	if err := zp.Err(); err != nil {
		return nil, fmt.Errorf("%q: %s", text, strings.TrimPrefix(err.Error(), "dns: "))
	}
	if !ok || rr == nil {
		return nil, fmt.Errorf("%q holds no record", text)
	}
	if _, more := zp.Next(); more || zp.Err() != nil {
		return nil, fmt.Errorf("%q holds more than one record; give each its own entry", text)
	}
	h := rr.Header()
	h.Name = strings.ToLower(h.Name)
	switch {
	case h.Class != dns.ClassINET:
		return nil, fmt.Errorf("%q: class %s; only IN is served", text, dns.ClassToString[h.Class])
	case !dns.IsSubDomain(origin, h.Name):
		return nil, fmt.Errorf("%q: owner %s is outside zone %s", text, h.Name, origin)
	case strings.Contains(h.Name, ".*.") || strings.Contains(strings.TrimPrefix(h.Name, "*."), "*"):
		return nil, fmt.Errorf("%q: a * that is not the whole first label is not a wildcard (RFC 4592) but a literal character; write *.name for a wildcard", text)
	case h.Rrtype == dns.TypeSOA || h.Rrtype == dns.TypeNS && h.Name == origin:
		return nil, fmt.Errorf("%q: the zone's %s comes from its own settings (soa, ns), not from records", text, dns.TypeToString[h.Rrtype])
	case h.Rrtype == dns.TypeNS && strings.HasPrefix(h.Name, "*."):
		return nil, fmt.Errorf("%q: a wildcard cannot be delegated (RFC 4592 4.2); delegate each name", text)
	case !allowed[h.Rrtype]:
		return nil, fmt.Errorf("%q: type %s is not served; the types are %s", text, dns.TypeToString[h.Rrtype], Types)
	}
	return rr, nil
}

// Problem is a record that cannot stand in its zone.
type Problem struct {
	// Index is the record's position in the list given to Check.
	Index int
	Err   error
}

// Check reports the records of rrs (each from Parse for apex) that cannot
// stand together or beside the zone's other data: served are its
// geo-routed names (answered A and AAAA with the nearest PoP), aliases its
// CNAME names, glue the names of its in-zone name servers (their addresses
// come from the ns settings); all lower-case FQDNs.
func Check(apex string, rrs []dns.RR, served, aliases, glue map[string]bool) []Problem {
	origin := dns.Fqdn(strings.ToLower(apex))
	var out []Problem
	bad := func(i int, format string, args ...any) {
		out = append(out, Problem{Index: i, Err: fmt.Errorf(format, args...)})
	}
	owners := map[string][]int{}
	ttls := map[string]uint32{} // owner and type -> the RRset's TTL
	for i, rr := range rrs {
		h := rr.Header()
		owners[h.Name] = append(owners[h.Name], i)
		k := h.Name + "/" + dns.TypeToString[h.Rrtype]
		if t, seen := ttls[k]; seen && t != h.Ttl {
			bad(i, "TTL %d differs from the %d of the other %s records of %s; an RRset has one TTL (RFC 2181 5.2)", h.Ttl, t, dns.TypeToString[h.Rrtype], h.Name)
		} else {
			ttls[k] = h.Ttl
		}
		switch {
		case aliases[h.Name]:
			bad(i, "%s is an alias (a CNAME), which cannot stand beside other records", h.Name)
		case glue[h.Name] && (h.Rrtype == dns.TypeA || h.Rrtype == dns.TypeAAAA):
			bad(i, "%s is a name server of the zone; its addresses come from ns[].addresses", h.Name)
		case served[h.Name] && (h.Rrtype == dns.TypeA || h.Rrtype == dns.TypeAAAA):
			bad(i, "%s is a served name, answered with the nearest PoP's addresses; a static %s would contradict it", h.Name, dns.TypeToString[h.Rrtype])
		}
	}
	cuts := map[string][]string{} // delegation point -> its NS targets
	for _, rr := range rrs {
		if ns, ok := rr.(*dns.NS); ok {
			cuts[ns.Hdr.Name] = append(cuts[ns.Hdr.Name], strings.ToLower(ns.Ns))
		}
	}
	for i, rr := range rrs {
		h := rr.Header()
		cut := cutAbove(h.Name, origin, cuts)
		switch {
		case cut == "":
		case cut == h.Name && h.Rrtype != dns.TypeNS:
			bad(i, "%s is delegated (it has NS records); its %s records are the other servers' to give, not this zone's", h.Name, dns.TypeToString[h.Rrtype])
		case cut != h.Name && !((h.Rrtype == dns.TypeA || h.Rrtype == dns.TypeAAAA) && slices.Contains(cuts[cut], h.Name)):
			bad(i, "%s is below the delegation of %s; only the addresses of its name servers (glue) may stand there", h.Name, cut)
		}
		ns, ok := rr.(*dns.NS)
		if !ok {
			continue
		}
		t := strings.ToLower(ns.Ns)
		if dns.IsSubDomain(h.Name, t) && !hasAddress(rrs, t) {
			bad(i, "name server %s is inside the delegation it serves, so resolvers need its address from this zone: add \"%s A ...\" (glue)", t, t)
		}
		for _, m := range []struct {
			names map[string]bool
			what  string
		}{{served, "served name"}, {aliases, "alias"}, {glue, "name server of the zone"}} {
			for n := range m.names {
				if dns.IsSubDomain(h.Name, n) {
					bad(i, "delegating %s would hand the %s %s to the other servers", h.Name, m.what, n)
				}
			}
		}
	}
	cnames := map[string]string{}
	for _, rr := range rrs {
		if c, ok := rr.(*dns.CNAME); ok {
			cnames[c.Hdr.Name] = strings.ToLower(c.Target)
		}
	}
	for i, rr := range rrs {
		h := rr.Header()
		if h.Rrtype != dns.TypeCNAME {
			continue
		}
		if loop := cnameLoop(h.Name, cnames); loop != "" {
			bad(i, "CNAME loop %s; no name in it can be resolved", loop)
			continue
		}
		switch {
		case h.Name == origin:
			bad(i, "the apex cannot be a CNAME (it holds SOA and NS); use an A/AAAA, or make the apex a served name")
		case served[h.Name] || glue[h.Name]:
			bad(i, "%s also has other data (a served or name-server name); a CNAME must stand alone", h.Name)
		case len(owners[h.Name]) > 1:
			bad(i, "%s has other records; a CNAME must stand alone (RFC 1034 3.6.2)", h.Name)
		}
	}
	return out
}

// cnameLoop follows the CNAMEs of cnames (owner to lower-case target)
// from name and returns the loop it runs into, written "a -> b -> a", or
// "" when the chain ends.
func cnameLoop(name string, cnames map[string]string) string {
	seen := map[string]bool{}
	chain := []string{name}
	for n := name; ; {
		seen[n] = true
		t, ok := cnames[n]
		if !ok {
			return ""
		}
		chain = append(chain, t)
		if t == name {
			return strings.Join(chain, " -> ")
		}
		if seen[t] {
			return "" // a loop further on, reported for its own members
		}
		n = t
	}
}

// cutAbove returns the highest delegation point (a key of cuts) at or
// above name, below the apex origin; "" when name is not delegated. The
// highest, so that a delegation below another one is seen as lying in it.
func cutAbove(name, origin string, cuts map[string][]string) string {
	cut := ""
	for n := name; len(cuts) > 0 && len(n) > len(origin); {
		if _, ok := cuts[n]; ok {
			cut = n
		}
		i, end := dns.NextLabel(n, 0)
		if end {
			break
		}
		n = n[i:]
	}
	return cut
}

// hasAddress reports whether rrs hold an A or AAAA record owned by name.
func hasAddress(rrs []dns.RR, name string) bool {
	for _, rr := range rrs {
		h := rr.Header()
		if h.Name == name && (h.Rrtype == dns.TypeA || h.Rrtype == dns.TypeAAAA) {
			return true
		}
	}
	return false
}
