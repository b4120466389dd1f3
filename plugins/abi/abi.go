// Package abi owns the wire format between the Meridian host and a site
// owner's plugin: the request (or response) description the host writes as
// the Extism call input, and the actions the plugin writes as its output.
//
// The format is versioned (Version) and documented in plugins/README.md so a
// plugin in any Extism PDK language can implement it. It was chosen by
// measurement (BenchmarkEncodeRequest and BenchmarkDecodeActions in
// abi_test.go): for a typical request a tag/length/value layout is 283 bytes
// against 394 for JSON (actions: 46 against 99), encodes in 62 ns with no
// allocation against 1.4 µs and 14 allocations, and is trivial to parse in
// AssemblyScript, Rust or C. Every byte crosses the wasm boundary on every
// request.
//
// This package only encodes and decodes; it must not know about HTTP servers,
// wasm runtimes or policy (what an action means is the middleware's job).
package abi

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Version is the contract version written as the first byte of every input
// and expected as the first byte of every output.
const Version = 1

// Phase says which export is being called; it is the second byte of an input.
type Phase byte

// Phases of a request.
const (
	PhaseRequest  Phase = 1 // on_request
	PhaseResponse Phase = 2 // on_response
)

// MaxField is the largest value one field or action can carry (u16 length).
const MaxField = 0xFFFF

// Input field tags (host -> plugin).
const (
	TagMethod     = 0x01
	TagPath       = 0x02
	TagQuery      = 0x03
	TagHost       = 0x04
	TagHeader     = 0x05 // name length u8, lower-case name, value
	TagClientIP   = 0x06
	TagCountry    = 0x07
	TagRegion     = 0x08
	TagPoP        = 0x09
	TagPoPRegion  = 0x0A
	TagTimeUnixMs = 0x0B // u64 little endian
	TagStatus     = 0x10 // u16 little endian (response phase)
	TagRespHeader = 0x11 // like TagHeader (response phase)
	TagLat        = 0x20 // float64 bits little endian (geo host function)
	TagLon        = 0x21 // float64 bits little endian (geo host function)
)

// Action tags (plugin -> host).
const (
	ActSetRequestHeader    = 0x01 // name length u8, name, value
	ActRemoveRequestHeader = 0x02 // name
	ActSetPath             = 0x03
	ActSetQuery            = 0x04
	ActOrigin              = 0x05 // origin name
	ActCacheKey            = 0x06
	ActCacheTTL            = 0x07 // u32 little endian seconds
	ActNoStore             = 0x08 // empty
	ActRespondStatus       = 0x09 // u16 little endian; stops the chain
	ActRespondHeader       = 0x0A // name length u8, name, value
	ActRespondBody         = 0x0B // body chunk; chunks are concatenated
	ActSetResponseHeader   = 0x0C // name length u8, name, value
	ActRemoveResponseHdr   = 0x0D // name
)

// Header is one HTTP header field. Names are lower-case on the wire.
type Header struct {
	Name  string
	Value string
}

// Request is what on_request sees.
type Request struct {
	Method   string
	Path     string
	Query    string
	Host     string
	Headers  []Header // only the headers the plugin asked for
	ClientIP string
	// ClientAddr is written as the client IP when ClientIP is empty: a
	// host that has the address as a netip.Addr encodes it without
	// making a string per request.
	ClientAddr netip.Addr
	Country    string // ISO 3166-1 alpha-2, empty if unknown
	Region     string // subdivision code, empty if unknown
	PoP        string
	PoPRegion  string
	Time       time.Time // the only clock a plugin gets
}

// Response is what on_response sees.
type Response struct {
	Status  int
	Headers []Header // only the headers the plugin asked for
	Time    time.Time
}

// Geo is what the meridian_geo host function returns.
type Geo struct {
	Country string
	Region  string
	Lat     float64
	Lon     float64
}

// Actions is the decoded output of one call. Zero value = continue.
type Actions struct {
	SetRequestHeaders     []Header
	RemoveRequestHeaders  []string
	Path                  string
	RewritePath           bool
	Query                 string
	RewriteQuery          bool
	Origin                string
	CacheKey              string
	TTL                   time.Duration
	HasTTL                bool
	NoStore               bool
	Respond               bool // answer directly; the chain stops
	Status                int
	RespondHeaders        []Header
	Body                  []byte
	SetResponseHeaders    []Header
	RemoveResponseHeaders []string
}

