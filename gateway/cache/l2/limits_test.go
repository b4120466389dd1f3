//go:build linux

package l2_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meridian-edge/meridian/gateway/cache/l2"
	"github.com/meridian-edge/meridian/gateway/cache/tier"
)

// The tier keeps two bounded caches on its read path: open descriptors and
// mappings of object files (at most 1024 files, fdcache.go) and decoded
// metadata (8192 direct-mapped slots, metacache.go). These tests read more
// distinct objects than either holds and check, from outside, that the
// process never holds more of the tier's files than the limit and that
// every hit is still its own object once others have pushed it out.

const (
	fdLimit   = 1024 // fdcache.go: fdCacheSize
	metaSlots = 8192 // metacache.go: metaSlots
)

// heldFiles returns the files under dir this process holds open or mapped
// (one file may be both: the tier keeps a mapped file's descriptor too),
// from /proc/self.
func heldFiles(t *testing.T, dir string) map[string]bool {
	t.Helper()
	held := map[string]bool{}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && strings.HasPrefix(target, dir) {
			held[target] = true
		}
	}
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if i := strings.Index(line, dir); i >= 0 {
			held[line[i:]] = true
		}
	}
	return held
}

// limitsMeta is an object's metadata with a header value of its own, so a
// hit answered with another object's decoded metadata shows.
func limitsMeta(key, version string) *tier.Meta {
	m := meta("https://example.com/" + key)
	m.Header.Set("Etag", fmt.Sprintf(`"%s-%s"`, key, version))
	return m
}

func putMeta(t *testing.T, tr *l2.Tier, key string, m *tier.Meta, b []byte) {
	t.Helper()
	w, err := tr.Put(context.Background(), key, m)
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	if _, err := w.Write(b); err != nil {
		t.Fatalf("write %s: %v", key, err)
	}
	if err := w.Commit(); err != nil {
		t.Fatalf("commit %s: %v", key, err)
	}
}

// TestReadCachesStayBoundedAndCorrect reads more small objects than both
// caches hold, three times over (a first hit keeps a descriptor, a second
// maps the file, later ones reuse the mapping), then replaces some objects
// in place: the tier never holds more than 1024 of its files open or
// mapped, every hit returns its own body and metadata, and Close lets go of
// every file.
func TestReadCachesStayBoundedAndCorrect(t *testing.T) {
	const n = metaSlots + 108 // more than either cache holds: slots must be shared
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	version := make([]string, n)
	tr, err := l2.Open(l2.Options{Dir: dir, Bytes: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	objects := filepath.Join(dir, "objects") // the object files (not the journal)
	key := func(i int) string { return fmt.Sprintf("obj-%05d", i) }
	bodyOf := func(i int) []byte {
		if version[i] == "v1" {
			return body(key(i), 200+i%300)
		}
		return body(key(i)+version[i], 200+i%300)
	}
	for i := range n {
		version[i] = "v1"
		putMeta(t, tr, key(i), limitsMeta(key(i), "v1"), bodyOf(i))
	}
	check := func(pass string, i int) {
		t.Helper()
		m, b, err := get(t, tr, key(i))
		if err != nil {
			t.Fatalf("%s: %s: %v", pass, key(i), err)
		}
		want := fmt.Sprintf(`"%s-%s"`, key(i), version[i])
		if got := m.Header.Get("Etag"); got != want || m.URL != "https://example.com/"+key(i) {
			t.Fatalf("%s: %s: metadata of another object or version: ETag %s URL %s, want %s", pass, key(i), got, m.URL, want)
		}
		if !bytes.Equal(b, bodyOf(i)) {
			t.Fatalf("%s: %s: another object's body", pass, key(i))
		}
	}
	for pass := range 3 {
		for i := range n {
			check(fmt.Sprint("pass ", pass), i)
		}
		held := len(heldFiles(t, objects))
		t.Logf("after pass %d: %d object files held open or mapped", pass, held)
		if held > fdLimit {
			t.Errorf("after reading %d objects (pass %d): %d object files held open or mapped; the tier keeps at most %d", n, pass, held, fdLimit)
		}
	}
	// Replace every 37th object with new metadata and body of the same
	// size: hits see the new version, however their file was cached.
	for i := 0; i < n; i += 37 {
		version[i] = "v2"
		putMeta(t, tr, key(i), limitsMeta(key(i), "v2"), bodyOf(i))
	}
	for i := range n {
		check("after replacing", i)
	}
	if held := len(heldFiles(t, objects)); held > fdLimit {
		t.Errorf("after replacing: %d object files held open or mapped, over %d", held, fdLimit)
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if held := heldFiles(t, objects); len(held) != 0 {
		t.Errorf("after Close: %d object files still held open or mapped", len(held))
	}
}
