package tier

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"time"
)

const encodingVersion = 1

// errCorrupt is returned for a record that cannot be decoded; tiers treat it as
// a miss and drop the record.
var errCorrupt = errors.New("cache tier: corrupt record")

// AppendMeta appends the compact binary encoding of m to dst: varints for
// numbers, length-prefixed strings, one entry per header line.
func AppendMeta(dst []byte, m *Meta) []byte {
	dst = append(dst, encodingVersion, byte(m.Kind))
	var flags byte
	if m.Invalidated {
		flags |= 1
	}
	dst = append(dst, flags)
	dst = binary.AppendUvarint(dst, uint64(m.Status))
	dst = binary.AppendVarint(dst, m.RequestTime.UnixNano())
	dst = binary.AppendVarint(dst, m.ResponseTime.UnixNano())
	dst = binary.AppendVarint(dst, int64(m.TTL))
	dst = binary.AppendUvarint(dst, m.Gen)
	dst = binary.AppendVarint(dst, m.Size)
	dst = appendString(dst, m.Site)
	dst = appendString(dst, m.URL)
	dst = binary.AppendUvarint(dst, uint64(len(m.Vary)))
	for _, v := range m.Vary {
		dst = appendString(dst, v)
	}
	n := 0
	for _, vs := range m.Header {
		n += len(vs)
	}
	dst = binary.AppendUvarint(dst, uint64(n))
	for k, vs := range m.Header {
		for _, v := range vs {
			dst = appendString(dst, k)
			dst = appendString(dst, v)
		}
	}
	return dst
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errCorrupt
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errCorrupt
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	l := d.uvarint()
	if d.err != nil {
		return nil
	}
	if l > uint64(len(d.b)) {
		d.err = errCorrupt
		return nil
	}
	s := d.b[:l]
	d.b = d.b[l:]
	return s
}

// DecodeMeta decodes a record produced by AppendMeta and returns the bytes
// that follow it (the body, for tiers that store both in one buffer).
func DecodeMeta(b []byte) (*Meta, []byte, error) {
	if len(b) < 3 || b[0] != encodingVersion {
		return nil, nil, fmt.Errorf("%w: unknown version", errCorrupt)
	}
	m := &Meta{Kind: Kind(b[1]), Invalidated: b[2]&1 != 0}
	d := decoder{b: b[3:]}
	m.Status = int(d.uvarint())
	m.RequestTime = time.Unix(0, d.varint())
	m.ResponseTime = time.Unix(0, d.varint())
	m.TTL = time.Duration(d.varint())
	m.Gen = d.uvarint()
	m.Size = d.varint()
	m.Site = string(d.bytes())
	m.URL = string(d.bytes())
	nv := d.uvarint()
	if nv > uint64(len(d.b)) {
		return nil, nil, errCorrupt
	}
	for i := uint64(0); i < nv && d.err == nil; i++ {
		m.Vary = append(m.Vary, string(d.bytes()))
	}
	nh := d.uvarint()
	if nh > uint64(len(d.b)) {
		return nil, nil, errCorrupt
	}
	// Decode header lines as offsets into one string: a hit then costs a
	// handful of allocations instead of two per header line.
	start := d.b
	type line struct{ k0, k1, v0, v1 int }
	var stack [24]line
	lines := stack[:0]
	for i := uint64(0); i < nh && d.err == nil; i++ {
		k := d.bytes()
		v := d.bytes()
		if d.err != nil {
			break
		}
		ko := len(start) - len(d.b) - len(v) - len(k) - uvarintLen(uint64(len(v)))
		vo := len(start) - len(d.b) - len(v)
		lines = append(lines, line{ko, ko + len(k), vo, vo + len(v)})
	}
	if d.err != nil {
		return nil, nil, d.err
	}
	all := string(start[:len(start)-len(d.b)])
	vals := make([]string, len(lines))
	m.Header = make(http.Header, len(lines))
	for i, l := range lines {
		key := all[l.k0:l.k1]
		vals[i] = all[l.v0:l.v1]
		if prev, ok := m.Header[key]; ok {
			m.Header[key] = append(prev[:len(prev):len(prev)], vals[i])
		} else {
			m.Header[key] = vals[i : i+1 : i+1]
		}
	}
	if d.err != nil {
		return nil, nil, d.err
	}
	return m, d.b, nil
}

// Clone returns a deep copy of m, so a caller can change headers safely.
func (m *Meta) Clone() *Meta {
	c := *m
	c.Header = m.Header.Clone()
	c.Vary = append([]string(nil), m.Vary...)
	return &c
}
