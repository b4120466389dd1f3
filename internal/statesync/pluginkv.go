package statesync

import (
	"context"
	"time"
)

// PluginKV is a node's plugin KV in the shape the plugin host asks for
// (plugins.ExpiringKV): values are LWW keys, counters PN-counters, both
// with optional expiry. It adapts the node's methods and holds no state.
type PluginKV struct{ Node *Node }

// Get returns site's key.
func (k PluginKV) Get(_ context.Context, site, key string) ([]byte, bool, error) {
	v, ok := k.Node.KVGet(site, key)
	return v, ok, nil
}

// Set writes site's key.
func (k PluginKV) Set(ctx context.Context, site, key string, value []byte) error {
	return k.Node.KVSet(ctx, site, key, value)
}

// SetTTL writes site's key for ttl.
func (k PluginKV) SetTTL(ctx context.Context, site, key string, value []byte, ttl time.Duration) error {
	return k.Node.KVSetTTL(ctx, site, key, value, ttl)
}

// Delete removes site's key.
func (k PluginKV) Delete(ctx context.Context, site, key string) error {
	return k.Node.KVDelete(ctx, site, key)
}

// CounterAdd adds delta to site's counter key.
func (k PluginKV) CounterAdd(ctx context.Context, site, key string, delta int64) (int64, error) {
	return k.Node.CounterAdd(ctx, site, key, delta)
}

// CounterAddTTL adds delta to site's counter key, which lives ttl after
// the latest such add.
func (k PluginKV) CounterAddTTL(ctx context.Context, site, key string, delta int64, ttl time.Duration) (int64, error) {
	return k.Node.CounterAddTTL(ctx, site, key, delta, ttl)
}
