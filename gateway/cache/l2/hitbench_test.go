package l2

import (
	"context"
	"fmt"
	"io"
	"testing"
)

// BenchmarkHit measures the tier's own cost of an L2 hit: Get of one of 64
// objects, the body copied out (WriteTo into io.Discard) and closed, on
// GOMAXPROCS goroutines at once, keys made before the loop so that
// allocs/op are the tier's alone. Each object is hit twice first, so the
// mmap runs serve from kept mappings and the pread runs from kept
// descriptors (small) or fresh opens (large), as in steady state.
// cpu-ns/op is the process's CPU per hit (getrusage, Linux), steadier than
// ns/op on a shared machine. Run with -benchtime 20000x or so.
func BenchmarkHit(b *testing.B) {
	ctx := context.Background()
	for _, size := range []int{16 << 10, 1 << 20} {
		for _, mode := range []string{"mmap", "pread"} {
			b.Run(fmt.Sprintf("%dKiB/%s", size>>10, mode), func(b *testing.B) {
				t := benchTier(b, mode)
				keys := make([]string, 64)
				for i := range keys {
					keys[i] = fmt.Sprint("k", i)
					benchPut(b, t, keys[i], size)
				}
				hit := func(key string, buf []byte) error {
					o, err := t.Get(ctx, key)
					if err != nil {
						return err
					}
					_, err = io.CopyBuffer(io.Discard, o.Body, buf)
					o.Body.Close()
					return err
				}
				buf := make([]byte, 32<<10)
				for range 2 {
					for _, k := range keys {
						if err := hit(k, buf); err != nil {
							b.Fatal(err)
						}
					}
				}
				b.SetBytes(int64(size))
				cpu0 := processCPU()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					buf := make([]byte, 32<<10)
					for i := 0; pb.Next(); i++ {
						if err := hit(keys[i%len(keys)], buf); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.StopTimer()
				if processCPUMeasured {
					b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
				}
			})
		}
	}
}
