// Package kit is the Meridian plugin kit for site owners writing plugins in
// Go. It hides the wire contract of plugins/README.md (contract version 1):
// a plugin declares its exports and hands a function to HandleRequest (and,
// optionally, HandleResponse):
//
//	//go:wasmexport on_request
//	func onRequest() int32 {
//		return kit.HandleRequest(func(req *kit.Request, act *kit.Actions) error {
//			act.SetRequestHeader("x-pop", req.PoP)
//			return nil
//		})
//	}
//
//	func main() {}
//
// Build with standard Go (without -buildmode=c-shared every export traps):
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o plugin.wasm .
//
// The kit is its own module (github.com/meridian-edge/meridian/plugins/kit)
// so the gateway's module never pulls wasm-only code. The encoding in this
// file is portable Go and tested on the build machine; host.go and
// extism.go talk to the host and build only for wasip1.
//
// The kit is written for speed inside wasm, where every host call and every
// allocation is expensive: it reads the request with few host calls and one
// buffer, hands out strings that are views of that buffer (never written
// again), and asks the host for each config key once per instance (an
// instance's config never changes).
package kit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"unsafe"
)

// ContractVersion is the plugins/README.md contract version the kit speaks.
const ContractVersion = 1

// Header is one header field; names arrive lower-case.
type Header struct {
	Name  string
	Value string
}

// Request is what on_request sees.
type Request struct {
	Method, Path, Query, Host string
	// Headers holds only the headers the site's chain entry asked for.
	Headers   []Header
	ClientIP  string
	Country   string // ISO 3166-1 alpha-2, empty if unknown
	Region    string
	PoP       string
	PoPRegion string
	// TimeUnixMs is the request time: the only clock a plugin has.
	TimeUnixMs int64
}

// Header returns the first value of the header name (case-insensitive).
func (r *Request) Header(name string) (string, bool) { return find(r.Headers, name) }

// Response is what on_response sees.
type Response struct {
	Status     int
	Headers    []Header
	TimeUnixMs int64
}

// Header returns the first value of the header name (case-insensitive).
func (r *Response) Header(name string) (string, bool) { return find(r.Headers, name) }

func find(hs []Header, name string) (string, bool) {
	for _, h := range hs {
		if strings.EqualFold(h.Name, name) {
			return h.Value, true
		}
	}
	return "", false
}

// Geo is a client location from the host.
type Geo struct {
	Country, Region string
	Lat, Lon        float64
}

// Actions collects what the plugin asks of the host. Calling nothing means
// continue unchanged.
type Actions struct {
	buf []byte
	err error
	// small holds the encoding of a typical action list, so building one
	// costs a single allocation (the Actions) instead of several slice
	// growths: allocation is most of a small Go plugin's time in wasm.
	small [actionsInline]byte
}

const actionsInline = 240

// NewActions returns an empty action list (used by tests; handlers get one).
func NewActions() *Actions {
	a := &Actions{}
	a.init()
	return a
}

// init empties the list (the kit reuses one Actions for every call).
func (a *Actions) init() { a.buf, a.err = append(a.small[:0], ContractVersion), nil }

// Bytes returns the encoded action list, or the first encoding error.
func (a *Actions) Bytes() ([]byte, error) { return a.buf, a.err }

// record appends one action: tag, u16 length, then prefix (0..8 bytes) and v.
func (a *Actions) record(tag byte, prefix []byte, v string) {
	n := len(prefix) + len(v)
	if n > 0xFFFF {
		a.refuse(tag, "", n)
		return
	}
	b := a.room(3 + n)
	l := len(b)
	b = b[:l+3+n]
	b[l], b[l+1], b[l+2] = tag, byte(n), byte(n>>8)
	copy(b[l+3+copy(b[l+3:], prefix):], v)
	a.buf = b
}

func (a *Actions) add(tag byte, v string) { a.record(tag, nil, v) }

// header appends a header action: tag, u16 length, u8 name length, name,
// value. Most plugins' hot path, so it is kept small: its rare paths are
// calls (refuse, grow). Between requests a plugin's code falls out of the
// CPU's caches, and Go's wasm code is large (this function was 19 KB of
// machine code with its error formatting inline).
func (a *Actions) header(tag byte, name, value string) {
	n := 1 + len(name) + len(value)
	if uint(len(name)-1) > 254 || n > 0xFFFF {
		a.refuse(tag, name, n)
		return
	}
	l := len(a.buf)
	if cap(a.buf)-l < 3+n {
		a.buf = grow(a.buf, 3+n)
	}
	// Growing the slice in place writes only its length: no write barrier
	// (a call in Go's wasm code while a collection runs).
	a.buf = a.buf[:l+3+n]
	b := a.buf
	// The head goes as one little-endian store (wasm is little-endian, as
	// are the machines the kit's tests run on: TestActionsEncoding checks
	// the bytes): room made the space, and index checks are calls (and
	// code) in Go's wasm output.
	p := unsafe.Add(unsafe.Pointer(unsafe.SliceData(b)), l)
	*(*uint32)(p) = uint32(tag) | uint32(n)<<8 | uint32(len(name))<<24
	copy(b[l+4+copy(b[l+4:], name):], value)
}

