package statesync

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/meridian-edge/meridian/internal/crdt"
)

// Wire format constants; PROTOCOL.md beside this file is the reference and
// must change with them.
const (
	// WireVersion is the version of the binary message format (the first
	// byte of every message). Receivers drop other versions.
	WireVersion = 2
	// MaxMessageSize is the largest envelope a receiver accepts, in bytes.
	MaxMessageSize = 512 << 10
	// MaxKeySize is the longest key, in bytes.
	MaxKeySize = 512
	// MaxValueSize is the largest register value, in bytes.
	MaxValueSize = 64 << 10
	// DigestBuckets is the number of buckets in an anti-entropy digest; at
	// most 32 (answerDigest keeps a bit mask per peer).
	DigestBuckets = 32

	subjectRoot = "meridian.sync"
)

// Envelope kinds.
const (
	kindDelta  = "delta"
	kindDigest = "digest"
	kindRepair = "repair"
)

// envelope is the one message type on every sync subject, in memory. The
// JSON tags are the version 1 form, read only by decodeV1.
type envelope struct {
	V      int    `json:"v"`
	Kind   string `json:"kind"`
	From   string `json:"from"`
	SentMs int64  `json:"sent_ms"`
	// ID names a delta uniquely ("<node>.<process start>.<n>"); it is also
	// sent in the Nats-Msg-Id header.
	ID string `json:"id,omitempty"`
	// Horizon is the sender's compaction horizon (Unix ns).
	Horizon  int64                    `json:"horizon,omitempty"`
	Regs     map[string]crdt.Register `json:"regs,omitempty"`
	Counters crdt.Counters            `json:"ctrs,omitempty"`
	Digest   []uint64                 `json:"digest,omitempty"`
}

// errRejected is wrapped by every decode failure; reason() classifies it.
var errRejected = errors.New("statesync: message rejected")

type rejectError struct {
	reason string
	msg    string
}

func (e *rejectError) Error() string {
	return "statesync: message rejected (" + e.reason + "): " + e.msg
}
func (e *rejectError) Unwrap() error { return errRejected }

func reject(reason, format string, args ...any) error {
	return &rejectError{reason: reason, msg: fmt.Sprintf(format, args...)}
}

// rejectReason returns the metric label for a decode error.
func rejectReason(err error) string {
	var re *rejectError
	if errors.As(err, &re) {
		return re.reason
	}
	return "malformed"
}

// validID reports whether s may be a node id: it becomes a subject token.
func validID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

var keyPrefixes = []string{prefixPurge, prefixDeploy, prefixKV, prefixConfig}

func validKey(k string, counter bool) bool {
	if k == "" || len(k) > MaxKeySize {
		return false
	}
	if counter {
		return strings.HasPrefix(k, prefixCounter)
	}
	for _, p := range keyPrefixes {
		if strings.HasPrefix(k, p) {
			return true
		}
	}
	return false
}

// Kind codes on the wire (byte 1 of every message).
var kindCodes = map[string]byte{kindDelta: 1, kindDigest: 2, kindRepair: 3}

var kindNames = [...]string{1: kindDelta, 2: kindDigest, 3: kindRepair}

// Version flags (one byte per version); other bits must be zero.
const (
	flagDeleted = 1
	// flagTTL marks a version written with a TTL (crdt.Version.TTL) and
	// flagFresh one of those that hides nothing older (crdt.Version.Fresh).
	// Nodes from before expiry support refuse these flags, so writers put
	// such versions in messages of their own.
	flagTTL   = 2
	flagFresh = 4
)

