package plugins

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
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

// Geo maps a client address to a location; the lead connects the DNS geo
// source (dnsrouter/geo) here.
type Geo interface {
	GeoLookup(addr netip.Addr) (country, region string, lat, lon float64, ok bool)
}

// MemoryKV is an in-process KV. The zero value is not usable; use NewMemoryKV.
type MemoryKV struct {
	mu       sync.Mutex
	values   map[[2]string][]byte
	counters map[[2]string]int64
}

// NewMemoryKV returns an empty in-process KV.
func NewMemoryKV() *MemoryKV {
	return &MemoryKV{values: map[[2]string][]byte{}, counters: map[[2]string]int64{}}
}

// Get implements KV.
func (m *MemoryKV) Get(_ context.Context, site, key string) ([]byte, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.values[[2]string{site, key}]
	return append([]byte(nil), v...), ok, nil
}

// Set implements KV.
func (m *MemoryKV) Set(_ context.Context, site, key string, value []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.values[[2]string{site, key}] = append([]byte(nil), value...)
	return nil
}

// Delete implements KV.
func (m *MemoryKV) Delete(_ context.Context, site, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.values, [2]string{site, key})
	return nil
}

// CounterAdd implements KV.
func (m *MemoryKV) CounterAdd(_ context.Context, site, key string, delta int64) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := [2]string{site, key}
	n := m.counters[k] + delta
	m.counters[k] = n
	return n, nil
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
