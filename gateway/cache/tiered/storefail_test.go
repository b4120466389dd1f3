package tiered_test

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meridian-edge/meridian/gateway/cache/l1"
	"github.com/meridian-edge/meridian/gateway/cache/l2"
	"github.com/meridian-edge/meridian/gateway/cache/tier"
	"github.com/meridian-edge/meridian/gateway/cache/tiered"
	"github.com/meridian-edge/meridian/internal/testutil"
)

// TestL2WriteFailuresAreLoggedOnce: when L2's directory stops taking files
// (here its tmp directory is replaced by a file, which fails every create
// as a read-only or unwritable disk does, whoever runs the test), the
// failure is logged at WARN naming the tier, the directory and the error,
// and only once for many failed stores, not once per store.
func TestL2WriteFailuresAreLoggedOnce(t *testing.T) {
	logs := &testutil.SyncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	t1, err := l1.New(l1.Options{Bytes: 8 << 20, MaxObject: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = t1.Close() })
	dir := t.TempDir()
	t2, err := l2.Open(l2.Options{Dir: dir, Bytes: 64 << 20, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = t2.Close() })
	all, err := tiered.New(tiered.Options{Tiers: []tier.Tier{t1, t2}, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = all.Close() })

	tmp := filepath.Join(dir, "tmp")
	if err := os.RemoveAll(tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tmp, []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	const stores = 20
	for i := range stores {
		key := "k" + string(rune('a'+i))
		if err := put(t, all, key, body(key, 1000)); err != nil {
			t.Fatalf("store %s: %v (L1 still takes it)", key, err)
		}
	}
	flush(t, &stack{all: all})
	if got := all.Counters().Errors["l2"]; got != stores {
		t.Errorf("l2 errors = %d, want %d", got, stores)
	}
	var lines []string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "storing in a tier failed") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 {
		t.Fatalf("%d WARN lines for %d failed stores, want 1:\n%s", len(lines), stores, logs.String())
	}
	for _, want := range []string{"level=WARN", "tier=l2", "dir=" + dir, "not a directory"} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("log line lacks %q: %s", want, lines[0])
		}
	}
}
