package rollout

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Bucket names in JetStream (see the package doc).
const (
	BlobBucket = "MERIDIAN_PLUGINS"
	MetaBucket = "MERIDIAN_PLUGIN_META"
)

// Version is one uploaded version of a site's plugin, as the catalogue keeps
// it. Every PoP agrees on it.
type Version struct {
	Site     string    `json:"site"`
	Plugin   string    `json:"plugin"`
	Version  int       `json:"version"`
	SHA256   string    `json:"sha256"`
	Size     int       `json:"size"`
	Uploaded time.Time `json:"uploaded"`
	By       string    `json:"by,omitempty"`
	// PoP is the PoP that accepted the upload.
	PoP string `json:"pop,omitempty"`
}

// ChainDoc is a site's plugin chain: the plugins every request of the site
// runs, in order. The site owner sets it through the admin API.
type ChainDoc struct {
	// FailClosed answers 503 when a plugin fails; otherwise the failed
	// plugin is skipped.
	FailClosed bool         `json:"fail_closed,omitempty"`
	Entries    []ChainEntry `json:"entries"`
}

// ChainEntry is one plugin of a chain with its own config.
type ChainEntry struct {
	// Plugin is the plugin's name as pushed.
	Plugin string `json:"plugin"`
	// Config is what the plugin reads with config_get.
	Config map[string]string `json:"config,omitempty"`
	// RequestHeaders and ResponseHeaders are the headers passed to the
	// plugin ("*": all). Every byte crosses the wasm boundary per request.
	RequestHeaders  []string `json:"request_headers,omitempty"`
	ResponseHeaders []string `json:"response_headers,omitempty"`
}

// index is the position of plugin's entry in the chain, -1 when the chain
// does not run it.
func (d ChainDoc) index(plugin string) int {
	return slices.IndexFunc(d.Entries, func(e ChainEntry) bool { return e.Plugin == plugin })
}

func (d ChainDoc) validate() error {
	seen := map[string]bool{}
	for i, e := range d.Entries {
		if err := checkPlugin(e.Plugin); err != nil {
			return fmt.Errorf("entries[%d]: %w", i, err)
		}
		if seen[e.Plugin] {
			return fmt.Errorf("entries[%d]: plugin %q is in the chain twice", i, e.Plugin)
		}
		seen[e.Plugin] = true
	}
	return nil
}

// store is the JetStream side: blobs, catalogue and chains.
type store struct {
	obs jetstream.ObjectStore
	kv  jetstream.KeyValue
}

func openStore(ctx context.Context, js jetstream.JetStream, replicas int) (*store, error) {
	obs, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket: BlobBucket, Description: "Meridian plugin blobs: <site>/<plugin>/<sha256>",
		Storage: jetstream.FileStorage, Replicas: replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("rollout: open object store %s (is JetStream enabled on the NATS server?): %w", BlobBucket, err)
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: MetaBucket, Description: "Meridian plugin versions (v.<site>.<plugin>.<n>) and site chains (chain.<site>)",
		History: 5, Storage: jetstream.FileStorage, Replicas: replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("rollout: open KV bucket %s: %w", MetaBucket, err)
	}
	return &store{obs: obs, kv: kv}, nil
}

func blobName(site, plugin, sha string) string { return site + "/" + plugin + "/" + sha }

func versionKey(site, plugin string, n int) string {
	return "v." + site + "." + plugin + "." + strconv.Itoa(n)
}

func chainKey(site string) string { return "chain." + site }

// putBlob stores wasm unless the same bytes are already stored under its
// name (a blob that does not match its name is replaced).
func (s *store) putBlob(ctx context.Context, site, plugin, sha string, wasm []byte) error {
	name := blobName(site, plugin, sha)
	sum := sha256.Sum256(wasm)
	if info, err := s.obs.GetInfo(ctx, name); err == nil && !info.Deleted &&
		info.Digest == "SHA-256="+base64.URLEncoding.EncodeToString(sum[:]) {
		return nil
	}
	if _, err := s.obs.Put(ctx, jetstream.ObjectMeta{Name: name}, bytes.NewReader(wasm)); err != nil {
		return fmt.Errorf("rollout: store blob %s: %w", name, err)
	}
	return nil
}

// getBlob fetches a blob and checks its SHA-256 against sha.
func (s *store) getBlob(ctx context.Context, site, plugin, sha string) ([]byte, error) {
	name := blobName(site, plugin, sha)
	b, err := s.obs.GetBytes(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("rollout: fetch blob %s: %w", name, err)
	}
	sum := sha256.Sum256(b)
	if got := hex.EncodeToString(sum[:]); got != sha {
		return nil, fmt.Errorf("rollout: blob %s has SHA-256 %s: corrupt or replaced; re-upload the plugin", name, got)
	}
	return b, nil
}

