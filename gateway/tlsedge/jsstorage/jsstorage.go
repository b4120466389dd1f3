// Package jsstorage is certmagic's Storage and Locker backed by NATS
// JetStream key-value buckets, so that every PoP of a fleet shares one set of
// ACME accounts, certificates, private keys, OCSP staples and challenge
// tokens, and so that only one PoP at a time places the ACME order for a name.
//
// It owns two buckets: one for the assets (history 1, file storage, the
// replica count the config asks for) and one for locks (entries expire after
// the lock TTL unless their holder refreshes them, so a crashed PoP never
// blocks the fleet for longer than that). It must not log values: they
// include private keys.
package jsstorage

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Options configures the storage.
type Options struct {
	// Bucket is the key-value bucket of the assets; default "meridian_certs".
	// The lock bucket is the same name with "_locks" appended.
	Bucket string
	// Replicas of both buckets (1 for a single NATS server, 3 for a cluster);
	// default 1.
	Replicas int
	// LockTTL is how long a lock outlives its holder's last refresh; the
	// holder refreshes it every third of that. Default 1 minute.
	LockTTL time.Duration
	// LockPoll is how often a waiter checks a held lock; default 500ms.
	LockPoll time.Duration
	// Owner names this process in lock entries (the PoP id), for operators
	// reading the lock bucket.
	Owner string
	// Logger defaults to discarding.
	Logger *slog.Logger
}

// Storage implements certmagic.Storage over JetStream. Close stops the lock
// refreshers it started.
type Storage struct {
	opts   Options
	log    *slog.Logger
	assets jetstream.KeyValue
	locks  jetstream.KeyValue

	mu   sync.Mutex
	held map[string]*heldLock
	wg   sync.WaitGroup
}

type heldLock struct {
	rev  uint64
	stop context.CancelFunc
	done chan struct{}
	// mu guards rev between the refresher and Unlock.
	mu sync.Mutex
}

var _ certmagic.Storage = (*Storage)(nil)

// New creates (or binds to) the buckets on nc's JetStream.
func New(ctx context.Context, nc *nats.Conn, opts Options) (*Storage, error) {
	if nc == nil {
		return nil, errors.New("jsstorage: no NATS connection: certificate storage in JetStream needs one")
	}
	if opts.Bucket == "" {
		opts.Bucket = "meridian_certs"
	}
	if opts.Replicas == 0 {
		opts.Replicas = 1
	}
	if opts.LockTTL == 0 {
		opts.LockTTL = time.Minute
	}
	if opts.LockPoll == 0 {
		opts.LockPoll = 500 * time.Millisecond
	}
	if opts.LockTTL < time.Second {
		return nil, fmt.Errorf("jsstorage: lock TTL %s is below 1s; refreshes could not keep up", opts.LockTTL)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jsstorage: jetstream: %w", err)
	}
	assets, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      opts.Bucket,
		Description: "Meridian TLS assets: ACME accounts, certificates, private keys, OCSP staples",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    opts.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("jsstorage: bucket %q: %w (is JetStream enabled on the NATS server?)", opts.Bucket, err)
	}
	locks, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      opts.Bucket + "_locks",
		Description: "Meridian TLS locks: who is ordering a certificate now",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    opts.Replicas,
		TTL:         opts.LockTTL,
	})
	if err != nil {
		return nil, fmt.Errorf("jsstorage: bucket %q: %w", opts.Bucket+"_locks", err)
	}
	return &Storage{opts: opts, log: log, assets: assets, locks: locks, held: map[string]*heldLock{}}, nil
}