// Reset clears a for reuse, keeping slice capacity. It assigns field by
// field: a whole-struct assignment is a bulk copy with write barriers,
// which costs more than the decoding of a short answer while the GC runs.
func (a *Actions) Reset() {
	a.SetRequestHeaders = a.SetRequestHeaders[:0]
	a.RemoveRequestHeaders = a.RemoveRequestHeaders[:0]
	a.RespondHeaders = a.RespondHeaders[:0]
	a.Body = a.Body[:0]
	a.SetResponseHeaders = a.SetResponseHeaders[:0]
	a.RemoveResponseHeaders = a.RemoveResponseHeaders[:0]
	if a.Path != "" {
		a.Path = ""
	}
	if a.Query != "" {
		a.Query = ""
	}
	if a.Origin != "" {
		a.Origin = ""
	}
	if a.CacheKey != "" {
		a.CacheKey = ""
	}
	a.RewritePath, a.RewriteQuery, a.HasTTL, a.NoStore, a.Respond = false, false, false, false, false
	a.TTL, a.Status = 0, 0
}

// ErrFieldTooLarge is returned when a value does not fit a u16 length.
var ErrFieldTooLarge = errors.New("abi: field longer than 65535 bytes")

func appendField(dst []byte, tag byte, v string) ([]byte, error) {
	if v == "" {
		return dst, nil
	}
	if len(v) > MaxField {
		return dst, fmt.Errorf("%w (tag 0x%02x)", ErrFieldTooLarge, tag)
	}
	dst = append(dst, tag, byte(len(v)), byte(len(v)>>8))
	return append(dst, v...), nil
}

func appendHeader(dst []byte, tag byte, h Header) ([]byte, error) {
	if len(h.Name) == 0 || len(h.Name) > 255 {
		return dst, fmt.Errorf("abi: header name %q must be 1..255 bytes", h.Name)
	}
	n := 1 + len(h.Name) + len(h.Value)
	if n > MaxField {
		return dst, fmt.Errorf("%w (header %s)", ErrFieldTooLarge, h.Name)
	}
	dst = append(dst, tag, byte(n), byte(n>>8), byte(len(h.Name)))
	dst = appendLower(dst, h.Name)
	return append(dst, h.Value...), nil
}

func appendLower(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

func appendU64(dst []byte, tag byte, v uint64) []byte {
	dst = append(dst, tag, 8, 0)
	return binary.LittleEndian.AppendUint64(dst, v)
}

// AppendRequest appends the on_request input for r to dst.
func AppendRequest(dst []byte, r *Request) ([]byte, error) {
	dst = append(dst, Version, byte(PhaseRequest))
	var err error
	for _, f := range [...]struct {
		tag byte
		v   string
	}{
		{TagMethod, r.Method}, {TagPath, r.Path}, {TagQuery, r.Query}, {TagHost, r.Host},
		{TagClientIP, r.ClientIP}, {TagCountry, r.Country}, {TagRegion, r.Region},
		{TagPoP, r.PoP}, {TagPoPRegion, r.PoPRegion},
	} {
		if f.tag == TagClientIP && f.v == "" && r.ClientAddr.IsValid() {
			dst = append(dst, TagClientIP, 0, 0)
			n := len(dst)
			dst = r.ClientAddr.AppendTo(dst)
			l := len(dst) - n
			if l > MaxField { // only an absurd IPv6 zone
				return dst[:n-3], fmt.Errorf("%w (client address)", ErrFieldTooLarge)
			}
			dst[n-2], dst[n-1] = byte(l), byte(l>>8)
			continue
		}
		if dst, err = appendField(dst, f.tag, f.v); err != nil {
			return dst, err
		}
	}
	for _, h := range r.Headers {
		if dst, err = appendHeader(dst, TagHeader, h); err != nil {
			return dst, err
		}
	}
	if !r.Time.IsZero() {
		dst = appendU64(dst, TagTimeUnixMs, uint64(r.Time.UnixMilli()))
	}
	return dst, nil
}

// AppendResponse appends the on_response input for r to dst.
func AppendResponse(dst []byte, r *Response) ([]byte, error) {
	dst = append(dst, Version, byte(PhaseResponse))
	dst = append(dst, TagStatus, 2, 0, byte(r.Status), byte(r.Status>>8))
	var err error
	for _, h := range r.Headers {
		if dst, err = appendHeader(dst, TagRespHeader, h); err != nil {
			return dst, err
		}
	}
	if !r.Time.IsZero() {
		dst = appendU64(dst, TagTimeUnixMs, uint64(r.Time.UnixMilli()))
	}
	return dst, nil
}

// AppendGeo appends the meridian_geo answer (no version/phase prefix).
func AppendGeo(dst []byte, g Geo) []byte {
	dst, _ = appendField(dst, TagCountry, clip(g.Country))
	dst, _ = appendField(dst, TagRegion, clip(g.Region))
	dst = appendU64(dst, TagLat, floatBits(g.Lat))
	return appendU64(dst, TagLon, floatBits(g.Lon))
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64]
	}
	return s
}

