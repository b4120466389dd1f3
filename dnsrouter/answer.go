package dnsrouter

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/meridian-edge/meridian/dnsrouter/health"
	"github.com/miekg/dns"
)

// outcome describes one handled query for metrics and the query log.
type outcome struct {
	drop     bool // send nothing
	qtype    uint16
	rcode    int
	name     string
	pop      string // first PoP answered, "" when none
	ecs      bool
	failOpen bool
	spilled  bool
	shedder  string // the PoP that shed the query when spilled
	reason   string // why a query was refused or malformed
	kind     answerKind
	wildcard bool  // a wildcard answered (a name on the way, or the last)
	chased   uint8 // CNAMEs in our zones followed
}

// answerKind is what answered a query, for meridian_dns_answers_total
// and the query log.
type answerKind uint8

const (
	kindNone     answerKind = iota // refused, malformed, an error
	kindGeo                        // a geo-routed name's PoP addresses
	kindStatic                     // static records
	kindZone                       // the zone's SOA, NS or glue
	kindReferral                   // a delegation
	kindNegative                   // NXDOMAIN or NODATA
	numKinds
)

var kindNames = [numKinds]string{"none", "geo", "static", "zone", "referral", "negative"}

func (k answerKind) String() string { return kindNames[k] }

// answer turns one raw query into a packed response written into buf (which
// may be grown). src is the transport source address; udp selects the size
// rules. It never panics on hostile input: everything malformed becomes
// FORMERR or silence.
func answer(v *view, snap *health.Snapshot, raw []byte, src netip.Addr, udp bool, rnd uint64, buf []byte) ([]byte, outcome) {
	var out outcome
	if len(raw) < 12 {
		out.drop, out.reason = true, "shorter than a header"
		return nil, out
	}
	flags := binary.BigEndian.Uint16(raw[2:])
	if flags&0x8000 != 0 {
		out.drop, out.reason = true, "a response, not a query"
		return nil, out
	}
	opcode := int(flags>>11) & 0xF
	req := new(dns.Msg)
	err := req.Unpack(raw)
	if opcode != dns.OpcodeQuery {
		out.rcode, out.reason = dns.RcodeNotImplemented, "opcode "+dns.OpcodeToString[opcode]
		if err != nil || len(req.Question) > 1 {
			return headerOnly(raw, dns.RcodeNotImplemented, buf), out
		}
		var o *dns.OPT
		if req.IsEdns0() != nil {
			o = newOPT(v, req.IsEdns0())
		}
		return pack(reply(req, dns.RcodeNotImplemented, o), buf), out
	}
	if err != nil {
		out.rcode, out.reason = dns.RcodeFormatError, "unparsable: "+err.Error()
		return headerOnly(raw, dns.RcodeFormatError, buf), out
	}
	if len(req.Question) != 1 {
		out.rcode, out.reason = dns.RcodeFormatError, "question count is not 1"
		return headerOnly(raw, dns.RcodeFormatError, buf), out
	}
	q := req.Question[0]
	out.qtype = q.Qtype

	// EDNS (RFC 6891): at most one OPT, owned by the root.
	var opt *dns.OPT
	for _, rr := range req.Extra {
		if o, ok := rr.(*dns.OPT); ok {
			if opt != nil || o.Hdr.Name != "." {
				out.rcode, out.reason = dns.RcodeFormatError, "bad or repeated OPT record"
				return pack(reply(req, dns.RcodeFormatError, nil), buf), out
			}
			opt = o
		}
	}
	var ourOPT *dns.OPT
	if opt != nil {
		ourOPT = newOPT(v, opt)
		if opt.Version() != 0 {
			out.rcode, out.reason = dns.RcodeBadVers, "EDNS version"
			return pack(reply(req, dns.RcodeBadVers, ourOPT), buf), out
		}
	}
	var cs ecs
	hasECS := false
	if opt != nil {
		rd, err := findOPT(raw)
		if err == nil {
			cs, hasECS, err = parseECS(rd)
		}
		if err != nil {
			out.rcode, out.reason = dns.RcodeFormatError, err.Error()
			return pack(reply(req, dns.RcodeFormatError, ourOPT), buf), out
		}
	}
	out.ecs = hasECS
	if q.Qclass == dns.ClassCHAOS && v.nsidTXT != "" && isIdentityQuery(q) {
		// RFC 4892: the other way operators ask an anycast node its name
		// (dig CH TXT id.server), answered with the NSID.
		resp := reply(req, dns.RcodeSuccess, ourOPT)
		resp.Authoritative = true
		resp.Answer = []dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassCHAOS}, Txt: []string{v.nsidTXT}}}
		appendOPT(resp, ourOPT, cs, hasECS, 0)
		return sized(resp, opt, v, udp, buf), out
	}
	if q.Qclass != dns.ClassINET {
		out.rcode, out.reason = dns.RcodeRefused, "class "+dns.ClassToString[q.Qclass]
		return sized(reply(req, dns.RcodeRefused, ourOPT), opt, v, udp, buf), out
	}
	switch q.Qtype {
	case dns.TypeOPT:
		out.rcode, out.reason = dns.RcodeFormatError, "OPT as question type"
		return pack(reply(req, dns.RcodeFormatError, ourOPT), buf), out
	case dns.TypeAXFR, dns.TypeIXFR:
		out.rcode, out.reason = dns.RcodeRefused, "zone transfers are not offered"
		return sized(reply(req, dns.RcodeRefused, ourOPT), opt, v, udp, buf), out
	}
	name := strings.ToLower(q.Name)
	out.name = name
	z := v.findZone(name)
	if z == nil {
		out.rcode, out.reason = dns.RcodeRefused, "not in our zones"
		return sized(reply(req, dns.RcodeRefused, ourOPT), opt, v, udp, buf), out
	}

	resp := reply(req, dns.RcodeSuccess, ourOPT)
	resp.Authoritative = true
	scope := -1 // < 0: the answer did not depend on the client (scope 0)

	geoRecords := func(z *zone, node, owner string, qtype uint16) []dns.RR {
		client := src
		if hasECS && cs.source > 0 {
			client = cs.addr
		}
		_, rk, bits, _ := v.locate(client)
		c := v.choose(rk, snap, z.allowed[node], rnd)
		out.failOpen, out.spilled = c.failOpen, c.spilled
		if c.spilled {
			out.shedder = v.ids[c.shedder]
		}
		var rrs []dns.RR
		for k := 0; k < c.n; k++ {
			p := &v.pops[c.pops[k]]
			if qtype == dns.TypeAAAA {
				for _, a := range p.ipv6 {
					rrs = append(rrs, &dns.AAAA{Hdr: hdr(owner, dns.TypeAAAA, z.ttl), AAAA: a.AsSlice()})
				}
			} else {
				for _, a := range p.ipv4 {
					rrs = append(rrs, &dns.A{Hdr: hdr(owner, dns.TypeA, z.ttl), A: a.AsSlice()})
				}
			}
			if k == 0 && len(rrs) > 0 {
				out.pop = p.id
			}
		}
		// The scope holds for a NODATA too (the chosen PoP has no address
		// of this family): which PoP is chosen depends on where the client
		// is, so a resolver must not reuse that NODATA for clients
		// elsewhere, as it would with scope 0.
		if hasECS && cs.source > 0 {
			scope = v.scope(client, cs.source, bits)
		}
		return rrs
	}

	// Follow the name through the zones we serve: a static CNAME whose
	// target is ours is answered with the target's records too, as BIND,
	// Knot and PowerDNS do, saving the resolver a round trip per link.
	// The rcode and the negative answer's SOA are those of the last name
	// (RFC 6604); a target elsewhere is left to the resolver.
	owner := q.Name
	var data []dns.RR // the last name's records of the asked type
	referred := false
	for hop := 0; ; hop++ {
		st := v.lookup(z, name, q.Qtype == dns.TypeDS)
		if st.cut != "" {
			// Delegated: the other servers answer. After a CNAME, the
			// resolver follows it there itself.
			if hop == 0 {
				v.referral(resp, z, st.cut)
				referred = true
				out.kind = kindReferral
			} else {
				out.kind = kindStatic // the CNAMEs
			}
			data = resp.Answer
			break
		}
		node := st.node
		if node == "" {
			resp.Rcode = dns.RcodeNameError
			break
		}
		out.wildcard = out.wildcard || node != name
		if st.cname != nil {
			resp.Answer = append(resp.Answer, asAsked(st.cname, owner))
			if q.Qtype == dns.TypeCNAME || q.Qtype == dns.TypeANY || st.tz == nil || hop == maxChase {
				data = resp.Answer
				out.kind = kindStatic
				break
			}
			owner, name, z = st.cname.Target, st.target, st.tz
			out.chased++
			continue
		}
		var rrs []dns.RR
		rrs, data, out.kind = v.nodeData(z, node, owner, q.Qtype, geoRecords)
		if resp.Answer == nil {
			resp.Answer = rrs // the common case: no CNAME before, no copy
		} else {
			resp.Answer = append(resp.Answer, rrs...)
		}
		if q.Qtype == dns.TypeNS && node == z.apex {
			for _, ns := range z.ns {
				n := ns.(*dns.NS).Ns
				resp.Extra = append(resp.Extra, glueRecords(n, z.glue[n], dns.TypeA, z.nsTTL)...)
				resp.Extra = append(resp.Extra, glueRecords(n, z.glue[n], dns.TypeAAAA, z.nsTTL)...)
			}
		}
		break
	}
	if !referred && (resp.Rcode == dns.RcodeNameError || len(data) == 0) {
		out.kind = kindNegative
		// RFC 2308: the SOA goes in the authority section with
		// TTL min(SOA TTL, MINIMUM). The ECS scope stays 0 (NXDOMAIN, a
		// type the name never has) unless the geo choice made the answer
		// empty, see geoRecords.
		soa := *z.soa
		soa.Hdr.Ttl = z.negTTL
		resp.Ns = []dns.RR{&soa}
	}
	appendOPT(resp, ourOPT, cs, hasECS, uint8(max(scope, 0)))
	out.rcode = resp.Rcode
	return sized(resp, opt, v, udp, buf), out
}

