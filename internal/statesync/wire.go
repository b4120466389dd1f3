package statesync

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/meridian-edge/meridian/internal/crdt"
)

// Wire format constants; PROTOCOL.md beside this file is the reference and
// must change with them.
const (
	// WireVersion is the envelope version. Receivers drop other versions.
	WireVersion = 1
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

// envelope is the one message type on every sync subject.
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

func encode(e envelope) ([]byte, error) {
	e.V = WireVersion
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("statesync: encode %s: %w", e.Kind, err)
	}
	if len(b) > MaxMessageSize {
		return nil, fmt.Errorf("statesync: %s message of %d bytes exceeds the %d byte limit; write smaller values", e.Kind, len(b), MaxMessageSize)
	}
	return b, nil
}

// decode parses and checks an envelope. Anything it returns may be merged.
func decode(data []byte) (envelope, error) {
	var e envelope
	if len(data) > MaxMessageSize {
		return e, reject("oversized", "%d bytes exceeds %d", len(data), MaxMessageSize)
	}
	// Read the version first so that a future format is reported as such,
	// not as malformed.
	var head struct {
		V int `json:"v"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return e, reject("malformed", "%v", err)
	}
	if head.V != WireVersion {
		return e, reject("version", "version %d, want %d", head.V, WireVersion)
	}
	if err := json.Unmarshal(data, &e); err != nil {
		return e, reject("malformed", "%v", err)
	}
	if !validID(e.From) {
		return e, reject("invalid", "bad sender id %q", e.From)
	}
	switch e.Kind {
	case kindDelta, kindRepair:
		if e.Digest != nil {
			return e, reject("invalid", "%s carries a digest", e.Kind)
		}
	case kindDigest:
		if len(e.Digest) != DigestBuckets || len(e.Regs) != 0 || len(e.Counters) != 0 {
			return e, reject("invalid", "digest with %d buckets (want %d) or with data", len(e.Digest), DigestBuckets)
		}
	default:
		return e, reject("invalid", "unknown kind %q", e.Kind)
	}
	if e.Horizon < 0 {
		return e, reject("invalid", "negative horizon")
	}
	for k, r := range e.Regs {
		if !validKey(k, false) {
			return e, reject("invalid", "bad key %q", k)
		}
		if len(r.Versions) == 0 {
			return e, reject("invalid", "key %q without versions", k)
		}
		for _, v := range r.Versions {
			if !validID(v.Node) || len(v.Clock) == 0 || v.Clock[v.Node] == 0 {
				return e, reject("invalid", "key %q: version without writer or clock", k)
			}
			if len(v.Value) > MaxValueSize {
				return e, reject("oversized", "key %q: value of %d bytes exceeds %d", k, len(v.Value), MaxValueSize)
			}
			if v.Deleted && len(v.Value) != 0 {
				return e, reject("invalid", "key %q: tombstone with a value", k)
			}
			for n := range v.Clock {
				if !validID(n) {
					return e, reject("invalid", "key %q: bad node %q in clock", k, n)
				}
			}
		}
	}
	for k, c := range e.Counters {
		if !validKey(k, true) {
			return e, reject("invalid", "bad counter key %q", k)
		}
		for n := range c {
			if !validID(n) {
				return e, reject("invalid", "counter %q: bad node %q", k, n)
			}
		}
	}
	return e, nil
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