// encode renders an envelope in the binary form of PROTOCOL.md (wire
// version 2). JSON cost 49 decodes of ~600 bytes per purge on a 50-PoP
// fleet; this form is about half the size and decodes without reflection.
func encode(e envelope) ([]byte, error) {
	code, ok := kindCodes[e.Kind]
	if !ok {
		return nil, fmt.Errorf("statesync: encode: unknown kind %q", e.Kind)
	}
	b := make([]byte, 0, 256)
	b = append(b, WireVersion, code)
	b = appendString(b, e.From)
	b = binary.AppendUvarint(b, uint64(max(e.SentMs, 0)))
	b = appendString(b, e.ID)
	b = binary.AppendUvarint(b, uint64(max(e.Horizon, 0)))
	b = binary.AppendUvarint(b, uint64(len(e.Digest)))
	for _, d := range e.Digest {
		b = binary.LittleEndian.AppendUint64(b, d)
	}
	b = binary.AppendUvarint(b, uint64(len(e.Regs)))
	for k, r := range e.Regs {
		b = appendString(b, k)
		b = binary.AppendUvarint(b, uint64(len(r.Versions)))
		for _, v := range r.Versions {
			var flags byte
			if v.Deleted {
				flags |= flagDeleted
			}
			if v.TTL {
				flags |= flagTTL
			}
			if v.Fresh {
				flags |= flagFresh
			}
			b = append(b, flags)
			b = binary.AppendUvarint(b, uint64(len(v.Value)))
			b = append(b, v.Value...)
			b = appendString(b, v.Node)
			b = binary.AppendVarint(b, v.Wall)
			b = binary.AppendVarint(b, v.Expires)
			b = binary.AppendUvarint(b, uint64(len(v.Clock)))
			for n, c := range v.Clock {
				b = appendString(b, n)
				b = binary.AppendUvarint(b, c)
			}
		}
		if len(b) > MaxMessageSize {
			break // reported below; no need to encode the rest
		}
	}
	b = binary.AppendUvarint(b, uint64(len(e.Counters)))
	lives := 0 // counters with a pair that carries Birth/Exp
	for k, c := range e.Counters {
		b = appendString(b, k)
		b = binary.AppendUvarint(b, uint64(len(c)))
		expiring := false
		for n, p := range c {
			b = appendString(b, n)
			b = binary.AppendUvarint(b, p.P)
			b = binary.AppendUvarint(b, p.N)
			expiring = expiring || p.Expiring()
		}
		if expiring {
			lives++
		}
	}
	if lives > 0 {
		// The counter lives section: only present when a pair has a TTL,
		// so messages without one are byte for byte what they were.
		b = binary.AppendUvarint(b, uint64(lives))
		for k, c := range e.Counters {
			n := 0
			for _, p := range c {
				if p.Expiring() {
					n++
				}
			}
			if n == 0 {
				continue
			}
			b = appendString(b, k)
			b = binary.AppendUvarint(b, uint64(n))
			for node, p := range c {
				if p.Expiring() {
					b = appendString(b, node)
					b = binary.AppendVarint(b, p.Birth)
					b = binary.AppendVarint(b, p.Exp)
				}
			}
		}
	}
	if len(b) > MaxMessageSize {
		return nil, fmt.Errorf("statesync: %s message of %d bytes or more exceeds the %d byte limit; write smaller values", e.Kind, len(b), MaxMessageSize)
	}
	return b, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// reader walks a binary message; the first error sticks and later reads
// return zero values, so decode checks it once per section.
type reader struct {
	b   []byte
	err error
	ids *idTable // may be nil
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = reject("malformed", format, args...)
	}
}

