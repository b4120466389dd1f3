package tiered_test

import (
	"context"
	"fmt"
	"io"
	"testing"

	"github.com/meridian-edge/meridian/gateway/cache/l1"
	"github.com/meridian-edge/meridian/gateway/cache/l2"
	"github.com/meridian-edge/meridian/gateway/cache/tier"
	"github.com/meridian-edge/meridian/gateway/cache/tiered"
)

// BenchmarkGetFrom measures a 16 KiB hit through the composition, answered
// by L1 and (with the key absent from L1) by L2, in parallel.
func BenchmarkGetFrom(b *testing.B) {
	t1, err := l1.New(l1.Options{Bytes: 64 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer t1.Close()
	t2, err := l2.Open(l2.Options{Dir: b.TempDir(), Bytes: 256 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer t2.Close()
	all, err := tiered.New(tiered.Options{Tiers: []tier.Tier{t1, t2}, PromoteAfter: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer all.Close()
	const n = 16 << 10
	for i := range 64 {
		k := fmt.Sprint("l1-", i)
		if err := put(b, t1, k, body(k, n)); err != nil {
			b.Fatal(err)
		}
		k = fmt.Sprint("l2-", i)
		if err := put(b, t2, k, body(k, n)); err != nil {
			b.Fatal(err)
		}
	}
	for _, tierName := range []string{"l1", "l2"} {
		b.Run(tierName, func(b *testing.B) {
			b.SetBytes(n)
			b.RunParallel(func(pb *testing.PB) {
				buf := make([]byte, 32<<10)
				i := 0
				for pb.Next() {
					o, from, err := all.GetFrom(context.Background(), fmt.Sprint(tierName, "-", i%64))
					if err != nil || from != tierName {
						b.Errorf("from %q: %v", from, err)
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
