package dnsrouter

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// ecs is a parsed, validated EDNS Client Subnet option (RFC 7871).
type ecs struct {
	family uint16
	source uint8
	addr   netip.Addr // masked to source bits
	raw    [16]byte   // address bytes as sent
	n      int        // number of address bytes as sent
}

var (
	errECSFamily  = errors.New("ECS: unknown address family")
	errECSPrefix  = errors.New("ECS: source prefix longer than the address family")
	errECSLength  = errors.New("ECS: address length does not match the source prefix")
	errECSBits    = errors.New("ECS: address bits set beyond the source prefix")
	errECSTwice   = errors.New("ECS: more than one option")
	errECSShort   = errors.New("ECS: option shorter than 4 bytes")
	errECSScope   = errors.New("ECS: scope prefix longer than the address family")
	errWireShort  = errors.New("message truncated")
	errWireLabel  = errors.New("bad label")
	errOPTOptions = errors.New("OPT: option overruns the record")
)

// findOPT walks a query that miekg/dns already unpacked and returns the
// RDATA of its OPT record as sent (nil when there is none). We need the raw
// bytes because the unpacked ECS option no longer shows how many address
// bytes came on the wire.
func findOPT(msg []byte) ([]byte, error) {
	if len(msg) < 12 {
		return nil, errWireShort
	}
	qd := int(binary.BigEndian.Uint16(msg[4:]))
	rr := int(binary.BigEndian.Uint16(msg[6:])) + int(binary.BigEndian.Uint16(msg[8:])) + int(binary.BigEndian.Uint16(msg[10:]))
	off := 12
	var err error
	for range qd {
		if off, err = skipName(msg, off); err != nil {
			return nil, err
		}
		off += 4
	}
	for range rr {
		if off, err = skipName(msg, off); err != nil {
			return nil, err
		}
		if off+10 > len(msg) {
			return nil, errWireShort
		}
		typ := binary.BigEndian.Uint16(msg[off:])
		rdlen := int(binary.BigEndian.Uint16(msg[off+8:]))
		off += 10
		if off+rdlen > len(msg) {
			return nil, errWireShort
		}
		if typ == 41 {
			return msg[off : off+rdlen], nil
		}
		off += rdlen
	}
	return nil, nil
}

func skipName(msg []byte, off int) (int, error) {
	for {
		if off >= len(msg) {
			return 0, errWireShort
		}
		b := int(msg[off])
		switch {
		case b == 0:
			return off + 1, nil
		case b&0xC0 == 0xC0:
			return off + 2, nil
		case b&0xC0 != 0:
			return 0, errWireLabel
		}
		off += 1 + b
	}
}

// parseECS extracts and validates the ECS option from OPT RDATA. It
// returns ok=false when there is none, and an error for every malformation
// RFC 7871 section 6 and 7.1.1 call a FORMERR.
func parseECS(rdata []byte) (e ecs, ok bool, err error) {
	for off := 0; off < len(rdata); {
		if off+4 > len(rdata) {
			return e, false, errOPTOptions
		}
		code := binary.BigEndian.Uint16(rdata[off:])
		l := int(binary.BigEndian.Uint16(rdata[off+2:]))
		off += 4
		if off+l > len(rdata) {
			return e, false, errOPTOptions
		}
		if code == optECS {
			if ok {
				return e, false, errECSTwice
			}
			if e, err = decodeECS(rdata[off : off+l]); err != nil {
				return e, false, err
			}
			ok = true
		}
		off += l
	}
	return e, ok, nil
}

// EDNS option codes the server reads.
const (
	optNSID = 3 // RFC 5001
	optECS  = 8 // RFC 7871
)

// hasOption reports whether OPT RDATA that parseECS accepted (so its
// options are well framed) carries an option with the given code.
func hasOption(rdata []byte, code uint16) bool {
	for off := 0; off+4 <= len(rdata); {
		if binary.BigEndian.Uint16(rdata[off:]) == code {
			return true
		}
		off += 4 + int(binary.BigEndian.Uint16(rdata[off+2:]))
	}
	return false
}

func decodeECS(b []byte) (ecs, error) {
	var e ecs
	if len(b) < 4 {
		return e, errECSShort
	}
	e.family = binary.BigEndian.Uint16(b)
	e.source = b[2]
	addr := b[4:]
	var max int
	switch e.family {
	case 1:
		max = 32
	case 2:
		max = 128
	case 0:
		// dig sends family 0 with source 0 and no address ("+subnet=0").
		if e.source == 0 && len(addr) == 0 {
			return e, nil
		}
		return e, errECSFamily
	default:
		return e, errECSFamily
	}
	if int(e.source) > max {
		return e, errECSPrefix
	}
	// A query's scope must be 0 (RFC 7871 6); one longer than the family
	// is malformed, and the general path's parser (miekg/dns) refuses it,
	// so refusing it here keeps both paths' answers the same.
	if int(b[3]) > max {
		return e, errECSScope
	}
	if len(addr) != (int(e.source)+7)/8 {
		return e, errECSLength
	}
	if r := e.source % 8; r != 0 && addr[len(addr)-1]&(0xFF>>r) != 0 {
		return e, errECSBits
	}
	e.n = copy(e.raw[:], addr)
	if e.family == 1 {
		e.addr = netip.AddrFrom4([4]byte(e.raw[:4]))
	} else {
		e.addr = netip.AddrFrom16(e.raw)
	}
	return e, nil
}