// maxChase is how many CNAMEs in our zones an answer follows, as BIND's
// limit of the same purpose; a longer chain, or a loop through several
// zones, is answered as far as that and left to the resolver.
const maxChase = 8

// nodeData is the answer, owned by owner, to a query of qtype for node, a
// name of z that exists and is not a static CNAME: its static RRset, an
// alias's CNAME and its target's addresses, the nearest PoP for a
// geo-routed name, glue, SOA or NS. data is the part of rrs that answers
// qtype: empty for a NODATA, which for an alias whose target has no
// records of qtype still carries the CNAME.
func (v *view) nodeData(z *zone, node, owner string, qtype uint16, geoRecords func(z *zone, node, owner string, qtype uint16) []dns.RR) (rrs, data []dns.RR, kind answerKind) {
	static := z.static[node]
	if static[qtype] != nil {
		rrs = staticAnswer(static[qtype], owner)
		return rrs, rrs, kindStatic
	}
	if target, ok := z.alias[node]; ok {
		cname := &dns.CNAME{Hdr: hdr(owner, dns.TypeCNAME, z.ttl), Target: target}
		var addrs []dns.RR
		switch qtype {
		case dns.TypeCNAME:
			return []dns.RR{cname}, []dns.RR{cname}, kindGeo
		case dns.TypeA, dns.TypeAAAA:
			addrs = geoRecords(z, target, target, qtype)
		case dns.TypeANY:
			addrs = anyAddress(func(t uint16) []dns.RR { return geoRecords(z, target, target, t) })
		}
		return append([]dns.RR{cname}, addrs...), addrs, kindGeo
	}
	_, glue := z.glue[node]
	kind = kindZone
	switch qtype {
	case dns.TypeA, dns.TypeAAAA:
		if z.served[node] {
			rrs, kind = geoRecords(z, node, owner, qtype), kindGeo
		} else if glue {
			rrs = glueRecords(owner, z.glue[node], qtype, z.nsTTL)
		}
	case dns.TypeANY:
		// RFC 8482: answer ANY with one RRset rather than everything.
		switch {
		case z.served[node]:
			rrs, kind = anyAddress(func(t uint16) []dns.RR { return geoRecords(z, node, owner, t) }), kindGeo
		case node == z.apex:
			rrs = []dns.RR{asAsked(z.soa, owner)}
		case glue:
			rrs = anyAddress(func(t uint16) []dns.RR { return glueRecords(owner, z.glue[node], t, z.nsTTL) })
		case static != nil:
			rrs, kind = staticAnswer(anyStatic(static), owner), kindStatic
		}
	case dns.TypeSOA:
		if node == z.apex {
			rrs = []dns.RR{asAsked(z.soa, owner)}
		}
	case dns.TypeNS:
		if node == z.apex {
			for _, ns := range z.ns {
				rrs = append(rrs, asAsked(ns, owner))
			}
		}
	}
	return rrs, rrs, kind
}

