package tier

import (
	"time"
)

// decodeV1 decodes a version 1 record (written before version 2; L2 and L3
// may still hold them).
func decodeV1(b []byte) (*Meta, []byte, error) {
	m := &Meta{Kind: Kind(b[1]), Invalidated: b[2]&1 != 0}
	d := decoder{b: b[3:]}
	m.Status = int(d.uvarint())
	m.RequestTime = time.Unix(0, d.varint())
	m.ResponseTime = time.Unix(0, d.varint())
	m.TTL = time.Duration(d.varint())
	m.Gen = d.uvarint()
	m.Size = d.varint()
	// Site, URL and header lines become substrings of one string: a hit
	// then costs a handful of allocations instead of one per field.
	base := d.b
	site := d.bytes()
	siteOff := len(base) - len(d.b) - len(site)
	url := d.bytes()
	urlOff := len(base) - len(d.b) - len(url)
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
	start := d.b
	var stack [24]headerLine
	lines := stack[:0]
	for i := uint64(0); i < nh && d.err == nil; i++ {
		k := d.bytes()
		v := d.bytes()
		if d.err != nil {
			break
		}
		ko := len(start) - len(d.b) - len(v) - len(k) - uvarintLen(uint64(len(v)))
		vo := len(start) - len(d.b) - len(v)
		lines = append(lines, headerLine{k0: ko, k1: ko + len(k), v0: vo, v1: vo + len(v)})
	}
	if d.err != nil {
		return nil, nil, d.err
	}
	all := string(base[:len(base)-len(d.b)])
	m.Site = all[siteOff : siteOff+len(site)]
	m.URL = all[urlOff : urlOff+len(url)]
	m.Header = buildHeader(all, len(base)-len(start), lines) // the lines' offsets are from start
	return m, d.b, nil
}