// Close stops refreshing the locks this process holds (they then expire
// after the lock TTL) and waits for the refreshers to end.
func (s *Storage) Close() {
	s.mu.Lock()
	for _, h := range s.held {
		h.stop()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// Store puts value at key.
func (s *Storage) Store(ctx context.Context, key string, value []byte) error {
	if _, err := s.assets.Put(ctx, encodeKey(key), value); err != nil {
		return fmt.Errorf("jsstorage: store %s: %w", key, err)
	}
	return nil
}

// Load returns the value at key, or an error wrapping fs.ErrNotExist.
func (s *Storage) Load(ctx context.Context, key string) ([]byte, error) {
	e, err := s.assets.Get(ctx, encodeKey(key))
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, fmt.Errorf("jsstorage: %s: %w", key, fs.ErrNotExist)
		}
		return nil, fmt.Errorf("jsstorage: load %s: %w", key, err)
	}
	return e.Value(), nil
}

// Delete removes key and every key below it.
func (s *Storage) Delete(ctx context.Context, key string) error {
	keys, err := s.keysUnder(ctx, key)
	if err != nil {
		return err
	}
	keys = append(keys, cleanKey(key))
	for _, k := range keys {
		if err := s.assets.Purge(ctx, encodeKey(k)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("jsstorage: delete %s: %w", k, err)
		}
	}
	return nil
}

// Exists reports whether key is a value or a prefix of values.
func (s *Storage) Exists(ctx context.Context, key string) bool {
	if _, err := s.assets.Get(ctx, encodeKey(key)); err == nil {
		return true
	}
	keys, err := s.keysUnder(ctx, key)
	return err == nil && len(keys) > 0
}

// List returns the keys below prefix: all of them when recursive, else the
// direct children (values and "directories").
func (s *Storage) List(ctx context.Context, prefix string, recursive bool) ([]string, error) {
	keys, err := s.keysUnder(ctx, prefix)
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("jsstorage: list %s: %w", prefix, fs.ErrNotExist)
	}
	if recursive {
		return keys, nil
	}
	base := cleanKey(prefix)
	seen := map[string]bool{}
	var out []string
	for _, k := range keys {
		rest := strings.TrimPrefix(strings.TrimPrefix(k, base), "/")
		child := rest
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			child = rest[:i]
		}
		full := path.Join(base, child)
		if !seen[full] {
			seen[full] = true
			out = append(out, full)
		}
	}
	return out, nil
}

// Stat describes key: a value (terminal) or a prefix of values.
func (s *Storage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	e, err := s.assets.Get(ctx, encodeKey(key))
	if err == nil {
		return certmagic.KeyInfo{Key: cleanKey(key), Modified: e.Created(), Size: int64(len(e.Value())), IsTerminal: true}, nil
	}
	if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return certmagic.KeyInfo{}, fmt.Errorf("jsstorage: stat %s: %w", key, err)
	}
	keys, lerr := s.keysUnder(ctx, key)
	if lerr != nil {
		return certmagic.KeyInfo{}, lerr
	}
	if len(keys) == 0 {
		return certmagic.KeyInfo{}, fmt.Errorf("jsstorage: %s: %w", key, fs.ErrNotExist)
	}
	return certmagic.KeyInfo{Key: cleanKey(key), IsTerminal: false}, nil
}

// keysUnder lists the (decoded) keys strictly below prefix.
func (s *Storage) keysUnder(ctx context.Context, prefix string) ([]string, error) {
	filter := ">"
	if p := cleanKey(prefix); p != "" {
		filter = encodeKey(p) + ".>"
	}
	lister, err := s.assets.ListKeysFiltered(ctx, filter)
	if err != nil {
		return nil, fmt.Errorf("jsstorage: list %s: %w", prefix, err)
	}
	var out []string
	for k := range lister.Keys() {
		out = append(out, decodeKey(k))
	}
	return out, nil
}

// lockRecord is what a lock entry holds: who holds it, for operators.
type lockRecord struct {
	Owner    string    `json:"owner"`
	Acquired time.Time `json:"acquired"`
}

