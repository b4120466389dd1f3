package l2

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway/cache/tier"
)

func benchMeta() *tier.Meta {
	return &tier.Meta{Kind: tier.KindResponse, Site: "s", URL: "https://example.com/x", Status: 200,
		RequestTime: time.Now(), ResponseTime: time.Now(), Size: -1}
}

func benchPut(b testing.TB, t *Tier, key string, n int) {
	w, err := t.Put(context.Background(), key, benchMeta())
	if err != nil {
		b.Fatal(err)
	}
	_, _ = w.Write(make([]byte, n))
	if err := w.Commit(); err != nil {
		b.Fatal(err)
	}
}

// benchTier opens a tier of 1 GiB in a temporary directory, closed when
// the benchmark ends; mode "pread" turns mappings off.
func benchTier(b *testing.B, mode string) *Tier {
	t, err := Open(Options{Dir: b.TempDir(), Bytes: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = t.Close() })
	t.noMmap = mode == "pread"
	return t
}

// benchDirWithIndex prepares a closed tier directory whose index holds
// entries index entries plus one real 16 KiB object under "hot".
func benchDirWithIndex(b *testing.B, entries int, clean bool) string {
	dir := b.TempDir()
	t, err := Open(Options{Dir: dir, Bytes: 1 << 40})
	if err != nil {
		b.Fatal(err)
	}
	benchPut(b, t, "hot", 16<<10)
	if err := t.Close(); err != nil {
		b.Fatal(err)
	}
	recs, err := readSnapshot(dir)
	if err != nil {
		b.Fatal(err)
	}
	for i := range entries {
		recs = append(recs, snapRec{hash: uint64(i)*0x9e3779b97f4a7c15 + 7, size: 16 << 10, queue: qMain})
	}
	if err := writeSnapshot(dir, recs); err != nil {
		b.Fatal(err)
	}
	if !clean {
		// As after a SIGKILL: the dirty marker and a journal are left.
		_ = os.WriteFile(filepath.Join(dir, dirtyName), nil, 0o644)
		j, _ := openJournal(dir)
		for i := range 1000 {
			_ = j.append(opAdd, uint64(i)+1<<60, 4096)
		}
		_ = j.close()
	}
	return dir
}

// BenchmarkRestartFirstHit measures Open of a tier whose index holds 1 M
// objects until the first L2 hit has been read: the time a restarted PoP
// needs before it serves from disk.
func BenchmarkRestartFirstHit(b *testing.B) {
	for _, c := range []struct {
		name  string
		clean bool
	}{{"clean-1M", true}, {"after-kill-1M", false}} {
		b.Run(c.name, func(b *testing.B) {
			dir := benchDirWithIndex(b, 1_000_000, c.clean)
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			for b.Loop() {
				t, err := Open(Options{Dir: dir, Bytes: 1 << 40})
				if err != nil {
					b.Fatal(err)
				}
				o, err := t.Get(context.Background(), "hot")
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, o.Body)
				o.Body.Close()
				b.StopTimer()
				if n, _ := t.Usage(); n < 1_000_000 {
					b.Fatalf("index has %d entries", n)
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/1e6, "index-heap-MB")
				_ = t.Close()
				if !c.clean {
					_ = os.WriteFile(filepath.Join(dir, dirtyName), nil, 0o644)
				}
				b.StartTimer()
			}
		})
	}
}

// BenchmarkGet measures L2 hits read whole, from the page cache, in parallel.
func BenchmarkGet(b *testing.B) {
	for _, size := range []int{16 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			t, err := Open(Options{Dir: b.TempDir(), Bytes: 1 << 30})
			if err != nil {
				b.Fatal(err)
			}
			defer t.Close()
			for i := range 64 {
				benchPut(b, t, fmt.Sprint("k", i), size)
			}
			b.SetBytes(int64(size))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				buf := make([]byte, 32<<10)
				i := 0
				for pb.Next() {
					o, err := t.Get(context.Background(), fmt.Sprint("k", i%64))
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.CopyBuffer(io.Discard, o.Body, buf)
					o.Body.Close()
					i++
				}
			})
		})
	}
}

