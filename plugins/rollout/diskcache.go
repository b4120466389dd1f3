package rollout

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// diskCache keeps, on the PoP's disk, what a PoP needs to run its plugins
// again after a restart while NATS is unreachable: the blobs it runs, their
// catalogue entries and the site chains. The deployment records themselves
// survive in statesync's own snapshot. JetStream stays the source of truth;
// the cache is only read when a blob or entry is needed and the cache has it,
// and every blob read is checked against its SHA-256.
type diskCache struct{ dir string }

func (c *diskCache) path(parts ...string) string {
	return filepath.Join(append([]string{c.dir}, parts...)...)
}

// write stores b at path atomically (temp file, then rename).
func (c *diskCache) write(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func (c *diskCache) blobPath(sha string) string { return c.path("blobs", sha+".wasm") }

func (c *diskCache) putBlob(sha string, wasm []byte) error { return c.write(c.blobPath(sha), wasm) }

// blob returns the cached blob if it is there and intact.
func (c *diskCache) blob(sha string) ([]byte, bool) {
	b, err := os.ReadFile(c.blobPath(sha))
	if err != nil {
		return nil, false
	}
	sum := sha256.Sum256(b)
	if hex.EncodeToString(sum[:]) != sha {
		os.Remove(c.blobPath(sha)) // damaged: fetch again
		return nil, false
	}
	return b, true
}

func (c *diskCache) dropBlob(sha string) { os.Remove(c.blobPath(sha)) }

func (c *diskCache) versionPath(site, plugin string, n int) string {
	return c.path("versions", site+"."+plugin+"."+strconv.Itoa(n)+".json")
}

func (c *diskCache) putVersion(v Version) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.write(c.versionPath(v.Site, v.Plugin, v.Version), b)
}

func (c *diskCache) version(site, plugin string, n int) (Version, bool) {
	b, err := os.ReadFile(c.versionPath(site, plugin, n))
	var v Version
	if err != nil || json.Unmarshal(b, &v) != nil || v.Version != n || v.SHA256 == "" {
		return Version{}, false
	}
	return v, true
}

func (c *diskCache) putChain(site string, d ChainDoc) error {
	b, err := json.Marshal(d)
	if err != nil {
		return err
	}
	return c.write(c.path("chains", site+".json"), b)
}

func (c *diskCache) dropChain(site string) { os.Remove(c.path("chains", site+".json")) }

// chains loads every cached site chain.
func (c *diskCache) chains() (map[string]ChainDoc, error) {
	ents, err := os.ReadDir(c.path("chains"))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("rollout: read plugin cache %s: %w", c.path("chains"), err)
	}
	out := map[string]ChainDoc{}
	for _, e := range ents {
		site, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || checkSite(site) != nil {
			continue
		}
		b, err := os.ReadFile(c.path("chains", e.Name()))
		if err != nil {
			continue
		}
		var d ChainDoc
		if json.Unmarshal(b, &d) == nil && d.validate() == nil {
			out[site] = d
		}
	}
	return out, nil
}