func (r *reader) u8() byte {
	if r.err != nil || len(r.b) == 0 {
		r.fail("truncated")
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("bad varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail("bad varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

// count reads a repeat count; each item takes at least min bytes, so a
// count the rest of the message cannot hold is refused before allocating.
func (r *reader) count(min int) int {
	c := r.uvarint()
	if r.err == nil && c > uint64(len(r.b)/min) {
		r.fail("count %d exceeds what %d remaining bytes can hold", c, len(r.b))
		return 0
	}
	return int(c)
}

// bytes reads a length-prefixed byte string of at most limit bytes; the
// result aliases the message.
func (r *reader) bytes(limit int, what string) []byte {
	l := r.uvarint()
	if r.err != nil {
		return nil
	}
	if l > uint64(len(r.b)) {
		r.fail("%s of %d bytes exceeds the %d remaining", what, l, len(r.b))
		return nil
	}
	if l > uint64(limit) {
		r.err = reject("oversized", "%s of %d bytes exceeds %d", what, l, limit)
		return nil
	}
	s := r.b[:l]
	r.b = r.b[l:]
	return s
}

// id reads a node id and checks it.
func (r *reader) id(what string) string {
	s := r.bytes(64, what)
	if r.err != nil {
		return ""
	}
	if id, ok := r.ids.lookup(s); ok {
		return id // checked when it was added
	}
	id := string(s)
	if !validID(id) {
		r.err = reject("invalid", "bad %s %q", what, s)
		return id
	}
	r.ids.add(id)
	return id
}

// idTable interns node ids: a delta names its sender up to three times
// (sender, writer, clock entry), every receiver kept a copy of each, and the
// fleet has few distinct ids. Interning saves those allocations on every
// receiving node and lets the state share one string per node. Safe for
// concurrent use; a nil table interns nothing.
type idTable struct {
	mu  sync.RWMutex
	ids map[string]string
}

// smallRegs is the most registers decodeIDs puts in a map it was given:
// one group of a Go map, so a reused map stays small.
const smallRegs = 8

// maxInternedIDs bounds the table: ids from a flood of bogus senders are
// allocated as before instead of growing it.
const maxInternedIDs = 4096

func newIDTable() *idTable { return &idTable{ids: map[string]string{}} }

func (t *idTable) lookup(b []byte) (string, bool) {
	if t == nil {
		return "", false
	}
	t.mu.RLock()
	s, ok := t.ids[string(b)] // no allocation: the compiler looks up by the bytes
	t.mu.RUnlock()
	return s, ok
}

func (t *idTable) add(id string) {
	if t == nil {
		return
	}
	t.mu.Lock()
	if len(t.ids) < maxInternedIDs {
		t.ids[id] = id
	}
	t.mu.Unlock()
}

// decode parses and checks a message (any kind). Anything it returns may be
// merged: see PROTOCOL.md for the checks.
func decode(data []byte) (envelope, error) { return decodeIDs(data, nil, nil) }

// decodeIDs is decode with node ids interned in ids. regs, when not nil, is
// an empty map the registers go into if there are at most smallRegs of them
// (a delta carries one or a few), so that a receiver can reuse one map
// instead of allocating one per message.
func decodeIDs(data []byte, ids *idTable, regs map[string]crdt.Register) (envelope, error) {
	var e envelope
	if len(data) > MaxMessageSize {
		return e, reject("oversized", "%d bytes exceeds %d", len(data), MaxMessageSize)
	}
	if len(data) < 2 {
		return e, reject("malformed", "%d bytes is shorter than any message", len(data))
	}
	// The version comes first so that another format (a version 1 JSON
	// message starts with '{') is reported as such, not as malformed.
	if data[0] != WireVersion {
		return e, reject("version", "version %d, want %d", data[0], WireVersion)
	}
	if int(data[1]) >= len(kindNames) || kindNames[data[1]] == "" {
		return e, reject("invalid", "unknown kind %d", data[1])
	}
	e.V, e.Kind = WireVersion, kindNames[data[1]]
	r := &reader{b: data[2:], ids: ids}
	e.From = r.id("sender id")
	e.SentMs = int64(min(r.uvarint(), 1<<62))
	e.ID = string(r.bytes(200, "delta id"))
	e.Horizon = int64(min(r.uvarint(), 1<<62))
	if nd := r.count(8); nd > 0 {
		e.Digest = make([]uint64, nd)
		for i := range e.Digest {
			if len(r.b) < 8 {
				r.fail("truncated digest")
				break
			}
			e.Digest[i] = binary.LittleEndian.Uint64(r.b)
			r.b = r.b[8:]
		}
	}
	if r.err != nil {
		return e, r.err
	}
	switch e.Kind {
	case kindDelta, kindRepair:
		if e.Digest != nil {
			return e, reject("invalid", "%s carries a digest", e.Kind)
		}
	case kindDigest:
		if len(e.Digest) != DigestBuckets {
			return e, reject("invalid", "digest with %d buckets, want %d", len(e.Digest), DigestBuckets)
		}
	}
	// Smallest register: key(2) + count(1) + version(flags, value length,
	// node(2), wall, exp, clock count, clock entry(3)) = 12 bytes.
	if nr := r.count(12); nr > 0 {
		if regs != nil && nr <= smallRegs {
			e.Regs = regs
		} else {
			e.Regs = make(map[string]crdt.Register, nr)
		}
		for range nr {
			k := string(r.bytes(MaxKeySize, "key"))
			if r.err == nil && !validKey(k, false) {
				return e, reject("invalid", "bad key %q", k)
			}
			if _, dup := e.Regs[k]; dup && r.err == nil {
				return e, reject("invalid", "key %q twice", k)
			}
			nv := r.count(9)
			if r.err == nil && nv == 0 {
				return e, reject("invalid", "key %q without versions", k)
			}
			vs := make([]crdt.Version, 0, nv)
			for range nv {
				v, err := readVersion(r, k)
				if err != nil {
					return e, err
				}
				vs = append(vs, v)
			}
			if r.err != nil {
				return e, r.err
			}
			e.Regs[k] = crdt.Register{Versions: vs}
		}
	}
	if nc := r.count(4); nc > 0 {
		e.Counters = make(crdt.Counters, nc)
		for range nc {
			k := string(r.bytes(MaxKeySize, "counter key"))
			if r.err == nil && !validKey(k, true) {
				return e, reject("invalid", "bad counter key %q", k)
			}
			if _, dup := e.Counters[k]; dup && r.err == nil {
				return e, reject("invalid", "counter %q twice", k)
			}
			nn := r.count(4)
			c := make(crdt.PNCounter, nn)
			for range nn {
				n := r.id("counter node")
				c[n] = crdt.PNPair{P: r.uvarint(), N: r.uvarint()}
			}
			if r.err != nil {
				return e, r.err
			}
			e.Counters[k] = c
		}
	}
	if r.err != nil {
		return e, r.err
	}
	if len(r.b) != 0 && len(e.Counters) > 0 {
		if err := readCounterLives(r, e.Counters); err != nil {
			return e, err
		}
	}
	if len(r.b) != 0 {
		return e, reject("malformed", "%d bytes after the end of the message", len(r.b))
	}
	if e.Kind == kindDigest && (len(e.Regs) != 0 || len(e.Counters) != 0) {
		return e, reject("invalid", "digest with data")
	}
	return e, nil
}

// readCounterLives reads the optional counter lives section (PROTOCOL.md):
// the Birth and Exp of the pairs of counters written with a TTL. Every entry
// must name a counter and a node of the counter section, once.
func readCounterLives(r *reader, cs crdt.Counters) error {
	nl := r.count(4)
	if r.err == nil && nl == 0 {
		return reject("invalid", "empty counter lives section")
	}
	seen := make(map[string]bool, nl)
	for range nl {
		k := string(r.bytes(MaxKeySize, "counter key"))
		if r.err != nil {
			return r.err
		}
		c, ok := cs[k]
		if !ok || seen[k] {
			return reject("invalid", "counter lives of %q: not in the message, or twice", k)
		}
		seen[k] = true
		nn := r.count(4)
		if r.err == nil && nn == 0 {
			return reject("invalid", "counter lives of %q without nodes", k)
		}
		for range nn {
			n := r.id("counter node")
			birth, exp := r.varint(), r.varint()
			if r.err != nil {
				return r.err
			}
			p, ok := c[n]
			switch {
			case !ok || p.Expiring():
				return reject("invalid", "counter lives of %q: node %q not in the counter, or twice", k, n)
			case birth < 0 || exp < 0 || (birth == 0 && exp == 0) || (exp != 0 && exp <= birth):
				return reject("invalid", "counter lives of %q, node %q: birth %d and expiry %d are not a life", k, n, birth, exp)
			}
			p.Birth, p.Exp = birth, exp
			c[n] = p
		}
	}
	return r.err
}

func readVersion(r *reader, k string) (crdt.Version, error) {
	var v crdt.Version
	flags := r.u8()
	if r.err == nil && flags&^(flagDeleted|flagTTL|flagFresh) != 0 {
		return v, reject("invalid", "key %q: unknown version flags %#x", k, flags)
	}
	v.Deleted = flags&flagDeleted != 0
	v.TTL = flags&flagTTL != 0
	v.Fresh = flags&flagFresh != 0
	if val := r.bytes(MaxValueSize, "value"); len(val) > 0 {
		v.Value = bytes.Clone(val) // kept in the state: do not pin the message
	} else if re, ok := r.err.(*rejectError); ok {
		re.msg = "key " + strconv.Quote(k) + ": " + re.msg // named only on failure: it costs an allocation
	}
	v.Node = r.id("writer")
	v.Wall = r.varint()
	v.Expires = r.varint()
	nc := r.count(3)
	if r.err != nil {
		return v, r.err
	}
	v.Clock = make(crdt.VClock, nc)
	for range nc {
		n := r.id("clock node")
		c := r.uvarint()
		if r.err != nil {
			return v, r.err
		}
		if _, dup := v.Clock[n]; dup {
			return v, reject("invalid", "key %q: node %q twice in a clock", k, n)
		}
		v.Clock[n] = c
	}
	switch {
	case v.Clock[v.Node] == 0:
		return v, reject("invalid", "key %q: version without writer or clock", k)
	case v.Deleted && len(v.Value) != 0:
		return v, reject("invalid", "key %q: tombstone with a value", k)
	case v.TTL && (v.Deleted || v.Expires <= 0):
		return v, reject("invalid", "key %q: TTL flag on a tombstone or a version without expiry", k)
	case v.Fresh && !v.TTL:
		return v, reject("invalid", "key %q: fresh flag without the TTL flag", k)
	}
	return v, nil
}

// decodeV1 reads the JSON form of wire version 1. It is used only to carry
// deltas queued on disk by an older version into the log (re-encoded as the
// current version); version 1 messages on the network are dropped.
func decodeV1(data []byte) (envelope, error) {
	var e envelope
	if err := json.Unmarshal(data, &e); err != nil {
		return e, reject("malformed", "%v", err)
	}
	if e.V != 1 {
		return e, reject("version", "version %d, want 1", e.V)
	}
	// Run it through the current checks.
	e.Kind = kindDelta
	b, err := encode(e)
	if err != nil {
		return e, reject("invalid", "%v", err)
	}
	return decode(b)
}

// checkSubject refuses a delta or digest published on another node's subject.
func checkSubject(subject string, e envelope) error {
	switch e.Kind {
	case kindDelta:
		if subject != deltaSubject(e.From) {
			return reject("invalid", "delta from %q on subject %s", e.From, subject)
		}
	case kindDigest:
		if subject != digestSubject(e.From) {
			return reject("invalid", "digest from %q on subject %s", e.From, subject)
		}
	}
	return nil
}

func deltaSubject(node string) string  { return subjectRoot + ".delta." + node }
func digestSubject(node string) string { return subjectRoot + ".digest." + node }
func repairSubject(node string) string { return subjectRoot + ".repair." + node }
