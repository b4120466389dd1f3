package statesync

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"testing"

	"github.com/meridian-edge/meridian/internal/crdt"
)

// referenceHash is hashRegister written with hash/fnv and VClock.String, as
// PROTOCOL.md describes it; the inline version must give the same digests.
func referenceHash(key string, r crdt.Register) uint64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	var buf [8]byte
	for _, v := range r.Versions {
		h.Write([]byte{0})
		h.Write([]byte(v.Node))
		h.Write([]byte(v.Clock.String()))
		binary.LittleEndian.PutUint64(buf[:], uint64(v.Wall))
		h.Write(buf[:])
		binary.LittleEndian.PutUint64(buf[:], uint64(v.Expires))
		h.Write(buf[:])
		if v.Deleted {
			h.Write([]byte{1})
		}
		h.Write(v.Value)
	}
	return h.Sum64()
}

func TestDigestHashesMatchFNV(t *testing.T) {
	for i := range 200 {
		clock := crdt.VClock{}
		for j := range i % 12 { // past the 8 entries kept on the stack
			clock[fmt.Sprintf("pop-%d", (i*7+j*13)%50)] = uint64(i*j + j)
		}
		clock["w"] = uint64(i + 1)
		r := crdt.Register{Versions: []crdt.Version{
			{Node: "w", Clock: clock, Wall: int64(i) << 40, Expires: int64(i), Value: []byte(fmt.Sprint("value", i))},
			{Node: "x", Clock: crdt.VClock{"x": 1, "zero": 0}, Deleted: true, Wall: -int64(i)},
		}}
		key := fmt.Sprintf("kv/site/k%d", i)
		if got, want := hashRegister(key, r), referenceHash(key, r); got != want {
			t.Fatalf("register %d: hash %x, want %x", i, got, want)
		}
		h := fnv.New32a()
		h.Write([]byte(key))
		if got, want := bucketOf(key), int(h.Sum32()%DigestBuckets); got != want {
			t.Fatalf("key %s: bucket %d, want %d", key, got, want)
		}
	}
}
