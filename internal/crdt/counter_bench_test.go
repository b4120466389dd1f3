package crdt

import (
	"fmt"
	"testing"
)

// BenchmarkCounterAddAndMerge is a rate limiter's path on one PoP of a
// 50-PoP fleet: an own add (no TTL) to a counter every PoP adds to, then
// the merge of another PoP's delta.
func BenchmarkCounterAddAndMerge(b *testing.B) {
	cs := Counters{}
	peers := make([]string, 50)
	for i := range peers {
		peers[i] = fmt.Sprintf("pop-%d", i)
		cs.Add(peers[i], "ctr/s/rl", 1)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		_, _ = cs.Add("pop-0", "ctr/s/rl", 1)
		p := cs["ctr/s/rl"][peers[1+i%49]]
		p.P++
		cs.Merge(Counters{"ctr/s/rl": {peers[1+i%49]: p}})
	}
}
