package tier

import (
	"encoding/binary"
	"fmt"
	"net/http"
	"time"
)

// Record versions. AppendMeta writes version 2; DecodeMeta reads both, as
// L2 and L3 keep records across restarts.
const (
	encodingV1 = 1
	encodingV2 = 2
)

// Version 2 is version 1 made smaller, because L1 holds one record per
// object in memory and a 1 KiB object's record was a quarter of its cost:
//   - common header names are one byte (a code into commonNames);
//   - an HTTP-date value (Date, Last-Modified, Expires) that formats back to
//     exactly the same bytes is stored as varint Unix seconds, and is
//     formatted again on decode, so the header still reads byte for byte;
//   - RequestTime is stored as its distance from ResponseTime.
//
// Layout: version, kind, flags; uvarint status; varint ResponseTime (ns);
// varint RequestTime-ResponseTime (ns); varint TTL; uvarint Gen; varint
// Size; string Site; string URL; uvarint count and strings of Vary; uvarint
// count of header lines, each a name (uvarint code: 0 then a string, or
// n for commonNames[n-1]) and a value (uvarint tag: 2*len then the bytes, or
// 1 then varint Unix seconds of an HTTP-date).

// commonNames lists header names in canonical form (as net/http stores
// them). Append only: codes are positions, and records on disk use them.
var commonNames = [...]string{
	"Accept-Ranges", "Access-Control-Allow-Origin", "Age", "Alt-Svc", "Cache-Control",
	"Cache-Tag", "Cdn-Cache-Control", "Content-Disposition", "Content-Encoding", "Content-Language",
	"Content-Length", "Content-Location", "Content-Range", "Content-Security-Policy", "Content-Type",
	"Cross-Origin-Resource-Policy", "Date", "Etag", "Expires", "Last-Modified",
	"Link", "Location", "Nel", "Permissions-Policy", "Pragma",
	"Referrer-Policy", "Report-To", "Server", "Server-Timing", "Set-Cookie",
	"Strict-Transport-Security", "Surrogate-Control", "Surrogate-Key", "Timing-Allow-Origin", "Vary",
	"Via", "X-Cache", "X-Content-Type-Options", "X-Frame-Options", "X-Powered-By",
	"X-Request-Id", "X-Xss-Protection",
}

// nameCode returns the code of a common header name, or 0.
func nameCode(k string) uint64 {
	for i, n := range commonNames {
		if n == k {
			return uint64(i + 1)
		}
	}
	return 0
}

// AppendMeta appends the compact binary encoding of m (version 2) to dst.
func AppendMeta(dst []byte, m *Meta) []byte {
	dst = append(dst, encodingV2, byte(m.Kind))
	var flags byte
	if m.Invalidated {
		flags |= 1
	}
	dst = append(dst, flags)
	dst = binary.AppendUvarint(dst, uint64(m.Status))
	resp := m.ResponseTime.UnixNano()
	dst = binary.AppendVarint(dst, resp)
	dst = binary.AppendVarint(dst, m.RequestTime.UnixNano()-resp)
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
		code := nameCode(k)
		for _, v := range vs {
			dst = binary.AppendUvarint(dst, code)
			if code == 0 {
				dst = appendString(dst, k)
			}
			if sec, ok := httpDate(v); ok {
				dst = binary.AppendUvarint(dst, 1)
				dst = binary.AppendVarint(dst, sec)
				continue
			}
			dst = binary.AppendUvarint(dst, 2*uint64(len(v)))
			dst = append(dst, v...)
		}
	}
	return dst
}

// httpDate reports whether v is an IMF-fixdate that formats back to exactly
// v, and its Unix seconds.
func httpDate(v string) (int64, bool) {
	if len(v) != len(http.TimeFormat) || v[len(v)-3:] != "GMT" {
		return 0, false
	}
	t, err := time.Parse(http.TimeFormat, v)
	if err != nil || t.Format(http.TimeFormat) != v {
		return 0, false
	}
	return t.Unix(), true
}

// DecodeMeta decodes a record produced by AppendMeta (or a version 1 record)
// and returns the bytes that follow it (the body, for tiers that store both
// in one buffer).
func DecodeMeta(b []byte) (*Meta, []byte, error) {
	if len(b) < 3 {
		return nil, nil, fmt.Errorf("%w: unknown version", errCorrupt)
	}
	switch b[0] {
	case encodingV1:
		return decodeV1(b)
	case encodingV2:
		return decodeV2(b)
	}
	return nil, nil, fmt.Errorf("%w: unknown version", errCorrupt)
}

func decodeV2(b []byte) (*Meta, []byte, error) {
	m := &Meta{Kind: Kind(b[1]), Invalidated: b[2]&1 != 0}
	d := decoder{b: b[3:]}
	m.Status = int(d.uvarint())
	resp := d.varint()
	m.ResponseTime = time.Unix(0, resp)
	m.RequestTime = time.Unix(0, resp+d.varint())
	m.TTL = time.Duration(d.varint())
	m.Gen = d.uvarint()
	m.Size = d.varint()
	// Site, URL and every header value are copied into one buffer that
	// becomes one string: a decode costs a handful of allocations, not one
	// per field.
	out := make([]byte, 0, len(d.b)+64)
	site := d.bytes()
	out = append(out, site...)
	url := d.bytes()
	out = append(out, url...)
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
	var stack [24]headerLine
	lines := stack[:0]
	for i := uint64(0); i < nh && d.err == nil; i++ {
		var l headerLine
		code := d.uvarint()
		switch {
		case code == 0:
			k := d.bytes()
			l.k0 = len(out)
			out = append(out, k...)
			l.k1 = len(out)
		case code <= uint64(len(commonNames)):
			l.name = commonNames[code-1]
		default:
			d.err = errCorrupt
		}
		tag := d.uvarint()
		l.v0 = len(out)
		switch {
		case d.err != nil:
		case tag == 1:
			out = time.Unix(d.varint(), 0).UTC().AppendFormat(out, http.TimeFormat)
		case tag%2 == 0 && tag/2 <= uint64(len(d.b)):
			out = append(out, d.b[:tag/2]...)
			d.b = d.b[tag/2:]
		default:
			d.err = errCorrupt
		}
		l.v1 = len(out)
		lines = append(lines, l)
	}
	if d.err != nil {
		return nil, nil, d.err
	}
	all := string(out)
	m.Site = all[:len(site)]
	m.URL = all[len(site) : len(site)+len(url)]
	m.Header = buildHeader(all, 0, lines)
	return m, d.b, nil
}

// headerLine locates one decoded header field: its name (a common name, or
// "" when the name is the text at [k0,k1)) and its value at [v0,v1) of the
// decoded string.
type headerLine struct {
	name   string
	k0, k1 int
	v0, v1 int
}

// buildHeader makes the header of lines, whose offsets are off bytes before
// their place in all; keys and values are views of all.
func buildHeader(all string, off int, lines []headerLine) http.Header {
	vals := make([]string, len(lines))
	h := make(http.Header, len(lines))
	for i, l := range lines {
		key := l.name
		if key == "" {
			key = all[off+l.k0 : off+l.k1]
		}
		vals[i] = all[off+l.v0 : off+l.v1]
		if prev, ok := h[key]; ok {
			// Full slices (len == cap) throughout: an append by a reader
			// must copy, never write into a slice others share.
			v := append(prev[:len(prev):len(prev)], vals[i])
			h[key] = v[:len(v):len(v)]
		} else {
			h[key] = vals[i : i+1 : i+1]
		}
	}
	return h
}