// DecodeError describes output a plugin should not have written.
type DecodeError struct {
	Offset int
	Reason string
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("plugin output is not a v%d action list (byte %d: %s); rebuild the plugin against plugins/README.md", Version, e.Offset, e.Reason)
}

// DecodeActions parses a plugin's output for phase into a (after a.Reset()).
// Empty output is an error: a plugin that returns success must write at least
// the version byte.
func DecodeActions(phase Phase, out []byte, a *Actions) error {
	whole := ""
	if len(out) > 1 && len(out) <= sharedStringMax {
		whole = string(out)
	}
	return decodeActions(phase, out, whole, a)
}

// ActionsMemo remembers a plugin instance's last small answer in one phase
// and what it decoded to. Plugins often answer the same bytes on every
// request (a header plugin sets the same headers); the same answer again is
// then a copy of the remembered actions, whose strings are views of the
// remembered answer: no allocation, and no second validation of bytes that
// were already checked. The zero value is ready; one memo serves one
// instance and one phase, never two at once.
type ActionsMemo struct {
	phase Phase
	out   string  // the last small answer that decoded, "" for none
	acts  Actions // out decoded (strings are views of out)
}

// DecodeActionsMemo is DecodeActions for a caller that keeps a memo per
// instance and phase (see ActionsMemo). A different small answer replaces
// the memo's.
func DecodeActionsMemo(phase Phase, out []byte, m *ActionsMemo, a *Actions) error {
	if len(out) <= 1 || len(out) > sharedStringMax {
		return DecodeActions(phase, out, a)
	}
	if m.phase == phase && m.out == string(out) { // compared without a copy
		a.copyFrom(&m.acts)
		return nil
	}
	m.phase, m.out = phase, string(out)
	if err := decodeActions(phase, out, m.out, a); err != nil {
		m.out = "" // never a hit
		return err
	}
	m.acts.copyFrom(a)
	return nil
}

// copyFrom makes a hold b's actions, in a's own slices (field by field, as
// Reset, for the write barriers).
func (a *Actions) copyFrom(b *Actions) {
	a.SetRequestHeaders = append(a.SetRequestHeaders[:0], b.SetRequestHeaders...)
	a.RemoveRequestHeaders = append(a.RemoveRequestHeaders[:0], b.RemoveRequestHeaders...)
	a.RespondHeaders = append(a.RespondHeaders[:0], b.RespondHeaders...)
	a.Body = append(a.Body[:0], b.Body...)
	a.SetResponseHeaders = append(a.SetResponseHeaders[:0], b.SetResponseHeaders...)
	a.RemoveResponseHeaders = append(a.RemoveResponseHeaders[:0], b.RemoveResponseHeaders...)
	if a.Path != b.Path {
		a.Path = b.Path
	}
	if a.Query != b.Query {
		a.Query = b.Query
	}
	if a.Origin != b.Origin {
		a.Origin = b.Origin
	}
	if a.CacheKey != b.CacheKey {
		a.CacheKey = b.CacheKey
	}
	a.RewritePath, a.RewriteQuery, a.TTL, a.HasTTL = b.RewritePath, b.RewriteQuery, b.TTL, b.HasTTL
	a.NoStore, a.Respond, a.Status = b.NoStore, b.Respond, b.Status
}