// room returns a.buf with room for n more bytes.
func (a *Actions) room(n int) []byte {
	if cap(a.buf)-len(a.buf) >= n {
		return a.buf
	}
	return grow(a.buf, n)
}

// grow returns b with room for n more bytes.
//
//go:noinline
func grow(b []byte, n int) []byte {
	return append(b, make([]byte, n)...)[:len(b)]
}

// refuse records why an action of n bytes (a header named name, when it
// is one) was not added; the first such error is the one reported.
//
//go:noinline
func (a *Actions) refuse(tag byte, name string, n int) {
	switch {
	case a.err != nil:
	case (tag == 0x01 || tag == 0x0A || tag == 0x0C) && (len(name) == 0 || len(name) > 255):
		a.err = fmt.Errorf("kit: header name %q must be 1..255 bytes", name)
	default:
		a.err = fmt.Errorf("kit: action 0x%02x value of %d bytes is over 65535", tag, n)
	}
}

// SetRequestHeader sets a request header sent on to the cache and origin.
func (a *Actions) SetRequestHeader(name, value string) { a.header(0x01, name, value) }

// RemoveRequestHeader removes a request header.
func (a *Actions) RemoveRequestHeader(name string) { a.add(0x02, name) }

// SetPath rewrites the request path (must start with /).
func (a *Actions) SetPath(path string) { a.add(0x03, path) }

// SetQuery rewrites the raw query (without ?).
func (a *Actions) SetQuery(query string) { a.add(0x04, query) }

// Origin chooses the site origin by name.
func (a *Actions) Origin(name string) { a.add(0x05, name) }

// CacheKey sets the cache key.
func (a *Actions) CacheKey(key string) { a.add(0x06, key) }

// CacheTTL sets how long the response may be cached, in seconds.
func (a *Actions) CacheTTL(seconds uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], seconds)
	a.record(0x07, b[:], "")
}

// NoStore forbids caching the response.
func (a *Actions) NoStore() { a.add(0x08, "") }

// Respond answers the request directly with status; the chain stops.
func (a *Actions) Respond(status int) {
	var b [2]byte
	binary.LittleEndian.PutUint16(b[:], uint16(status))
	a.record(0x09, b[:], "")
}

// RespondHeader adds a header to a direct answer.
func (a *Actions) RespondHeader(name, value string) { a.header(0x0A, name, value) }

// RespondBody appends to the body of a direct answer.
func (a *Actions) RespondBody(body string) {
	for len(body) > 0xFFFF {
		a.add(0x0B, body[:0xFFFF])
		body = body[0xFFFF:]
	}
	a.add(0x0B, body)
}

// SetResponseHeader sets a header on the response to the client (also
// allowed in on_request: it applies to the eventual response).
func (a *Actions) SetResponseHeader(name, value string) { a.header(0x0C, name, value) }

// RemoveResponseHeader removes a response header.
func (a *Actions) RemoveResponseHeader(name string) { a.add(0x0D, name) }

var errInput = errors.New("kit: input is not a Meridian v1 description; is the host speaking another contract version?")

// DecodeRequest parses on_request input. The result does not alias b.
func DecodeRequest(b []byte) (*Request, error) {
	r := &Request{}
	if err := decodeRequestInto(r, string(b)); err != nil {
		return nil, err
	}
	return r, nil
}

// decodeRequestInto parses on_request input held in s into r, which must be
// zero. Every string in the result is a substring of s, so decoding
// allocates only the header slice, when there are headers: allocation is
// much of a small Go plugin's time in wasm. It walks s once (twice with
// headers, to size their slice); on an error r may hold some fields.
func decodeRequestInto(r *Request, s string) error {
	if len(s) < 2 || s[0] != ContractVersion || s[1] != 1 {
		return errInput
	}
	s = s[2:]
	base := unsafe.Pointer(r)
	nh := 0
	sp := unsafe.Pointer(unsafe.StringData(s))
	for i := 0; i < len(s); {
		if len(s)-i < 3 {
			return errTruncated
		}
		// Read through a pointer: the check above covers the three bytes,
		// and index checks are calls (and code) in Go's wasm output.
		h := (*[3]byte)(unsafe.Add(sp, i))
		tag, l := h[0], int(h[1])|int(h[2])<<8
		i += 3
		if len(s)-i < l {
			return errTruncatedField
		}
		// A string field is stored through a table of offsets rather than
		// a switch: Go's wasm code has no jump tables, and the compare
		// chain was most of the decoding's time.
		if int(tag) < len(requestFields) {
			if off := requestFields[tag]; off != 0 {
				*(*string)(unsafe.Add(base, off-1)) = s[i : i+l]
			} else if tag == 0x05 {
				nh++
			} else if tag == 0x0B && l == 8 {
				r.TimeUnixMs = int64(le64(s[i:]))
			}
		}
		// Unknown tags are skipped: newer hosts may add fields.
		i += l
	}
	if nh == 0 {
		return nil // r.Headers is nil: r was zero
	}
	var err error
	r.Headers, err = collectHeaders(s, 0x05, nh)
	return err
}

