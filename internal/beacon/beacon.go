// Package beacon defines the health beacon every PoP publishes on NATS once a
// second, its wire format, a publisher and a subscriber.
//
// It does not decide health: turning beacons into a health table (missed
// beacons, hysteresis, staleness) is the consumer's job (dnsrouter/health).
package beacon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Version is the wire format version of Beacon. Receivers drop beacons with
// another version, so a mixed fleet during an upgrade degrades to "PoP
// unknown" rather than to misread numbers.
const Version = 1

// SubjectPrefix is the NATS subject prefix; a PoP publishes on
// SubjectPrefix + "." + its PoP id.
const SubjectPrefix = "meridian.beacon"

// MaxSize is the largest beacon a receiver accepts, in bytes.
const MaxSize = 4096

// Beacon is one PoP's report of its own state.
type Beacon struct {
	V      int    `json:"v"`
	PoP    string `json:"pop"`
	Region string `json:"region"`
	// Seq increases by one per beacon from one PoP process; a restart resets it.
	Seq uint64 `json:"seq"`
	// SentUnixMs is the sender's clock; receivers use their own clock for
	// staleness and this only for display.
	SentUnixMs int64 `json:"sent_ms"`
	// Healthy is the PoP's own verdict (false while draining or failing).
	Healthy bool `json:"healthy"`
	// Load and Capacity are in the same unit (requests/s); Capacity 0 means unlimited.
	Load     float64 `json:"load"`
	Capacity float64 `json:"capacity"`
	P50Ms    float64 `json:"p50_ms"`
	P99Ms    float64 `json:"p99_ms"`
	// ErrorRate is the share of 5xx answers in the last interval, 0..1.
	ErrorRate float64 `json:"error_rate"`
}

// Subject returns the subject a PoP publishes on.
func Subject(pop string) string { return SubjectPrefix + "." + pop }

// Encode renders b in the wire format, stamping the version.
func Encode(b Beacon) ([]byte, error) {
	b.V = Version
	return json.Marshal(b)
}

// ErrBadBeacon is wrapped by every Decode failure.
var ErrBadBeacon = errors.New("beacon: rejected")

// Decode parses and checks a beacon from the wire.
func Decode(data []byte) (Beacon, error) {
	var b Beacon
	if len(data) > MaxSize {
		return b, fmt.Errorf("%w: %d bytes exceeds %d", ErrBadBeacon, len(data), MaxSize)
	}
	if err := json.Unmarshal(data, &b); err != nil {
		return b, fmt.Errorf("%w: %v", ErrBadBeacon, err)
	}
	if b.V != Version {
		return b, fmt.Errorf("%w: version %d, want %d", ErrBadBeacon, b.V, Version)
	}
	if b.PoP == "" || strings.ContainsAny(b.PoP, " .*>") {
		return b, fmt.Errorf("%w: bad pop id %q", ErrBadBeacon, b.PoP)
	}
	return b, nil
}

// Publish sends a beacon built by state every interval until ctx is done.
// Publish errors are logged and retried at the next tick: a PoP must keep
// serving while NATS is away.
func Publish(ctx context.Context, nc *nats.Conn, interval time.Duration, log *slog.Logger, state func() Beacon) {
	t := time.NewTicker(interval)
	defer t.Stop()
	var seq uint64
	for {
		seq++
		b := state()
		b.Seq = seq
		b.SentUnixMs = time.Now().UnixMilli()
		data, err := Encode(b)
		if err == nil {
			err = nc.Publish(Subject(b.PoP), data)
		}
		if err != nil {
			log.Warn("beacon publish failed", "pop", b.PoP, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Subscribe delivers every valid beacon to fn and every rejected message to
// bad (which may be nil). It returns the subscription; unsubscribe to stop.
func Subscribe(nc *nats.Conn, fn func(Beacon), bad func(error)) (*nats.Subscription, error) {
	return nc.Subscribe(SubjectPrefix+".*", func(m *nats.Msg) {
		b, err := Decode(m.Data)
		if err == nil && m.Subject != Subject(b.PoP) {
			err = fmt.Errorf("%w: pop %q published on %s", ErrBadBeacon, b.PoP, m.Subject)
		}
		if err != nil {
			if bad != nil {
				bad(err)
			}
			return
		}
		fn(b)
	})
}
