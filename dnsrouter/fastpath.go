package dnsrouter

import (
	"encoding/binary"
	"net/netip"

	"github.com/meridian-edge/meridian/dnsrouter/health"
	"github.com/miekg/dns"
)

// fastEntry is what the fast path needs to know about a geo-routed name.
type fastEntry struct {
	z       *zone
	allowed []bool // the PoPs that may answer the name; nil: all
}

// fastWildcard finds the zone whose geo-routed wildcard answers wire, a
// lower-case wire-form name that is not itself geo-routed: one that does
// not exist and whose closest existing ancestor is a wildcard's parent.
func (v *view) fastWildcard(wire []byte) (fastEntry, bool) {
	if len(v.fastWild) == 0 || v.fastNodes[string(wire)] {
		return fastEntry{}, false
	}
	for len(wire) > 1 {
		wire = wire[1+int(wire[0]):]
		if v.fastNodes[string(wire)] {
			e, ok := v.fastWild[string(wire)]
			return e, ok
		}
	}
	return fastEntry{}, false
}

// wireLower returns the lower-cased wire form of a domain name as the fast
// path sees it ("\x03www\x07example\x04test\x00"), or ok=false for names it
// leaves to the general path.
func wireLower(name string) (string, bool) {
	b := make([]byte, 0, len(name)+2)
	labels := dns.SplitDomainName(name)
	for _, l := range labels {
		if len(l) == 0 || len(l) > 63 {
			return "", false
		}
		b = append(b, byte(len(l)))
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !plainByte(c) {
				return "", false
			}
			b = append(b, lower(c))
		}
	}
	return string(append(b, 0)), true
}

func plainByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// fastAnswer answers the common query straight from and to wire bytes,
// without allocating: one question, A or AAAA, class IN, for a geo-routed
// name, optionally with an OPT record (version 0) carrying ECS, and an
// answer that fits. ok=false means "not that case": the caller uses the
// general path (answer), which handles everything, including every error.
// The fuzz test checks that both paths give the same response.
func fastAnswer(v *view, snap *health.Snapshot, raw []byte, src netip.Addr, udp bool, rnd uint64, buf []byte) ([]byte, outcome, bool) {
	var out outcome
	if len(raw) < 12+5 {
		return nil, out, false
	}
	flags := binary.BigEndian.Uint16(raw[2:])
	// Only RD and CD may be set (QR, opcode, AA, TC, RA, Z, AD and rcode
	// must be 0); anything else is rare and left to the general path.
	if flags&0xFEEF != 0 || binary.BigEndian.Uint16(raw[4:]) != 1 || binary.BigEndian.Uint32(raw[6:]) != 0 {
		return nil, out, false
	}
	ar := binary.BigEndian.Uint16(raw[10:])
	if ar > 1 {
		return nil, out, false
	}
	var name [256]byte
	n, off := 0, 12
	for {
		if off >= len(raw) {
			return nil, out, false
		}
		l := int(raw[off])
		if l == 0 {
			break
		}
		if l > 63 || off+1+l > len(raw) || n+1+l > 254 {
			return nil, out, false
		}
		name[n] = byte(l)
		for i := 1; i <= l; i++ {
			c := raw[off+i]
			if !plainByte(c) {
				return nil, out, false
			}
			name[n+i] = lower(c)
		}
		n += 1 + l
		off += 1 + l
	}
	name[n] = 0
	n++
	off++
	if off+4 > len(raw) {
		return nil, out, false
	}
	qtype := binary.BigEndian.Uint16(raw[off:])
	if (qtype != dns.TypeA && qtype != dns.TypeAAAA) || binary.BigEndian.Uint16(raw[off+2:]) != dns.ClassINET {
		return nil, out, false
	}
	qend := off + 4
	e, found := v.fast[string(name[:n])]
	if !found {
		if e, found = v.fastWildcard(name[:n]); !found {
			return nil, out, false
		}
		out.wildcard = true
	}

	// The additional section: nothing, or exactly one well-formed OPT.
	hasOPT, do, size := false, false, 0
	var cs ecs
	hasECS := false
	if ar == 1 {
		o := qend
		if o+11 > len(raw) || raw[o] != 0 || binary.BigEndian.Uint16(raw[o+1:]) != dns.TypeOPT || raw[o+6] != 0 {
			return nil, out, false
		}
		rdlen := int(binary.BigEndian.Uint16(raw[o+9:]))
		if o+11+rdlen != len(raw) || raw[o+5] != 0 { // extended rcode must be 0 in a query
			return nil, out, false
		}
		var err error
		if cs, hasECS, err = parseECS(raw[o+11:]); err != nil {
			return nil, out, false
		}
		if v.nsid != "" && hasOption(raw[o+11:], optNSID) {
			return nil, out, false // rare (dig +nsid): the general path adds it
		}
		hasOPT = true
		size = int(binary.BigEndian.Uint16(raw[o+3:]))
		do = raw[o+7]&0x80 != 0
	} else if qend != len(raw) {
		return nil, out, false
	}

	client := src
	if hasECS && cs.source > 0 {
		client = cs.addr
	}
	_, rk, bits, _ := v.locate(client)
	c := v.choose(rk, snap, e.allowed, rnd)

	// Header and question, as asked.
	b := append(buf[:0], raw[:qend]...)
	b[2] = 0x84 | raw[2]&0x01 // QR, AA, RD copied
	b[3] = raw[3] & 0x10      // CD copied, RA never, rcode NOERROR
	b[10], b[11] = 0, 0
	if hasOPT {
		b[11] = 1
	}
	count := 0
	pop := ""
	for k := 0; k < c.n; k++ {
		p := &v.pops[c.pops[k]]
		list := p.ipv4
		if qtype == dns.TypeAAAA {
			list = p.ipv6
		}
		for _, a := range list {
			b = append(b, 0xC0, 12, byte(qtype>>8), byte(qtype), 0, 1,
				byte(e.z.ttl>>24), byte(e.z.ttl>>16), byte(e.z.ttl>>8), byte(e.z.ttl))
			if qtype == dns.TypeA {
				a4 := a.As4()
				b = append(b, 0, 4)
				b = append(b, a4[:]...)
			} else {
				a16 := a.As16()
				b = append(b, 0, 16)
				b = append(b, a16[:]...)
			}
			count++
		}
		if k == 0 && count > 0 {
			pop = p.id
		}
	}
	if count == 0 {
		return nil, out, false // NODATA: the general path writes the SOA
	}
	binary.BigEndian.PutUint16(b[6:], uint16(count))
	if hasOPT {
		var fl byte
		if do {
			fl = 0x80
		}
		b = append(b, 0, 0, 41, byte(v.opts.MaxUDPSize>>8), byte(v.opts.MaxUDPSize), 0, 0, fl, 0)
		if hasECS {
			scope := 0
			if cs.source > 0 {
				scope = v.scope(client, cs.source, bits)
			}
			l := 4 + cs.n
			b = append(b, 0, byte(4+l), 0, 8, 0, byte(l), byte(cs.family>>8), byte(cs.family), cs.source, byte(scope))
			b = append(b, cs.raw[:cs.n]...)
		} else {
			b = append(b, 0, 0)
		}
	}
	limit := dns.MaxMsgSize
	if udp {
		limit = dns.MinMsgSize
		if hasOPT {
			limit = max(dns.MinMsgSize, min(size, v.opts.MaxUDPSize))
		}
	}
	if len(b) > limit {
		return nil, out, false // the general path truncates
	}
	out.qtype, out.pop, out.ecs, out.kind = qtype, pop, hasECS, kindGeo
	out.failOpen, out.spilled = c.failOpen, c.spilled
	if c.spilled {
		out.shedder = v.ids[c.shedder]
	}
	return b, out, true
}