// requestFields maps an on_request tag to 1 + the offset of its string
// field in Request (0: not a string field). It is never written.
var requestFields = [...]uintptr{
	0x01: 1 + unsafe.Offsetof(Request{}.Method),
	0x02: 1 + unsafe.Offsetof(Request{}.Path),
	0x03: 1 + unsafe.Offsetof(Request{}.Query),
	0x04: 1 + unsafe.Offsetof(Request{}.Host),
	0x06: 1 + unsafe.Offsetof(Request{}.ClientIP),
	0x07: 1 + unsafe.Offsetof(Request{}.Country),
	0x08: 1 + unsafe.Offsetof(Request{}.Region),
	0x09: 1 + unsafe.Offsetof(Request{}.PoP),
	0x0A: 1 + unsafe.Offsetof(Request{}.PoPRegion),
	0x0B: 0,
}

// DecodeResponse parses on_response input. The result does not alias b.
func DecodeResponse(b []byte) (*Response, error) {
	r := &Response{}
	if err := decodeResponseInto(r, string(b)); err != nil {
		return nil, err
	}
	return r, nil
}

// decodeResponseInto is decodeRequestInto for on_response input.
func decodeResponseInto(r *Response, s string) error {
	if len(s) < 2 || s[0] != ContractVersion || s[1] != 2 {
		return errInput
	}
	s = s[2:]
	nh := 0
	for i := 0; i < len(s); {
		tag, v, next, err := nextField(s, i)
		if err != nil {
			return err
		}
		i = next
		switch tag {
		case 0x10:
			if len(v) == 2 {
				r.Status = int(v[0]) | int(v[1])<<8
			}
		case 0x11:
			nh++
		case 0x0B:
			if len(v) == 8 {
				r.TimeUnixMs = int64(le64(v))
			}
		}
	}
	var err error
	r.Headers, err = collectHeaders(s, 0x11, nh)
	return err
}

// collectHeaders decodes the nh fields of s tagged tag (header fields, in
// a body whose framing was checked by the caller's first pass).
func collectHeaders(s string, tag byte, nh int) ([]Header, error) {
	if nh == 0 {
		return nil, nil
	}
	hs := make([]Header, 0, nh)
	for i := 0; i < len(s); {
		t, v, next, _ := nextField(s, i) // framing checked by the first pass
		i = next
		if t == tag {
			h, err := decodeHeader(v)
			if err != nil {
				return nil, err
			}
			hs = append(hs, h)
		}
	}
	return hs, nil
}

// DecodeGeo parses the meridian_geo answer.
func DecodeGeo(b []byte) (Geo, error) {
	var g Geo
	s := string(b)
	for i := 0; i < len(s); {
		tag, v, next, err := nextField(s, i)
		if err != nil {
			return Geo{}, err
		}
		i = next
		switch tag {
		case 0x07:
			g.Country = v
		case 0x08:
			g.Region = v
		case 0x20, 0x21:
			if len(v) != 8 {
				return g, errors.New("kit: bad coordinate")
			}
			f := math.Float64frombits(le64(v))
			if tag == 0x20 {
				g.Lat = f
			} else {
				g.Lon = f
			}
		}
	}
	return g, nil
}

func decodeHeader(v string) (Header, error) {
	if len(v) < 1 || int(v[0])+1 > len(v) {
		return Header{}, errors.New("kit: bad header record")
	}
	n := int(v[0])
	return Header{Name: v[1 : 1+n], Value: v[1+n:]}, nil
}

var (
	errTruncated      = errors.New("kit: truncated input")
	errTruncatedField = errors.New("kit: truncated input field")
)

// nextField returns the record at i of s (tag, u16 length, value) and the
// index of the next one, or an error when s ends inside the record.
func nextField(s string, i int) (tag byte, v string, next int, err error) {
	if len(s)-i < 3 {
		return 0, "", 0, errTruncated
	}
	l := int(s[i+1]) | int(s[i+2])<<8
	if len(s)-i-3 < l {
		return 0, "", 0, errTruncatedField
	}
	return s[i], s[i+3 : i+3+l], i + 3 + l, nil
}

func le64(v string) uint64 {
	_ = v[7]
	return uint64(v[0]) | uint64(v[1])<<8 | uint64(v[2])<<16 | uint64(v[3])<<24 |
		uint64(v[4])<<32 | uint64(v[5])<<40 | uint64(v[6])<<48 | uint64(v[7])<<56
}
