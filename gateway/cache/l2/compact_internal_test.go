package l2

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway/cache/tier"
)

// The journal is folded into the snapshot while the tier runs, and a crash
// right after (no Close) still reopens to the same index.
func TestOnlineCompaction(t *testing.T) {
	dir := t.TempDir()
	tr, err := Open(Options{Dir: dir, Bytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	tr.compactAfter = 20
	ctx := context.Background()
	records := 0 // journal records written: one per store and per delete
	for i := range 100 {
		w, err := tr.Put(ctx, fmt.Sprint("k", i), &tier.Meta{URL: "https://x/", Size: -1})
		if err != nil {
			t.Fatal(err)
		}
		_, _ = w.Write(make([]byte, 100+i))
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
		records++
		if i%4 == 0 {
			_ = tr.Delete(ctx, fmt.Sprint("k", i/2)) // k(i/2) exists: journalled
			records++
		}
	}
	// Wait for the last compaction to finish.
	deadline := time.Now().Add(10 * time.Second)
	for {
		tr.mu.Lock()
		busy := tr.compacting
		tr.mu.Unlock()
		if !busy {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("compaction did not finish")
		}
		time.Sleep(5 * time.Millisecond)
	}
	fi, err := os.Stat(filepath.Join(dir, logName))
	if err != nil {
		t.Fatal(err)
	}
	// How many records the last journal holds depends on when the
	// background compactions ran (each raises the next threshold to twice
	// the snapshot), so only "fewer than were written" is certain.
	if fi.Size() >= int64(records*logRecSize) {
		t.Fatalf("journal is %d bytes for %d records written: it was never compacted", fi.Size(), records)
	}
	if recs, err := readSnapshot(dir); err != nil || len(recs) == 0 {
		t.Fatalf("no snapshot written while running: %d entries, %v", len(recs), err)
	}
	objs, used := tr.Usage()
	// Simulate a crash: no Close. A second Open of the same directory sees
	// the snapshot plus the journal written since.
	tr2, err := Open(Options{Dir: dir, Bytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer tr2.Close()
	objs2, used2 := tr2.Usage()
	if objs2 != objs || used2 != used {
		t.Fatalf("after reopen %d objects %d bytes, before %d %d", objs2, used2, objs, used)
	}
	tr.cancel()
	tr.wg.Wait()
}