// decodeActions decodes out into a. whole, when set, holds exactly out's
// bytes, and the strings of the small answer are views of it (one copy for
// all instead of one per string); a large answer is copied per string so
// that a kept header does not keep a large body alive.
func decodeActions(phase Phase, out []byte, whole string, a *Actions) error {
	a.Reset()
	if len(out) == 0 {
		return &DecodeError{0, "empty output (a plugin must write at least the version byte)"}
	}
	if out[0] != Version {
		return &DecodeError{0, fmt.Sprintf("version %d, want %d", out[0], Version)}
	}
	str := func(lo, hi int) string {
		if whole != "" {
			return whole[lo:hi]
		}
		return string(out[lo:hi])
	}
	for i := 1; i < len(out); {
		if len(out)-i < 3 {
			return &DecodeError{i, "truncated action header"}
		}
		tag := out[i]
		n := int(binary.LittleEndian.Uint16(out[i+1:]))
		start := i
		i += 3
		if len(out)-i < n {
			return &DecodeError{start, fmt.Sprintf("action 0x%02x claims %d bytes, %d left", tag, n, len(out)-i)}
		}
		v := out[i : i+n]
		vs := func() string { return str(i-n, i) } // v as a string
		i += n
		if phase == PhaseResponse && !responseAllowed(tag) {
			return &DecodeError{start, fmt.Sprintf("action 0x%02x is not allowed in on_response", tag)}
		}
		switch tag {
		case ActSetRequestHeader, ActRespondHeader, ActSetResponseHeader:
			nl, err := checkHeader(v)
			if err != nil {
				return &DecodeError{start, err.Error()}
			}
			sv := vs()
			h := Header{Name: sv[1 : 1+nl], Value: sv[1+nl:]}
			switch tag {
			case ActSetRequestHeader:
				a.SetRequestHeaders = append(a.SetRequestHeaders, h)
			case ActRespondHeader:
				a.RespondHeaders = append(a.RespondHeaders, h)
			default:
				a.SetResponseHeaders = append(a.SetResponseHeaders, h)
			}
		case ActRemoveRequestHeader, ActRemoveResponseHdr:
			if !validToken(v) {
				return &DecodeError{start, fmt.Sprintf("bad header name %q", v)}
			}
			if tag == ActRemoveRequestHeader {
				a.RemoveRequestHeaders = append(a.RemoveRequestHeaders, vs())
			} else {
				a.RemoveResponseHeaders = append(a.RemoveResponseHeaders, vs())
			}
		case ActSetPath:
			if len(v) == 0 || v[0] != '/' || !validText(v) {
				return &DecodeError{start, fmt.Sprintf("path %q must start with / and hold no control bytes", v)}
			}
			a.Path, a.RewritePath = vs(), true
		case ActSetQuery:
			if !validText(v) || strings.ContainsAny(string(v), "# ") {
				return &DecodeError{start, fmt.Sprintf("bad query %q", v)}
			}
			a.Query, a.RewriteQuery = vs(), true
		case ActOrigin:
			if len(v) == 0 || !validText(v) {
				return &DecodeError{start, "empty or invalid origin name"}
			}
			a.Origin = vs()
		case ActCacheKey:
			if len(v) == 0 || !validText(v) {
				return &DecodeError{start, "empty or invalid cache key"}
			}
			a.CacheKey = vs()
		case ActCacheTTL:
			if n != 4 {
				return &DecodeError{start, fmt.Sprintf("cache TTL needs 4 bytes, got %d", n)}
			}
			a.TTL, a.HasTTL = time.Duration(binary.LittleEndian.Uint32(v))*time.Second, true
		case ActNoStore:
			a.NoStore = true
		case ActRespondStatus:
			if n != 2 {
				return &DecodeError{start, fmt.Sprintf("status needs 2 bytes, got %d", n)}
			}
			s := int(binary.LittleEndian.Uint16(v))
			if s < 100 || s > 999 {
				return &DecodeError{start, fmt.Sprintf("status %d out of range", s)}
			}
			a.Respond, a.Status = true, s
		case ActRespondBody:
			a.Body = append(a.Body, v...)
		default:
			return &DecodeError{start, fmt.Sprintf("unknown action 0x%02x", tag)}
		}
	}
	if !a.Respond && (len(a.RespondHeaders) > 0 || len(a.Body) > 0) {
		return &DecodeError{len(out), "respond headers or body without a respond status"}
	}
	return nil
}

func responseAllowed(tag byte) bool {
	switch tag {
	case ActCacheTTL, ActNoStore, ActSetResponseHeader, ActRemoveResponseHdr:
		return true
	}
	return false
}

