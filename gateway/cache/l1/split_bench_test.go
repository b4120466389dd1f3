package l1_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"

	"github.com/meridian-edge/meridian/gateway/cache/l1"
	"github.com/meridian-edge/meridian/gateway/cache/tier"
)

// BenchmarkFullTierSmallObjects fills a preallocated 256 MiB tier twice
// over with 1 KiB objects, then times full garbage collections. It reports
// what the adaptive split costs against the fixed one: objects held, the
// process's resident bytes per held object, heap objects for the collector
// to mark, and the time (ns/op) of one full collection. Rough figures on
// a shared box: compare the two within one run.
//
//	go test -run XXX -bench FullTierSmallObjects -benchtime 5x ./gateway/cache/l1
func BenchmarkFullTierSmallObjects(b *testing.B) {
	for _, v := range []struct {
		name string
		min  int64
	}{{"adaptive", 0}, {"static", -1}} {
		const budget = 256 << 20
		debug.FreeOSMemory()
		rss0 := rss(b)
		c, err := l1.New(l1.Options{Bytes: budget, LargeBodyMin: v.min, Preallocate: true, Admission: l1.AdmitAlways})
		if err != nil {
			b.Fatal(err)
		}
		body := make([]byte, 1024)
		for i := range 2 * budget / 1024 {
			w, err := c.Put(context.Background(), fmt.Sprint("http://example.com/o/", i), &tier.Meta{Status: 200, Size: 1024})
			if err != nil {
				continue
			}
			w.Write(body)
			w.Commit()
		}
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		n, _ := c.Usage()
		perObject := float64(rss(b)-rss0) / float64(n)
		b.Run(v.name, func(b *testing.B) {
			for range b.N {
				runtime.GC()
			}
			b.ReportMetric(float64(n), "objects")
			b.ReportMetric(perObject, "rss-B/object")
			b.ReportMetric(float64(ms.HeapObjects), "heap-objects")
		})
		c.Close()
	}
}

// rss returns the process's resident set in bytes (Linux).
func rss(b *testing.B) int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Skipf("no /proc/self/status: %v", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	b.Skip("no VmRSS in /proc/self/status")
	return 0
}
