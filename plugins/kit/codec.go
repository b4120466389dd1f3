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
// file is portable Go and tested on the build machine; host.go talks to the
// host and builds only for wasip1.
package kit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
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
}

// NewActions returns an empty action list (used by tests; handlers get one).
func NewActions() *Actions { return &Actions{buf: []byte{ContractVersion}} }

// Bytes returns the encoded action list, or the first encoding error.
func (a *Actions) Bytes() ([]byte, error) { return a.buf, a.err }

func (a *Actions) add(tag byte, v ...string) {
	n := 0
	for _, s := range v {
		n += len(s)
	}
	if n > 0xFFFF {
		if a.err == nil {
			a.err = fmt.Errorf("kit: action 0x%02x value of %d bytes is over 65535", tag, n)
		}
		return
	}
	a.buf = append(a.buf, tag, byte(n), byte(n>>8))
	for _, s := range v {
		a.buf = append(a.buf, s...)
	}
}

func (a *Actions) header(tag byte, name, value string) {
	if len(name) == 0 || len(name) > 255 {
		if a.err == nil {
			a.err = fmt.Errorf("kit: header name %q must be 1..255 bytes", name)
		}
		return
	}
	a.add(tag, string([]byte{byte(len(name))}), name, value)
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
	a.add(0x07, string(binary.LittleEndian.AppendUint32(nil, seconds)))
}

// NoStore forbids caching the response.
func (a *Actions) NoStore() { a.add(0x08) }

// Respond answers the request directly with status; the chain stops.
func (a *Actions) Respond(status int) {
	a.add(0x09, string(binary.LittleEndian.AppendUint16(nil, uint16(status))))
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

// DecodeRequest parses on_request input.
func DecodeRequest(b []byte) (*Request, error) {
	if len(b) < 2 || b[0] != ContractVersion || b[1] != 1 {
		return nil, errInput
	}
	r := &Request{}
	err := walk(b[2:], func(tag byte, v []byte) error {
		switch tag {
		case 0x01:
			r.Method = string(v)
		case 0x02:
			r.Path = string(v)
		case 0x03:
			r.Query = string(v)
		case 0x04:
			r.Host = string(v)
		case 0x05:
			h, err := decodeHeader(v)
			if err != nil {
				return err
			}
			r.Headers = append(r.Headers, h)
		case 0x06:
			r.ClientIP = string(v)
		case 0x07:
			r.Country = string(v)
		case 0x08:
			r.Region = string(v)
		case 0x09:
			r.PoP = string(v)
		case 0x0A:
			r.PoPRegion = string(v)
		case 0x0B:
			if len(v) == 8 {
				r.TimeUnixMs = int64(binary.LittleEndian.Uint64(v))
			}
		}
		return nil // unknown tags are skipped: newer hosts may add fields
	})
	return r, err
}

// DecodeResponse parses on_response input.
func DecodeResponse(b []byte) (*Response, error) {
	if len(b) < 2 || b[0] != ContractVersion || b[1] != 2 {
		return nil, errInput
	}
	r := &Response{}
	err := walk(b[2:], func(tag byte, v []byte) error {
		switch tag {
		case 0x10:
			if len(v) == 2 {
				r.Status = int(binary.LittleEndian.Uint16(v))
			}
		case 0x11:
			h, err := decodeHeader(v)
			if err != nil {
				return err
			}
			r.Headers = append(r.Headers, h)
		case 0x0B:
			if len(v) == 8 {
				r.TimeUnixMs = int64(binary.LittleEndian.Uint64(v))
			}
		}
		return nil
	})
	return r, err
}

// DecodeGeo parses the meridian_geo answer.
func DecodeGeo(b []byte) (Geo, error) {
	var g Geo
	err := walk(b, func(tag byte, v []byte) error {
		switch tag {
		case 0x07:
			g.Country = string(v)
		case 0x08:
			g.Region = string(v)
		case 0x20, 0x21:
			if len(v) != 8 {
				return errors.New("kit: bad coordinate")
			}
			f := math.Float64frombits(binary.LittleEndian.Uint64(v))
			if tag == 0x20 {
				g.Lat = f
			} else {
				g.Lon = f
			}
		}
		return nil
	})
	return g, err
}

func decodeHeader(v []byte) (Header, error) {
	if len(v) < 1 || int(v[0])+1 > len(v) {
		return Header{}, errors.New("kit: bad header record")
	}
	n := int(v[0])
	return Header{Name: string(v[1 : 1+n]), Value: string(v[1+n:])}, nil
}

func walk(b []byte, fn func(tag byte, v []byte) error) error {
	for i := 0; i < len(b); {
		if len(b)-i < 3 {
			return errors.New("kit: truncated input")
		}
		n := int(binary.LittleEndian.Uint16(b[i+1:]))
		if len(b)-i-3 < n {
			return errors.New("kit: truncated input field")
		}
		if err := fn(b[i], b[i+3:i+3+n]); err != nil {
			return err
		}
		i += 3 + n
	}
	return nil
}
