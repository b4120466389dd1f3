package plugins

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"
)

// KV is the per-site plugin key/value store behind the meridian_kv_* host
// functions. The host passes the calling site, so a plugin only ever reaches
// its own site's namespace. The lead connects the CRDT-replicated KV here;
// MemoryKV serves tests and single-node setups.
type KV interface {
	Get(ctx context.Context, site, key string) (value []byte, ok bool, err error)
	Set(ctx context.Context, site, key string, value []byte) error
	Delete(ctx context.Context, site, key string) error
	// CounterAdd adds delta to the counter at key and returns the new value.
	// Counters and values live in separate namespaces.
	CounterAdd(ctx context.Context, site, key string, delta int64) (int64, error)
}

// ExpiringKV is a KV whose values and counters can expire, behind the
// meridian_kv_set_ttl and meridian_kv_counter_add_ttl host functions. A KV
// that does not implement it makes those calls fail with an error that
// says so (the other KV functions keep working). ttl is validated by the
// host (see CheckTTL) before it gets here.
type ExpiringKV interface {
	KV
	// SetTTL stores value at key until ttl from now; after that the key
	// reads as missing. A later Set or SetTTL replaces the expiry.
	SetTTL(ctx context.Context, site, key string, value []byte, ttl time.Duration) error
	// CounterAddTTL adds delta to the counter at key and returns the new
	// value; the counter reads 0 (and starts over) once ttl has passed
	// since the last add with a TTL, so each such add extends it.
	CounterAddTTL(ctx context.Context, site, key string, delta int64, ttl time.Duration) (int64, error)
}

// MaxKVTTL is the longest TTL a plugin may give a key or counter.
const MaxKVTTL = 30 * 24 * time.Hour

// CheckTTL validates a TTL in milliseconds as a plugin passes it.
func CheckTTL(ttlMs int64) (time.Duration, error) {
	if ttlMs <= 0 || ttlMs > MaxKVTTL.Milliseconds() {
		return 0, fmt.Errorf("ttl_ms must be 1..%d (30 days), got %d", MaxKVTTL.Milliseconds(), ttlMs)
	}
	return time.Duration(ttlMs) * time.Millisecond, nil
}

// Geo maps a client address to a location; the lead connects the DNS geo
// source (dnsrouter/geo) here.
type Geo interface {
	GeoLookup(addr netip.Addr) (country, region string, lat, lon float64, ok bool)
}

// MemoryKV is an in-process KV (with expiry). The zero value is not usable;
// use NewMemoryKV.
type MemoryKV struct {
	now      func() time.Time
	mu       sync.Mutex
	values   map[[2]string]memValue
	counters map[[2]string]memCounter
	writes   int // since the last sweep of expired entries
}

type memValue struct {
	v       []byte
	expires time.Time // zero: never
}

type memCounter struct {
	n       int64
	expires time.Time // zero: never
}

func unexpired(expires, now time.Time) bool { return expires.IsZero() || now.Before(expires) }

// NewMemoryKV returns an empty in-process KV on the system clock.
func NewMemoryKV() *MemoryKV { return NewMemoryKVClock(time.Now) }

// NewMemoryKVClock returns an empty in-process KV whose expiry follows now
// (tests move it).
func NewMemoryKVClock(now func() time.Time) *MemoryKV {
	return &MemoryKV{now: now, values: map[[2]string]memValue{}, counters: map[[2]string]memCounter{}}
}

// Len returns how many values and counters the KV holds, expired ones not
// swept yet included.
func (m *MemoryKV) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.values) + len(m.counters)
}

// sweepLocked drops expired entries every so many writes, so that memory
// stays bounded by what is live (amortised O(1) per write).
func (m *MemoryKV) sweepLocked(now time.Time) {
	m.writes++
	if m.writes < 64 || m.writes < (len(m.values)+len(m.counters))/2 {
		return
	}
	m.writes = 0
	for k, v := range m.values {
		if !unexpired(v.expires, now) {
			delete(m.values, k)
		}
	}
	for k, c := range m.counters {
		if !unexpired(c.expires, now) {
			delete(m.counters, k)
		}
	}
}

// Get implements KV.
func (m *MemoryKV) Get(_ context.Context, site, key string) ([]byte, bool, error) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.values[[2]string{site, key}]
	if !ok || !unexpired(v.expires, now) {
		return nil, false, nil
	}
	return append([]byte(nil), v.v...), true, nil
}

// Set implements KV.
func (m *MemoryKV) Set(_ context.Context, site, key string, value []byte) error {
	return m.set(site, key, value, 0)
}

// SetTTL implements ExpiringKV.
func (m *MemoryKV) SetTTL(_ context.Context, site, key string, value []byte, ttl time.Duration) error {
	return m.set(site, key, value, ttl)
}

func (m *MemoryKV) set(site, key string, value []byte, ttl time.Duration) error {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	v := memValue{v: append([]byte(nil), value...)}
	if ttl > 0 {
		v.expires = now.Add(ttl)
	}
	m.values[[2]string{site, key}] = v
	m.sweepLocked(now)
	return nil
}

// Delete implements KV.
func (m *MemoryKV) Delete(_ context.Context, site, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.values, [2]string{site, key})
	return nil
}

// CounterAdd implements KV. The counter no longer expires.
func (m *MemoryKV) CounterAdd(_ context.Context, site, key string, delta int64) (int64, error) {
	return m.counterAdd(site, key, delta, 0)
}

// CounterAddTTL implements ExpiringKV.
func (m *MemoryKV) CounterAddTTL(_ context.Context, site, key string, delta int64, ttl time.Duration) (int64, error) {
	return m.counterAdd(site, key, delta, ttl)
}

// counterAdd follows the replicated counter's rules: an add to an expired
// counter starts it over, an add with a TTL extends the expiry (never
// shortens it), an add without one makes the counter permanent.
func (m *MemoryKV) counterAdd(site, key string, delta int64, ttl time.Duration) (int64, error) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	k := [2]string{site, key}
	c, ok := m.counters[k]
	if ok && !unexpired(c.expires, now) {
		c, ok = memCounter{}, false
	}
	c.n += delta
	switch {
	case ttl <= 0:
		c.expires = time.Time{}
	case !ok || !c.expires.IsZero():
		if e := now.Add(ttl); e.After(c.expires) {
			c.expires = e
		}
	}
	m.counters[k] = c
	m.sweepLocked(now)
	return c.n, nil
}

// Limits of the KV host functions; a plugin passing more fails its call.
const (
	MaxKVKey   = 256
	MaxKVValue = 64 << 10
)

func checkKV(key string, value []byte) error {
	if key == "" || len(key) > MaxKVKey {
		return fmt.Errorf("kv key must be 1..%d bytes, got %d (a zero length usually means a bad pointer)", MaxKVKey, len(key))
	}
	if len(value) > MaxKVValue {
		return fmt.Errorf("kv value must be at most %d bytes, got %d", MaxKVValue, len(value))
	}
	return nil
}