// referral makes resp the answer for a name delegated at cut (RFC 1034
// 4.3.2): not authoritative, no answer, the cut's NS records in the
// authority section and, in the additional, the addresses our zones hold
// for those servers: the glue resolvers need when the servers are named
// under the cut, and what saves them a lookup otherwise (a static
// address, a zone's own name server).
func (v *view) referral(resp *dns.Msg, z *zone, cut string) {
	resp.Authoritative = false
	for _, rr := range z.static[cut][dns.TypeNS] {
		resp.Ns = append(resp.Ns, dns.Copy(rr))
		target := strings.ToLower(rr.(*dns.NS).Ns)
		tz := v.findZone(target)
		if tz == nil {
			continue
		}
		for _, t := range []uint16{dns.TypeA, dns.TypeAAAA} {
			for _, a := range tz.static[target][t] {
				resp.Extra = append(resp.Extra, dns.Copy(a))
			}
			resp.Extra = append(resp.Extra, glueRecords(target, tz.glue[target], t, tz.nsTTL)...)
		}
	}
}

// staticAnswer is a static RRset with its owner spelled as the query did.
func staticAnswer(rrs []dns.RR, qname string) []dns.RR {
	out := make([]dns.RR, len(rrs))
	for i, rr := range rrs {
		out[i] = asAsked(rr, qname)
	}
	return out
}

