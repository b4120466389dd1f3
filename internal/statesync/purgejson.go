package statesync

import (
	"bytes"
	"encoding/json"
	"strings"
	"time"
	"unicode/utf8"
)

// decodePurge reads a purge record's JSON value. Every node decodes every
// purge it applies (for the purge index and the watchers), and reflective
// json.Unmarshal was the largest single cost of applying one on a receiving
// node. The fast path reads exactly what json.Marshal(PurgeRecord) writes: an
// object with the known lower-case field names, string values without
// escapes, control characters or invalid UTF-8, soft as a bare true/false, no
// whitespace. Anything else (another writer's formatting, escapes, unknown
// fields) goes to json.Unmarshal, so the result is always the one
// json.Unmarshal would give.
func decodePurge(data []byte) (PurgeRecord, error) { return decodePurgeKey(data, "", nil) }

// decodePurgeKey is decodePurge for the value of key ("purge/<site>/<id>").
// Every node keeps every purge record, so the fast path shares what it can
// instead of allocating it again per node: the site and id with the key
// when they match it, the kind with the constants, the origin through ids
// (node ids; nil to skip).
func decodePurgeKey(data []byte, key string, ids *idTable) (PurgeRecord, error) {
	if p, ok := decodePurgeFast(data, key, ids); ok {
		return p, nil
	}
	var p PurgeRecord
	err := json.Unmarshal(data, &p)
	return p, err
}

func decodePurgeFast(b []byte, key string, ids *idTable) (p PurgeRecord, ok bool) {
	site, id := "", ""
	if rest, ok := strings.CutPrefix(key, prefixPurge); ok {
		site, id, _ = strings.Cut(rest, "/")
	}
	if len(b) < 2 || b[0] != '{' || b[len(b)-1] != '}' {
		return p, false
	}
	b = b[1 : len(b)-1]
	for len(b) > 0 {
		name, rest, ok := fastJSONString(b)
		if !ok || len(rest) == 0 || rest[0] != ':' {
			return p, false
		}
		b = rest[1:]
		if string(name) == "soft" {
			switch {
			case bytes.HasPrefix(b, []byte("true")):
				p.Soft, b = true, b[4:]
			case bytes.HasPrefix(b, []byte("false")):
				p.Soft, b = false, b[5:]
			default:
				return p, false
			}
		} else {
			val, rest, ok := fastJSONString(b)
			if !ok {
				return p, false
			}
			b = rest
			switch string(name) {
			case "id":
				p.ID = shared(val, id)
			case "site":
				p.Site = shared(val, site)
			case "kind":
				switch PurgeKind(val) { // no allocation for the known kinds
				case PurgeURL:
					p.Kind = PurgeURL
				case PurgePrefix:
					p.Kind = PurgePrefix
				case PurgeSurrogateKey:
					p.Kind = PurgeSurrogateKey
				case PurgeSite:
					p.Kind = PurgeSite
				default:
					p.Kind = PurgeKind(val)
				}
			case "value":
				p.Value = string(val)
			case "origin":
				if s, ok := ids.lookup(val); ok {
					p.Origin = s
				} else {
					p.Origin = string(val)
				}
			case "at":
				// What time.Time.UnmarshalJSON does with the quoted text.
				var t time.Time
				if t.UnmarshalText(val) != nil {
					return p, false
				}
				p.At = t
			default:
				return p, false // unknown or differently cased: json.Unmarshal decides
			}
		}
		if len(b) > 0 {
			if b[0] != ',' || len(b) == 1 {
				return p, false
			}
			b = b[1:]
		}
	}
	return p, true
}

// shared returns b as a string: s when equal, else a copy.
func shared(b []byte, s string) string {
	if string(b) == s {
		return s
	}
	return string(b)
}

// fastJSONString reads a JSON string at the start of b that needs no
// unescaping and decodes to exactly its bytes: no backslash, no control
// character, valid UTF-8 (json.Unmarshal replaces invalid bytes).
func fastJSONString(b []byte) (s, rest []byte, ok bool) {
	if len(b) == 0 || b[0] != '"' {
		return nil, nil, false
	}
	i := bytes.IndexByte(b[1:], '"')
	if i < 0 {
		return nil, nil, false
	}
	s = b[1 : 1+i]
	ascii := true
	for _, c := range s {
		if c < 0x20 || c == '\\' {
			return nil, nil, false
		}
		if c >= utf8.RuneSelf {
			ascii = false
		}
	}
	if !ascii && !utf8.Valid(s) {
		return nil, nil, false
	}
	return s, b[2+i:], true
}