// addVersion gives v (SHA256 set) a version number: the existing one when
// the same bytes were uploaded before, else the next free number.
func (s *store) addVersion(ctx context.Context, v Version) (Version, bool, error) {
	vs, err := s.versions(ctx, v.Site, v.Plugin)
	if err != nil {
		return Version{}, false, err
	}
	next := 1
	for _, old := range vs {
		if old.SHA256 == v.SHA256 {
			return old, false, nil
		}
		next = max(next, old.Version+1)
	}
	for range 100 {
		v.Version = next
		b, _ := json.Marshal(v)
		_, err := s.kv.Create(ctx, versionKey(v.Site, v.Plugin, next), b)
		if err == nil {
			return v, true, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return Version{}, false, fmt.Errorf("rollout: record version %d of %s/%s: %w", next, v.Site, v.Plugin, err)
		}
		next++ // another upload took it meanwhile
	}
	return Version{}, false, fmt.Errorf("rollout: no free version number for %s/%s", v.Site, v.Plugin)
}

// version reads one catalogue entry.
func (s *store) version(ctx context.Context, site, plugin string, n int) (Version, error) {
	e, err := s.kv.Get(ctx, versionKey(site, plugin, n))
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return Version{}, &noVersionError{site, plugin, n}
		}
		return Version{}, fmt.Errorf("rollout: read version %d of %s/%s: %w", n, site, plugin, err)
	}
	var v Version
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		return Version{}, fmt.Errorf("rollout: catalogue entry %s is corrupt: %w", e.Key(), err)
	}
	return v, nil
}

// versions lists a plugin's catalogue, oldest first.
func (s *store) versions(ctx context.Context, site, plugin string) ([]Version, error) {
	l, err := s.kv.ListKeysFiltered(ctx, "v."+site+"."+plugin+".*")
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("rollout: list versions of %s/%s: %w", site, plugin, err)
	}
	var keys []string
	for k := range l.Keys() {
		keys = append(keys, k)
	}
	_ = l.Stop()
	var out []Version
	for _, k := range keys {
		n, err := strconv.Atoi(k[strings.LastIndexByte(k, '.')+1:])
		if err != nil {
			continue
		}
		v, err := s.version(ctx, site, plugin, n)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b Version) int { return a.Version - b.Version })
	return out, nil
}

// plugins lists the plugin names with a catalogue entry for site.
func (s *store) plugins(ctx context.Context, site string) ([]string, error) {
	l, err := s.kv.ListKeysFiltered(ctx, "v."+site+".*.*")
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("rollout: list plugins of %s: %w", site, err)
	}
	seen := map[string]bool{}
	for k := range l.Keys() {
		parts := strings.Split(k, ".")
		if len(parts) == 4 {
			seen[parts[2]] = true
		}
	}
	_ = l.Stop()
	out := make([]string, 0, len(seen))
	for p := range seen {
		out = append(out, p)
	}
	slices.Sort(out)
	return out, nil
}

// chain reads a site's chain; rev is 0 when it has none.
func (s *store) chain(ctx context.Context, site string) (ChainDoc, uint64, error) {
	e, err := s.kv.Get(ctx, chainKey(site))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return ChainDoc{}, 0, nil
	}
	if err != nil {
		return ChainDoc{}, 0, fmt.Errorf("rollout: read chain of %s: %w", site, err)
	}
	var d ChainDoc
	if err := json.Unmarshal(e.Value(), &d); err != nil {
		return ChainDoc{}, 0, fmt.Errorf("rollout: chain of %s is corrupt: %w", site, err)
	}
	return d, e.Revision(), nil
}

// updateChain applies fn to site's chain with compare-and-set, retrying
// when another writer got there first.
func (s *store) updateChain(ctx context.Context, site string, fn func(*ChainDoc) (changed bool)) (ChainDoc, error) {
	for range 20 {
		d, rev, err := s.chain(ctx, site)
		if err != nil {
			return ChainDoc{}, err
		}
		if !fn(&d) {
			return d, nil
		}
		if err := d.validate(); err != nil {
			return ChainDoc{}, err
		}
		b, _ := json.Marshal(d)
		if rev == 0 {
			_, err = s.kv.Create(ctx, chainKey(site), b)
		} else {
			_, err = s.kv.Update(ctx, chainKey(site), b, rev)
		}
		if err == nil {
			return d, nil
		}
		var apiErr *jetstream.APIError
		if !errors.Is(err, jetstream.ErrKeyExists) && !(errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence) {
			return ChainDoc{}, fmt.Errorf("rollout: write chain of %s: %w", site, err)
		}
	}
	return ChainDoc{}, fmt.Errorf("rollout: chain of %s changed too often while writing it; try again", site)
}

// noVersionError is version's answer for a version the catalogue does not
// hold.
type noVersionError struct {
	site, plugin string
	n            int
}

func (e *noVersionError) Error() string {
	return fmt.Sprintf("rollout: %s/%s has no version %d (see 'meridian plugin list')", e.site, e.plugin, e.n)
}
