package l2_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-edge/meridian/gateway/cache/l2"
	"github.com/meridian-edge/meridian/gateway/cache/tier"
)

func open(t testing.TB, dir string, budget int64) *l2.Tier {
	t.Helper()
	tr, err := l2.Open(l2.Options{Dir: dir, Bytes: budget})
	if err != nil {
		t.Fatalf("open l2 in %s: %v", dir, err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

func body(key string, n int) []byte {
	b := make([]byte, n)
	seed := byte(len(key))
	for _, c := range []byte(key) {
		seed = seed*31 + c
	}
	for i := range b {
		b[i] = seed + byte(i*7+i/251)
	}
	return b
}

func meta(url string) *tier.Meta {
	return &tier.Meta{
		Kind: tier.KindResponse, Site: "s1", URL: url, Status: 200,
		Header:      http.Header{"Content-Type": {"text/plain"}, "Etag": {`"v1"`}},
		RequestTime: time.Unix(1700000000, 0), ResponseTime: time.Unix(1700000001, 0), Size: -1,
	}
}

func put(t testing.TB, tr tier.Tier, key string, b []byte) {
	t.Helper()
	w, err := tr.Put(context.Background(), key, meta("https://example.com/"+key))
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	// Write in uneven chunks, as a proxy streaming an origin body would.
	for len(b) > 0 {
		n := min(len(b), 10_000)
		if _, err := w.Write(b[:n]); err != nil {
			t.Fatalf("write %s: %v", key, err)
		}
		b = b[n:]
	}
	if err := w.Commit(); err != nil {
		t.Fatalf("commit %s: %v", key, err)
	}
}

// wantRemovedCorrupt fails the test unless tr counted one corrupt file and
// file, the damaged one, is gone from disk.
func wantRemovedCorrupt(t testing.TB, tr *l2.Tier, file string) {
	t.Helper()
	if n := tr.Counters().Corrupt; n != 1 {
		t.Fatalf("corrupt counter = %d, want 1", n)
	}
	if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("damaged file still on disk: %v", err)
	}
}

func get(t testing.TB, tr tier.Tier, key string) (*tier.Meta, []byte, error) {
	t.Helper()
	o, err := tr.Get(context.Background(), key)
	if err != nil {
		return nil, nil, err
	}
	defer o.Body.Close()
	b, err := io.ReadAll(o.Body)
	return o.Meta, b, err
}

func TestRoundTripSizes(t *testing.T) {
	tr := open(t, t.TempDir(), 64<<20)
	for _, n := range []int{0, 1, 16 << 10, 64 << 10, 64<<10 + 1, 300 << 10, 1<<20 + 3} {
		key := fmt.Sprintf("https://example.com/obj-%d", n)
		want := body(key, n)
		put(t, tr, key, want)
		m, got, err := get(t, tr, key)
		if err != nil {
			t.Fatalf("%d bytes: get: %v", n, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%d bytes: body differs (got %d bytes)", n, len(got))
		}
		if m.Size != int64(n) || m.URL != "https://example.com/"+key || m.Header.Get("Etag") != `"v1"` || m.Status != 200 {
			t.Fatalf("%d bytes: meta = %+v", n, m)
		}
	}
	if _, _, err := get(t, tr, "absent"); !errors.Is(err, tier.ErrNotFound) {
		t.Fatalf("absent key: err = %v, want ErrNotFound", err)
	}
}

func TestGetRangeReadsOnlyTheRange(t *testing.T) {
	tr := open(t, t.TempDir(), 64<<20)
	const n = 1<<20 + 12345
	want := body("big", n)
	put(t, tr, "big", want)
	small := body("small", 1000)
	put(t, tr, "small", small)
	cases := []struct {
		key      string
		full     []byte
		off, len int64
	}{
		{"big", want, 0, 10},
		{"big", want, 65535, 2},         // straddles a block boundary
		{"big", want, 500_000, 300_000}, // several blocks
		{"big", want, n - 7, 7},         // the tail
		{"big", want, 200_000, -1},      // to the end
		{"small", small, 10, 20},        // inline file
		{"small", small, 1000, 0},       // empty range at the end
	}
	for _, c := range cases {
		o, err := tr.GetRange(context.Background(), c.key, c.off, c.len)
		if err != nil {
			t.Fatalf("%s %d+%d: %v", c.key, c.off, c.len, err)
		}
		got, err := io.ReadAll(o.Body)
		o.Body.Close()
		end := int64(len(c.full))
		if c.len >= 0 {
			end = c.off + c.len
		}
		if err != nil || !bytes.Equal(got, c.full[c.off:end]) {
			t.Fatalf("%s %d+%d: err=%v, got %d bytes, want %d", c.key, c.off, c.len, err, len(got), end-c.off)
		}
		if o.Meta.Size != int64(len(c.full)) {
			t.Fatalf("meta size %d, want full length %d", o.Meta.Size, len(c.full))
		}
	}
	// The body of a whole-object Get seeks, for a Range.
	for _, c := range cases {
		o, err := tr.Get(context.Background(), c.key)
		if err != nil {
			t.Fatal(err)
		}
		s, ok := o.Body.(io.Seeker)
		if !ok {
			t.Fatalf("%s: body %T does not seek", c.key, o.Body)
		}
		if _, err := s.Seek(c.off, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		end := int64(len(c.full))
		if c.len >= 0 {
			end = c.off + c.len
		}
		got, err := io.ReadAll(io.LimitReader(o.Body, end-c.off))
		o.Body.Close()
		if err != nil || !bytes.Equal(got, c.full[c.off:end]) {
			t.Fatalf("seek %s %d+%d: err=%v", c.key, c.off, c.len, err)
		}
	}
	if _, err := tr.GetRange(context.Background(), "big", n, 1); !errors.Is(err, l2.ErrRange) {
		t.Fatalf("range past the end: err = %v, want ErrRange", err)
	}
	if _, err := tr.GetRange(context.Background(), "big", -1, 1); !errors.Is(err, l2.ErrRange) {
		t.Fatalf("negative offset: err = %v, want ErrRange", err)
	}
}

func TestRestartKeepsObjectsAndUsage(t *testing.T) {
	dir := t.TempDir()
	tr, err := l2.Open(l2.Options{Dir: dir, Bytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		put(t, tr, fmt.Sprint("k", i), body(fmt.Sprint("k", i), 1000*i))
	}
	if err := tr.Delete(context.Background(), "k7"); err != nil {
		t.Fatal(err)
	}
	objs, used := tr.Usage()
	if err := tr.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	tr2 := open(t, dir, 64<<20)
	objs2, used2 := tr2.Usage()
	if objs2 != objs || used2 != used || objs != 49 {
		t.Fatalf("after restart usage = %d objects %d bytes, before %d objects %d bytes", objs2, used2, objs, used)
	}
	if tr2.Counters().IndexRebuilt != 0 {
		t.Fatal("a clean restart rebuilt the index")
	}
	for i := range 50 {
		k := fmt.Sprint("k", i)
		_, got, err := get(t, tr2, k)
		if i == 7 {
			if !errors.Is(err, tier.ErrNotFound) {
				t.Fatalf("deleted k7 came back: %v", err)
			}
			continue
		}
		if err != nil || !bytes.Equal(got, body(k, 1000*i)) {
			t.Fatalf("%s after restart: err=%v", k, err)
		}
	}
}

// objectFile finds the single object file below dir.
func objectFiles(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(filepath.Join(dir, "objects"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func TestFlippedBytesAreMissRemovedCounted(t *testing.T) {
	cases := []struct {
		name string
		size int
		// at picks the byte offset to flip from the file length.
		at func(n int64) int64
		// byteReads reads one byte at a time (the buffered, not the direct,
		// path of large bodies).
		byteReads bool
	}{
		{"header", 100, func(int64) int64 { return 9 }, false},
		{"key", 100, func(int64) int64 { return 33 }, false},
		{"small body", 5000, func(int64) int64 { return 1000 }, false},
		{"meta at the end", 5000, func(n int64) int64 { return n - 3 }, false},
		{"large body first block", 1 << 20, func(int64) int64 { return 40 + 100 }, false},
		{"large body middle block", 1 << 20, func(n int64) int64 { return n / 2 }, false},
		{"large body last block", 1<<20 + 100, func(n int64) int64 { return 32 + 3 + 1<<20 + 50 }, false},
		{"large body, byte reads", 300 << 10, func(n int64) int64 { return 32 + 3 + 100_000 }, true},
		{"block table", 1 << 20, func(n int64) int64 { return 32 + 3 + 1<<20 + 4 }, false},
		{"truncated", 5000, nil, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			tr := open(t, dir, 64<<20)
			want := body("obj", c.size)
			put(t, tr, "obj", want)
			files := objectFiles(t, dir)
			if len(files) != 1 {
				t.Fatalf("%d object files, want 1", len(files))
			}
			b, _ := os.ReadFile(files[0])
			if c.at == nil {
				b = b[:len(b)-10]
			} else {
				b[c.at(int64(len(b)))] ^= 0x5a
			}
			if err := os.WriteFile(files[0], b, 0o644); err != nil {
				t.Fatal(err)
			}
			// Read as net/http does: io.Copy with a 32 KiB buffer (the
			// block-sized direct path for large bodies).
			var got []byte
			o, err := tr.Get(context.Background(), "obj")
			if err == nil {
				var out bytes.Buffer
				var src io.Reader = struct{ io.Reader }{o.Body}
				if c.byteReads {
					src = iotest.OneByteReader(o.Body)
				}
				_, err = io.CopyBuffer(struct{ io.Writer }{&out}, src, make([]byte, 32<<10))
				o.Body.Close()
				got = out.Bytes()
			}
			switch {
			case errors.Is(err, tier.ErrNotFound):
				// Detected before any byte was returned.
			case err != nil:
				// Detected while streaming a large body: what was returned
				// must be a verified prefix, never a wrong byte.
				if !bytes.HasPrefix(want, got) {
					t.Fatalf("corrupt bytes were returned before the error %v", err)
				}
			default:
				t.Fatalf("a damaged file was served whole (%d bytes)", len(got))
			}
			wantRemovedCorrupt(t, tr, files[0])
			if objs, _ := tr.Usage(); objs != 0 {
				t.Fatalf("index still holds %d objects", objs)
			}
			if _, _, err := get(t, tr, "obj"); !errors.Is(err, tier.ErrNotFound) {
				t.Fatalf("second get: %v, want ErrNotFound", err)
			}
		})
	}
}

func TestBudgetEvictsWithoutErrors(t *testing.T) {
	dir := t.TempDir()
	const budget = 2 << 20
	tr := open(t, dir, budget)
	for i := range 200 { // 200 x 40 KiB = 8 MB through a 2 MiB budget
		put(t, tr, fmt.Sprint("k", i), body(fmt.Sprint("k", i), 40<<10))
		if i%5 == 0 { // some keys are popular
			_, _, _ = get(t, tr, "k0")
		}
	}
	objs, used := tr.Usage()
	if used > budget {
		t.Fatalf("used %d bytes, budget %d", used, budget)
	}
	c := tr.Counters()
	if c.Evictions == 0 || c.Stored != 200 {
		t.Fatalf("counters = %+v, want evictions and 200 stores", c)
	}
	var onDisk int64
	for _, f := range objectFiles(t, dir) {
		fi, _ := os.Stat(f)
		onDisk += fi.Size()
	}
	if onDisk > budget {
		t.Fatalf("%d bytes of object files on disk, budget %d", onDisk, budget)
	}
	if int(objs) != len(objectFiles(t, dir)) {
		t.Fatalf("index has %d objects, disk %d files", objs, len(objectFiles(t, dir)))
	}
	if _, _, err := get(t, tr, "k0"); err != nil {
		t.Fatalf("the popular key k0 was evicted: %v", err)
	}
	if _, _, err := get(t, tr, "k199"); err != nil {
		t.Fatalf("the newest key was evicted: %v", err)
	}
}

func TestTooLargeAndBadOptions(t *testing.T) {
	tr, err := l2.Open(l2.Options{Dir: t.TempDir(), Bytes: 8 << 20, MaxObject: 100_000})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	m := meta("https://example.com/x")
	m.Size = 200_000
	if _, err := tr.Put(context.Background(), "x", m); !errors.Is(err, tier.ErrTooLarge) {
		t.Fatalf("declared too large: %v", err)
	}
	w, err := tr.Put(context.Background(), "y", meta("https://example.com/y"))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write(make([]byte, 150_000))
	if err := w.Commit(); !errors.Is(err, tier.ErrTooLarge) {
		t.Fatalf("streamed too large: %v", err)
	}
	if _, _, err := get(t, tr, "y"); !errors.Is(err, tier.ErrNotFound) {
		t.Fatalf("too-large object stored: %v", err)
	}

	for _, c := range []struct {
		opts l2.Options
		want string
	}{
		{l2.Options{}, "Dir is required"},
		{l2.Options{Dir: t.TempDir(), Bytes: 1000}, "below the 1 MiB minimum"},
		{l2.Options{Dir: t.TempDir(), Policy: "fifo"}, `unknown policy "fifo"`},
		{l2.Options{Dir: t.TempDir(), Bytes: 4 << 20, MaxObject: 8 << 20}, "at most Bytes"},
	} {
		_, err := l2.Open(c.opts)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Open(%+v) = %v, want error containing %q", c.opts, err, c.want)
		}
	}
}

func TestAbortLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	tr := open(t, dir, 8<<20)
	w, err := tr.Put(context.Background(), "a", meta("https://example.com/a"))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write([]byte("partial"))
	w.Abort()
	if _, _, err := get(t, tr, "a"); !errors.Is(err, tier.ErrNotFound) {
		t.Fatalf("aborted object visible: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(ents) != 0 {
		t.Fatalf("%d temp files left after Abort", len(ents))
	}
}

func TestUpdateMetaScanDelete(t *testing.T) {
	dir := t.TempDir()
	tr := open(t, dir, 8<<20)
	ctx := context.Background()
	want := body("a", 200_000)
	put(t, tr, "a", want)
	put(t, tr, "b", body("b", 10))
	m := meta("https://example.com/a")
	m.Invalidated = true
	m.Header.Set("Surrogate-Key", "red blue")
	if err := tr.UpdateMeta(ctx, "a", m); err != nil {
		t.Fatalf("update meta: %v", err)
	}
	got, b, err := get(t, tr, "a")
	if err != nil || !bytes.Equal(b, want) {
		t.Fatalf("after update: err=%v", err)
	}
	if !got.Invalidated || got.Header.Get("Surrogate-Key") != "red blue" || got.Size != 200_000 {
		t.Fatalf("meta after update = %+v", got)
	}
	if err := tr.UpdateMeta(ctx, "nope", m); !errors.Is(err, tier.ErrNotFound) {
		t.Fatalf("update of a missing key: %v", err)
	}
	seen := map[string]string{}
	err = tr.Scan(ctx, func(key string, m *tier.Meta) bool {
		seen[key] = m.URL
		return true
	})
	if err != nil || len(seen) != 2 || seen["a"] != "https://example.com/a" || seen["b"] != "https://example.com/b" {
		t.Fatalf("scan = %v, %v", seen, err)
	}
	// Delete from inside Scan, as a purge does.
	err = tr.Scan(ctx, func(key string, m *tier.Meta) bool {
		if m.Invalidated {
			_ = tr.Delete(ctx, key)
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := get(t, tr, "a"); !errors.Is(err, tier.ErrNotFound) {
		t.Fatalf("deleted during scan, still served: %v", err)
	}
	if objs, _ := tr.Usage(); objs != 1 {
		t.Fatalf("%d objects left, want 1", objs)
	}
	if err := tr.Delete(ctx, "never-stored"); err != nil {
		t.Fatalf("delete of a missing key: %v", err)
	}
}

func TestLostIndexIsRebuiltFromFiles(t *testing.T) {
	dir := t.TempDir()
	tr, err := l2.Open(l2.Options{Dir: dir, Bytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		put(t, tr, fmt.Sprint("k", i), body(fmt.Sprint("k", i), 3000))
	}
	_, used := tr.Usage()
	tr.Close()
	// Damage the snapshot: the tier must not trust it.
	if err := os.WriteFile(filepath.Join(dir, "index.snap"), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	tr2 := open(t, dir, 8<<20)
	deadline := time.Now().Add(10 * time.Second)
	for {
		objs, used2 := tr2.Usage()
		if objs == 20 && used2 == used {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rebuilt index has %d objects %d bytes, want 20 and %d", objs, used2, used)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if tr2.Counters().IndexRebuilt != 1 {
		t.Fatal("IndexRebuilt not reported")
	}
	if _, got, err := get(t, tr2, "k3"); err != nil || !bytes.Equal(got, body("k3", 3000)) {
		t.Fatalf("k3 after rebuild: %v", err)
	}
}

func TestConcurrentUseOfSameKeys(t *testing.T) {
	dir := t.TempDir()
	tr, err := l2.Open(l2.Options{Dir: dir, Bytes: 4 << 20, Sync: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	done := make(chan error, 4)
	for g := range 4 {
		go func() {
			for i := range 150 {
				key := fmt.Sprint("k", (i*7+g)%20)
				switch i % 5 {
				case 0:
					_ = tr.Delete(ctx, key)
				case 1:
					m := meta("https://example.com/" + key)
					m.Invalidated = true
					_ = tr.UpdateMeta(ctx, key, m)
				default:
					w, err := tr.Put(ctx, key, meta("https://example.com/"+key))
					if err != nil {
						done <- err
						return
					}
					_, _ = w.Write(body(key, 50_000+i))
					// Same key, different lengths: the body must match its meta.
					if err := w.Commit(); err != nil {
						done <- err
						return
					}
				}
				if m, got, err := get(t, tr, key); err == nil {
					if int64(len(got)) != m.Size || !bytes.Equal(got, body(key, len(got))) {
						done <- fmt.Errorf("%s: %d bytes, meta says %d", key, len(got), m.Size)
						return
					}
				} else if !errors.Is(err, tier.ErrNotFound) {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for range 4 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	objs, used := tr.Usage()
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if c := tr.Counters(); c.Corrupt != 0 {
		t.Fatalf("%d corrupt files under concurrency", c.Corrupt)
	}
	tr2 := open(t, dir, 4<<20)
	objs2, used2 := tr2.Usage()
	if objs2 != objs || used2 != used || int(objs2) != len(objectFiles(t, dir)) {
		t.Fatalf("after reopen %d objects %d bytes (%d files); before %d, %d", objs2, used2, len(objectFiles(t, dir)), objs, used)
	}
}

func TestMetricsRegister(t *testing.T) {
	reg := prometheus.NewRegistry()
	tr, err := l2.Open(l2.Options{Dir: t.TempDir(), Bytes: 4 << 20, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	put(t, tr, "a", body("a", 10))
	_, _, _ = get(t, tr, "a")
	_, _, _ = get(t, tr, "b")
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		m := mf.GetMetric()[0]
		if m.Counter != nil {
			got[mf.GetName()] = m.Counter.GetValue()
		} else {
			got[mf.GetName()] = m.Gauge.GetValue()
		}
	}
	if got["meridian_cache_l2_hits_total"] != 1 || got["meridian_cache_l2_misses_total"] != 1 || got["meridian_cache_l2_objects"] != 1 {
		t.Fatalf("metrics = %v", got)
	}
	if _, err := l2.Open(l2.Options{Dir: t.TempDir(), Registerer: reg}); err == nil || !strings.Contains(err.Error(), "register metrics") {
		t.Fatalf("second tier on one registry: %v, want a registration error", err)
	}
}

func TestMissingIndexIsRebuiltFromFiles(t *testing.T) {
	dir := t.TempDir()
	tr, err := l2.Open(l2.Options{Dir: dir, Bytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Counters().IndexRebuilt != 0 {
		t.Fatal("a new directory reported a rebuild")
	}
	for i := range 10 {
		put(t, tr, fmt.Sprint("k", i), body(fmt.Sprint("k", i), 100))
	}
	tr.Close()
	if err := os.Remove(filepath.Join(dir, "index.snap")); err != nil {
		t.Fatal(err)
	}
	tr2 := open(t, dir, 8<<20)
	deadline := time.Now().Add(10 * time.Second)
	for n, _ := tr2.Usage(); n != 10; n, _ = tr2.Usage() {
		if time.Now().After(deadline) {
			t.Fatalf("index has %d objects after the walk, want 10", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
