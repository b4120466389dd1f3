package statesync

import (
	"encoding/json"
	"testing"

	"github.com/meridian-edge/meridian/internal/crdt"
)

func sampleDelta() envelope {
	return envelope{
		Kind: kindDelta, From: "ams-1", SentMs: 1764245432123, ID: "ams-1.m3x9k2.17", Horizon: 42,
		Regs: map[string]crdt.Register{
			"kv/example.com/greeting": {Versions: []crdt.Version{
				{Value: []byte("hello"), Node: "ams-1", Wall: 1764245432123456789, Clock: crdt.VClock{"ams-1": 7, "fra-1": 3}},
				{Node: "fra-1", Deleted: true, Wall: -5, Clock: crdt.VClock{"fra-1": 4}},
			}},
			"purge/example.com/p1": {Versions: []crdt.Version{
				{Value: []byte(`{"id":"p1"}`), Node: "ams-1", Wall: 1, Expires: 99, Clock: crdt.VClock{"ams-1": 8}},
			}},
		},
		Counters: crdt.Counters{"ctr/example.com/rl": {"ams-1": {P: 12}, "fra-1": {P: 1, N: 300}}},
	}
}

// equalEnvelope compares what a receiver would merge.
func equalEnvelope(a, b envelope) bool {
	if a.Kind != b.Kind || a.From != b.From || a.SentMs != b.SentMs || a.ID != b.ID || a.Horizon != b.Horizon ||
		len(a.Digest) != len(b.Digest) || !(&crdt.Map{Regs: a.Regs}).Equal(&crdt.Map{Regs: b.Regs}) || !a.Counters.Equal(b.Counters) {
		return false
	}
	for i := range a.Digest {
		if a.Digest[i] != b.Digest[i] {
			return false
		}
	}
	return true
}

func TestWireRoundTripEveryKind(t *testing.T) {
	digest := make([]uint64, DigestBuckets)
	for i := range digest {
		digest[i] = uint64(i) * 0x9e3779b97f4a7c15
	}
	repair := sampleDelta()
	repair.Kind, repair.ID = kindRepair, ""
	cases := map[string]envelope{
		"delta":  sampleDelta(),
		"repair": repair,
		"digest": {Kind: kindDigest, From: "fra-1", SentMs: 5, Digest: digest},
	}
	for name, e := range cases {
		data, err := encode(e)
		if err != nil {
			t.Fatalf("%s: encode: %v", name, err)
		}
		if data[0] != WireVersion {
			t.Fatalf("%s: first byte %d, want the version %d", name, data[0], WireVersion)
		}
		got, err := decode(data)
		if err != nil {
			t.Fatalf("%s: decode: %v", name, err)
		}
		if !equalEnvelope(e, got) {
			t.Fatalf("%s: round trip changed the message:\n got %+v\nwant %+v", name, got, e)
		}
	}
	// Smaller than the JSON of version 1, which is what every PoP decodes.
	d, _ := encode(sampleDelta())
	j, _ := json.Marshal(sampleDelta())
	if len(d) >= len(j) {
		t.Fatalf("binary delta %d bytes, JSON %d", len(d), len(j))
	}
}

func TestWriterRefusesOversizedMessage(t *testing.T) {
	e := envelope{Kind: kindRepair, From: "a", Regs: map[string]crdt.Register{}}
	for i := range 10 {
		e.Regs["kv/s/"+string(rune('a'+i))] = crdt.Register{Versions: []crdt.Version{{Value: make([]byte, MaxValueSize), Node: "a", Wall: 1, Clock: crdt.VClock{"a": 1}}}}
	}
	if _, err := encode(e); err == nil {
		t.Fatal("a message over MaxMessageSize was encoded")
	}
}

func TestQueuedVersion1DeltaIsReencoded(t *testing.T) {
	e := sampleDelta()
	e.V = 1
	old, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	id, data, err := queuedDelta(old)
	if err != nil {
		t.Fatal(err)
	}
	if id != e.ID || data[0] != WireVersion {
		t.Fatalf("id %q, version %d", id, data[0])
	}
	got, err := decode(data)
	if err != nil || !equalEnvelope(sampleDelta(), got) {
		t.Fatalf("re-encoded delta: %+v, %v", got, err)
	}
	if _, _, err := queuedDelta([]byte(`{"v":1,"kind":"delta","from":"bad id"}`)); err == nil {
		t.Fatal("a bad version 1 delta was accepted from the queue")
	}
}

// FuzzDecode: no input crashes decode, and anything it accepts encodes back
// to a message that decodes to the same thing.
func FuzzDecode(f *testing.F) {
	d, _ := encode(sampleDelta())
	f.Add(d)
	dg, _ := encode(envelope{Kind: kindDigest, From: "x", Digest: make([]uint64, DigestBuckets)})
	f.Add(dg)
	f.Add([]byte{WireVersion, 1, 1, 'x', 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte(`{"v":1}`))
	f.Add(append(append([]byte(nil), oldCounterDelta...), 1, 7, 'c', 't', 'r', '/', 's', '/', 'k', 1, 1, 'a', 2, 4))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := decode(data)
		if err != nil {
			return
		}
		again, err := encode(e)
		if err != nil {
			t.Fatalf("accepted message does not encode: %v", err)
		}
		e2, err := decode(again)
		if err != nil || !equalEnvelope(e, e2) {
			t.Fatalf("re-decode: %v", err)
		}
	})
}