// BenchmarkPut measures storing 16 KiB objects (temp file, rename, index).
func BenchmarkPut(b *testing.B) {
	t, err := Open(Options{Dir: b.TempDir(), Bytes: 256 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer t.Close()
	b.SetBytes(16 << 10)
	i := 0
	for b.Loop() {
		benchPut(b, t, fmt.Sprint("k", i), 16<<10)
		i++
	}
}

// BenchmarkLostIndexRebuild measures, for a directory of 100k real object
// files whose index was lost: the time until the first hit (Open does not
// wait for the walk) and, reported as walk-ms, until the background walk
// has indexed every file. Run with -benchtime=1x: the setup writes 100k files.
func BenchmarkLostIndexRebuild(b *testing.B) {
	const files = 100_000
	dir := b.TempDir()
	t, err := Open(Options{Dir: dir, Bytes: 1 << 40})
	if err != nil {
		b.Fatal(err)
	}
	for i := range files {
		benchPut(b, t, fmt.Sprint("k", i), 1000)
	}
	_ = t.Close()
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		_ = os.Remove(filepath.Join(dir, snapName))
		b.StartTimer()
		start := time.Now()
		t, err := Open(Options{Dir: dir, Bytes: 1 << 40})
		if err != nil {
			b.Fatal(err)
		}
		o, err := t.Get(context.Background(), "k7")
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, o.Body)
		o.Body.Close()
		first := time.Since(start)
		deadline := time.Now().Add(2 * time.Minute)
		for {
			if n, _ := t.Usage(); n >= files {
				break
			}
			if time.Now().After(deadline) {
				n, _ := t.Usage()
				b.Fatalf("walk indexed %d of %d files in 2 minutes", n, files)
			}
			time.Sleep(time.Millisecond)
		}
		b.ReportMetric(float64(first.Microseconds())/1000, "first-hit-ms")
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "walk-ms")
		b.StopTimer()
		_ = t.Close()
		b.StartTimer()
	}
}

// BenchmarkHitToSocket measures L2 hits as a PoP serves them: Get, then the
// body's WriteTo into a loopback TCP connection that another goroutine
// drains. It reports the serving thread's own CPU per hit (cpu-µs/op, from
// getrusage(RUSAGE_THREAD), so a loaded machine changes it less than
// ns/op), for the mapped read paths and for the pread fallback. Run with
// -benchtime 2000x or so.
func BenchmarkHitToSocket(b *testing.B) {
	for _, size := range []int{16 << 10, 1 << 20} {
		for _, mode := range []string{"mmap", "pread"} {
			b.Run(fmt.Sprintf("%dKiB/%s", size>>10, mode), func(b *testing.B) {
				t := benchTier(b, mode)
				benchPut(b, t, "k", size)
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					b.Fatal(err)
				}
				defer ln.Close()
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				peer, err := ln.Accept()
				if err != nil {
					b.Fatal(err)
				}
				drained := make(chan struct{})
				go func() { _, _ = io.Copy(io.Discard, peer); close(drained) }()
				defer func() { c.Close(); <-drained; peer.Close() }()
				hit := func() {
					o, err := t.Get(context.Background(), "k")
					if err != nil {
						b.Fatal(err)
					}
					if _, err := o.Body.(io.WriterTo).WriteTo(c); err != nil {
						b.Fatal(err)
					}
					o.Body.Close()
				}
				hit()
				hit() // the second hit settles the kept descriptor or mapping
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				cpu0 := threadCPU()
				b.SetBytes(int64(size))
				b.ResetTimer()
				for range b.N {
					hit()
				}
				b.StopTimer()
				if threadCPUMeasured {
					b.ReportMetric(float64(threadCPU()-cpu0)/1e3/float64(b.N), "cpu-µs/op")
				}
			})
		}
	}
}