// sharedStringMax is the largest answer whose strings share one copy.
const sharedStringMax = 4 << 10

// decodeHeader decodes a header record.
func decodeHeader(v []byte) (Header, error) {
	nl, err := checkHeader(v)
	if err != nil {
		return Header{}, err
	}
	return Header{Name: string(v[1 : 1+nl]), Value: string(v[1+nl:])}, nil
}

// checkHeader checks a header record (name length, name, value) and
// returns the name's length.
func checkHeader(v []byte) (int, error) {
	if len(v) < 2 {
		return 0, errors.New("header record too short")
	}
	nl := int(v[0])
	if nl == 0 || 1+nl > len(v) {
		return 0, fmt.Errorf("header name length %d does not fit record of %d bytes", nl, len(v))
	}
	name, val := v[1:1+nl], v[1+nl:]
	if !validToken(name) {
		return 0, fmt.Errorf("bad header name %q", name)
	}
	for _, c := range val {
		if (c < 0x20 && c != '\t') || c == 0x7f {
			return 0, fmt.Errorf("header %s value holds control bytes", name)
		}
	}
	return nl, nil
}

// validToken reports whether b is an RFC 9110 token (header name).
func validToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !isTokenChar(c) {
			return false
		}
	}
	return true
}

// Token bytes as bit sets (bytes 0-63 and 64-127): visible ASCII except
// the delimiters "(),/:;<=>?@[\]{}. Header names are checked on every
// plugin answer; this is a shift and a mask per byte.
const (
	tokenLo = 0x3ff6cfa00000000
	tokenHi = 0x57ffffffc7fffffe
)

func isTokenChar(c byte) bool {
	if c < 64 {
		return tokenLo>>c&1 != 0
	}
	return c < 128 && tokenHi>>(c-64)&1 != 0
}

func validText(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}

// DecodeGeo parses a meridian_geo answer; used by tests and other hosts.
func DecodeGeo(b []byte) (Geo, error) {
	var g Geo
	err := walk(b, func(tag byte, v []byte) error {
		switch tag {
		case TagCountry:
			g.Country = string(v)
		case TagRegion:
			g.Region = string(v)
		case TagLat, TagLon:
			if len(v) != 8 {
				return fmt.Errorf("coordinate needs 8 bytes")
			}
			f := floatFrom(binary.LittleEndian.Uint64(v))
			if tag == TagLat {
				g.Lat = f
			} else {
				g.Lon = f
			}
		}
		return nil
	})
	return g, err
}

// DecodeRequest parses an on_request input. Hosts do not need it; it exists
// for tests and for the differential test of issue 8.
func DecodeRequest(b []byte) (Request, error) {
	var r Request
	if len(b) < 2 || b[0] != Version || Phase(b[1]) != PhaseRequest {
		return r, errors.New("abi: not a v1 request input")
	}
	err := walk(b[2:], func(tag byte, v []byte) error {
		switch tag {
		case TagMethod:
			r.Method = string(v)
		case TagPath:
			r.Path = string(v)
		case TagQuery:
			r.Query = string(v)
		case TagHost:
			r.Host = string(v)
		case TagHeader:
			h, err := decodeHeader(v)
			if err != nil {
				return err
			}
			r.Headers = append(r.Headers, h)
		case TagClientIP:
			r.ClientIP = string(v)
		case TagCountry:
			r.Country = string(v)
		case TagRegion:
			r.Region = string(v)
		case TagPoP:
			r.PoP = string(v)
		case TagPoPRegion:
			r.PoPRegion = string(v)
		case TagTimeUnixMs:
			if len(v) != 8 {
				return errors.New("time needs 8 bytes")
			}
			r.Time = time.UnixMilli(int64(binary.LittleEndian.Uint64(v)))
		}
		return nil
	})
	return r, err
}

func walk(b []byte, fn func(tag byte, v []byte) error) error {
	for i := 0; i < len(b); {
		if len(b)-i < 3 {
			return fmt.Errorf("abi: truncated field at byte %d", i)
		}
		n := int(binary.LittleEndian.Uint16(b[i+1:]))
		if len(b)-i-3 < n {
			return fmt.Errorf("abi: field at byte %d claims %d bytes", i, n)
		}
		if err := fn(b[i], b[i+3:i+3+n]); err != nil {
			return err
		}
		i += 3 + n
	}
	return nil
}