// Lock blocks until this process holds the named lock or ctx ends. A held
// lock is refreshed in the background until Unlock; if its holder dies, it
// expires after the lock TTL.
func (s *Storage) Lock(ctx context.Context, name string) error {
	key := encodeKey(name)
	val, _ := json.Marshal(lockRecord{Owner: s.opts.Owner, Acquired: time.Now().UTC()})
	for {
		rev, err := s.locks.Create(ctx, key, val)
		if err == nil {
			s.startRefresh(name, key, val, rev)
			s.log.Debug("certificate lock acquired", "lock", name)
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("jsstorage: lock %s: %w", name, err)
		}
		// Held by someone else: wait and retry, with jitter so that
		// waiting PoPs do not all ask at the same instant.
		wait := s.opts.LockPoll/2 + rand.N(s.opts.LockPoll)
		select {
		case <-ctx.Done():
			return fmt.Errorf("jsstorage: waiting for lock %s: %w", name, ctx.Err())
		case <-time.After(wait):
		}
	}
}

func (s *Storage) startRefresh(name, key string, val []byte, rev uint64) {
	ctx, stop := context.WithCancel(context.Background())
	h := &heldLock{rev: rev, stop: stop, done: make(chan struct{})}
	s.mu.Lock()
	s.held[name] = h
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(h.done)
		t := time.NewTicker(s.opts.LockTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			h.mu.Lock()
			nrev, err := s.locks.Update(ctx, key, val, h.rev)
			if err == nil {
				h.rev = nrev
			}
			h.mu.Unlock()
			if err != nil && ctx.Err() == nil {
				// Lost (expired and taken) or NATS unreachable: another
				// PoP may now order the same name; certmagic re-checks
				// storage after every lock, so the cost is one extra order.
				s.log.Warn("certificate lock refresh failed", "lock", name, "err", err)
			}
		}
	}()
}

// Unlock releases the named lock if this process still holds it.
func (s *Storage) Unlock(ctx context.Context, name string) error {
	s.mu.Lock()
	h := s.held[name]
	delete(s.held, name)
	s.mu.Unlock()
	if h == nil {
		return fmt.Errorf("jsstorage: unlock %s: this process does not hold that lock", name)
	}
	h.stop()
	<-h.done
	// Only remove the entry we wrote: if it expired and another PoP took
	// it, the revision differs and the other holder keeps its lock.
	if err := s.locks.Delete(ctx, encodeKey(name), jetstream.LastRevision(h.rev)); err != nil {
		return fmt.Errorf("jsstorage: unlock %s: %w", name, err)
	}
	return nil
}

func cleanKey(k string) string {
	k = strings.Trim(path.Clean("/"+k), "/")
	return k
}

// encodeKey maps a certmagic path to a KV key: path segments become subject
// tokens (so a prefix is a subject filter) and every byte outside
// [A-Za-z0-9_-] is written as =XX, so dots in domain names never split a
// token and no key can be rejected by the server.
func encodeKey(k string) string {
	segs := strings.Split(cleanKey(k), "/")
	for i, seg := range segs {
		var b strings.Builder
		for j := 0; j < len(seg); j++ {
			c := seg[j]
			switch {
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
				b.WriteByte(c)
			default:
				b.WriteByte('=')
				b.WriteString(strings.ToUpper(hex.EncodeToString([]byte{c})))
			}
		}
		if b.Len() == 0 {
			b.WriteString("=")
		}
		segs[i] = b.String()
	}
	return strings.Join(segs, ".")
}

func decodeKey(k string) string {
	segs := strings.Split(k, ".")
	for i, seg := range segs {
		if seg == "=" {
			segs[i] = ""
			continue
		}
		var b strings.Builder
		for j := 0; j < len(seg); j++ {
			if seg[j] == '=' && j+2 < len(seg) {
				if v, err := hex.DecodeString(seg[j+1 : j+3]); err == nil {
					b.Write(v)
					j += 2
					continue
				}
			}
			b.WriteByte(seg[j])
		}
		segs[i] = b.String()
	}
	return strings.Join(segs, "/")
}

// String names the storage in certmagic's logs (never its contents).
func (s *Storage) String() string { return "jetstream-kv:" + s.opts.Bucket }