// anyStatic picks the one RRset an ANY query of a name with only static
// records gets (RFC 8482): addresses first, then the lowest type number,
// so that the answer is the same every time.
func anyStatic(static map[uint16][]dns.RR) []dns.RR {
	for _, t := range []uint16{dns.TypeA, dns.TypeAAAA} {
		if rrs := static[t]; rrs != nil {
			return rrs
		}
	}
	best := uint16(0)
	for t := range static {
		if best == 0 || t < best {
			best = t
		}
	}
	return static[best]
}

// appendOPT adds our OPT record, when the query had one, to resp's
// additional section, echoing the query's ECS option with scope sc when
// it carried one (RFC 7871 7.2.1).
func appendOPT(resp *dns.Msg, o *dns.OPT, cs ecs, hasECS bool, sc uint8) {
	if o == nil {
		return
	}
	if hasECS {
		o.Option = append(o.Option, echoECS(cs, sc))
	}
	resp.Extra = append(resp.Extra, o)
}

// newOPT is our OPT record for a query that carried theirs: version 0,
// our UDP size, the DO bit copied (RFC 3225), and our NSID when one is
// configured and theirs asks for it (RFC 5001). Every answer that carries
// an OPT builds it here, errors included.
func newOPT(v *view, theirs *dns.OPT) *dns.OPT {
	o := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
	o.SetUDPSize(uint16(v.opts.MaxUDPSize))
	if theirs.Do() {
		o.SetDo()
	}
	if v.nsid != "" {
		for _, e := range theirs.Option {
			if _, ok := e.(*dns.EDNS0_NSID); ok {
				o.Option = append(o.Option, &dns.EDNS0_NSID{Code: dns.EDNS0NSID, Nsid: v.nsid})
				break
			}
		}
	}
	return o
}

// isIdentityQuery reports whether q asks the server's identity: TXT (or
// ANY) for id.server (RFC 4892) or hostname.bind (BIND's older name), in
// class CH.
func isIdentityQuery(q dns.Question) bool {
	if q.Qtype != dns.TypeTXT && q.Qtype != dns.TypeANY {
		return false
	}
	n := strings.ToLower(q.Name)
	return n == "id.server." || n == "hostname.bind."
}

// txtString escapes b for a TXT string as miekg/dns packs it (presentation
// format: \DDD for anything but printable ASCII, \ and " escaped), so
// that the opaque NSID bytes reach the wire unchanged.
func txtString(b []byte) string {
	var sb strings.Builder
	for _, c := range b {
		switch {
		case c == '"' || c == '\\':
			sb.WriteByte('\\')
			sb.WriteByte(c)
		case c >= 0x20 && c < 0x7f:
			sb.WriteByte(c)
		default:
			fmt.Fprintf(&sb, "\\%03d", c)
		}
	}
	return sb.String()
}

