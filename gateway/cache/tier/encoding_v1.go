package tier

import (
	"net/http"
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
	all := string(base[:len(base)-len(d.b)])
	m.Site = all[siteOff : siteOff+len(site)]
	m.URL = all[urlOff : urlOff+len(url)]
	hdr := len(base) - len(start) // offset of the header lines in all
	for i := range lines {
		lines[i].k0 += hdr
		lines[i].k1 += hdr
		lines[i].v0 += hdr
		lines[i].v1 += hdr
	}
	vals := make([]string, len(lines))
	m.Header = make(http.Header, len(lines))
	for i, l := range lines {
		key := all[l.k0:l.k1]
		vals[i] = all[l.v0:l.v1]
		if prev, ok := m.Header[key]; ok {
			// Full slices (len == cap) throughout: an append by a reader
			// must copy, never write into a slice others share.
			v := append(prev[:len(prev):len(prev)], vals[i])
			m.Header[key] = v[:len(v):len(v)]
		} else {
			m.Header[key] = vals[i : i+1 : i+1]
		}
	}
	if d.err != nil {
		return nil, nil, d.err
	}
	return m, d.b, nil
}
