package statesync

import (
	"bytes"
	"strings"
	"testing"

	"github.com/meridian-edge/meridian/internal/crdt"
)

// oldCounterDelta is a counter delta exactly as a node from before expiry
// support encodes it: from "a", counter ctr/s/k with a's pair (3, 0).
var oldCounterDelta = []byte{WireVersion, 1, 1, 'a', 0, 0, 0, 0, 0,
	1, 7, 'c', 't', 'r', '/', 's', '/', 'k', 1, 1, 'a', 3, 0}

func TestWireCountersWithoutTTLKeepTheOldBytes(t *testing.T) {
	e := envelope{Kind: kindDelta, From: "a", Counters: crdt.Counters{"ctr/s/k": {"a": {P: 3}}}}
	data, err := encode(e)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data, oldCounterDelta) {
		t.Fatalf("counter delta without TTL changed on the wire:\n got % x\nwant % x", data, oldCounterDelta)
	}
	got, err := decode(oldCounterDelta)
	if err != nil {
		t.Fatal(err)
	}
	if p := got.Counters["ctr/s/k"]["a"]; p != (crdt.PNPair{P: 3}) {
		t.Fatalf("old record decoded as %+v: want a pair without birth or expiry (never expires)", p)
	}
}

func TestWireRoundTripOfExpiryFields(t *testing.T) {
	e := envelope{Kind: kindDelta, From: "a", ID: "a.x.1",
		Regs: map[string]crdt.Register{"kv/s/tok": {Versions: []crdt.Version{
			{Value: []byte("v"), Node: "a", Wall: 10, Expires: 20, TTL: true, Fresh: true, Clock: crdt.VClock{"a": 1}}}}},
		Counters: crdt.Counters{
			"ctr/s/rl": {"a": {P: 3, Birth: 100, Exp: 160}, "b": {P: 1, Birth: 100, Exp: 0}, "c": {P: 9}},
			"ctr/s/no": {"a": {P: 1}},
		}}
	data, err := encode(e)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if !equalEnvelope(e, got) {
		t.Fatalf("round trip changed the message:\n got %+v\nwant %+v", got, e)
	}
}

// TestWireRefusesBadExpiryFields: malformed lives sections and flags are
// refused as invalid, with the counter or key named.
func TestWireRefusesBadExpiryFields(t *testing.T) {
	lives := func(section ...byte) []byte { return append(append([]byte(nil), oldCounterDelta...), section...) }
	key := []byte{7, 'c', 't', 'r', '/', 's', '/', 'k'}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"empty section", lives(0), "empty counter lives section"},
		{"unknown counter", lives(cat([]byte{1, 7}, []byte("ctr/s/x"), []byte{1, 1, 'a', 2, 4})...), `counter lives of "ctr/s/x": not in the message`},
		{"unknown node", lives(cat([]byte{1}, key, []byte{1, 1, 'z', 2, 4})...), `node "z" not in the counter`},
		{"node twice", lives(cat([]byte{1}, key, []byte{2, 1, 'a', 2, 4, 1, 'a', 2, 4})...), `node "a" not in the counter, or twice`},
		{"expiry before birth", lives(cat([]byte{1}, key, []byte{1, 1, 'a', 8, 4})...), "are not a life"},
		{"no life at all", lives(cat([]byte{1}, key, []byte{1, 1, 'a', 0, 0})...), "are not a life"},
	}
	for _, c := range cases {
		_, err := decode(c.data)
		if err == nil || rejectReason(err) != "invalid" || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want invalid: %s", c.name, err, c.want)
		}
	}
	for want, v := range map[string]crdt.Version{
		"TTL flag on a tombstone":                             {Deleted: true, TTL: true, Node: "a", Wall: 1, Expires: 5, Clock: crdt.VClock{"a": 1}},
		"TTL flag on a tombstone or a version without expiry": {Value: []byte("v"), TTL: true, Node: "a", Wall: 1, Clock: crdt.VClock{"a": 1}},
		"fresh flag without the TTL flag":                     {Value: []byte("v"), Fresh: true, Node: "a", Wall: 1, Expires: 5, Clock: crdt.VClock{"a": 1}},
	} {
		e := envelope{Kind: kindDelta, From: "a", Regs: map[string]crdt.Register{"kv/s/k": {Versions: []crdt.Version{v}}}}
		data, err := encode(e)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := decode(data); err == nil || rejectReason(err) != "invalid" || !strings.Contains(err.Error(), want) {
			t.Errorf("%+v: %v, want invalid: %s", v, err, want)
		}
	}
}