// anyAddress is the one RRset an ANY query for a name with addresses gets
// (RFC 8482): the A records, or the AAAA records when there are none (an
// IPv6-only PoP), never an empty answer for a name that has data.
func anyAddress(records func(qtype uint16) []dns.RR) []dns.RR {
	if rrs := records(dns.TypeA); len(rrs) > 0 {
		return rrs
	}
	return records(dns.TypeAAAA)
}

// asAsked returns a copy of rr, whose owner is the QNAME but for case,
// owned by the QNAME as the query spelled it: every answer record owned by
// the QNAME then carries its case (0x20, RFC 4343), as the geo records do
// and as Knot, NSD and PowerDNS answer.
func asAsked(rr dns.RR, qname string) dns.RR {
	c := dns.Copy(rr)
	c.Header().Name = qname
	return c
}

func hdr(owner string, t uint16, ttl uint32) dns.RR_Header {
	return dns.RR_Header{Name: owner, Rrtype: t, Class: dns.ClassINET, Ttl: ttl}
}

func glueRecords(owner string, addrs []netip.Addr, qtype uint16, ttl uint32) []dns.RR {
	var rrs []dns.RR
	for _, a := range addrs {
		switch {
		case qtype == dns.TypeA && a.Is4():
			rrs = append(rrs, &dns.A{Hdr: hdr(owner, dns.TypeA, ttl), A: a.AsSlice()})
		case qtype == dns.TypeAAAA && a.Is6():
			rrs = append(rrs, &dns.AAAA{Hdr: hdr(owner, dns.TypeAAAA, ttl), AAAA: a.AsSlice()})
		}
	}
	return rrs
}

func echoECS(e ecs, scope uint8) *dns.EDNS0_SUBNET {
	o := &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: e.family, SourceNetmask: e.source, SourceScope: scope}
	switch e.family {
	case 1:
		o.Address = net.IP(e.raw[:4])
	case 2:
		o.Address = net.IP(e.raw[:16])
	}
	return o
}

// reply starts a response to req: same id, opcode, RD and CD bits, the
// question echoed exactly as asked, RA never set. opt (ours) is attached
// when the query had one.
func reply(req *dns.Msg, rcode int, opt *dns.OPT) *dns.Msg {
	m := &dns.Msg{}
	m.Id = req.Id
	m.Compress = true
	m.Response = true
	m.Opcode = req.Opcode
	m.RecursionDesired = req.RecursionDesired
	m.CheckingDisabled = req.CheckingDisabled
	m.Rcode = rcode
	m.Question = req.Question
	if rcode != dns.RcodeSuccess && opt != nil {
		m.Extra = []dns.RR{opt}
	}
	return m
}

// headerOnly answers a query we could not parse: its id, opcode and RD bit,
// the rcode, and no sections, so the reply is never larger than the query.
func headerOnly(raw []byte, rcode int, buf []byte) []byte {
	buf = append(buf[:0], raw[:12]...)
	flags := binary.BigEndian.Uint16(raw[2:])
	flags = 0x8000 | flags&(0xF<<11|0x0100) | uint16(rcode&0xF)
	binary.BigEndian.PutUint16(buf[2:], flags)
	for i := 4; i < 12; i++ {
		buf[i] = 0
	}
	return buf
}

func pack(m *dns.Msg, buf []byte) []byte {
	b, err := m.PackBuffer(buf)
	if err != nil {
		return nil
	}
	return b
}

// sized packs m within the size the transport allows: 512 bytes for UDP
// without EDNS, the client's advertised size (capped by MaxUDPSize) with
// it, 65535 over TCP. A UDP answer that does not fit is sent truncated
// (TC=1) so the client retries over TCP.
func sized(m *dns.Msg, opt *dns.OPT, v *view, udp bool, buf []byte) []byte {
	limit := dns.MaxMsgSize
	if udp {
		limit = dns.MinMsgSize
		if opt != nil {
			limit = max(dns.MinMsgSize, min(int(opt.UDPSize()), v.opts.MaxUDPSize))
		}
	}
	b := pack(m, buf)
	if len(b) <= limit {
		return b
	}
	m.Truncate(limit)
	if udp {
		// Truncate keeps what fits; we prefer BIND's rule (no partial
		// RRsets): header, question and OPT only, TC set.
		var keep []dns.RR
		for _, rr := range m.Extra {
			if rr.Header().Rrtype == dns.TypeOPT {
				keep = append(keep, rr)
			}
		}
		m.Answer, m.Ns, m.Extra = nil, nil, keep
		m.Truncated = true
	}
	return pack(m, buf)
}
