package l3_test

import (
	"context"
	"fmt"
	"io"
	"testing"

	"github.com/meridian-edge/meridian/internal/testutil"
)

// BenchmarkGet measures L3 hits (16 KiB and 1 MiB) from a local versitygw:
// the cost of the S3 round trip a regional tier adds, on loopback.
func BenchmarkGet(b *testing.B) {
	srv := testutil.StartS3(b)
	tr := newTier(b, srv, nil)
	for _, n := range []int{16 << 10, 1 << 20} {
		key := fmt.Sprint("bench-", n)
		if err := put(b, tr, key, body(key, n)); err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("%dKiB", n>>10), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				o, err := tr.Get(context.Background(), key)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, o.Body)
				o.Body.Close()
			}
		})
	}
}

// BenchmarkPut measures storing 16 KiB objects (one PUT each).
func BenchmarkPut(b *testing.B) {
	srv := testutil.StartS3(b)
	tr := newTier(b, srv, nil)
	data := body("x", 16<<10)
	b.SetBytes(int64(len(data)))
	i := 0
	for b.Loop() {
		if err := put(b, tr, fmt.Sprint("k", i), data); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
