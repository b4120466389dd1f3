package l1_test

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/meridian-edge/meridian/gateway/cache/l1"
	"github.com/meridian-edge/meridian/gateway/cache/tier"
)

// The hot-object memo is observable from outside in one way only, the one
// the package documents: a hot key's hits are answered from its decoded
// form, so they hand out the same metadata and the same body bytes (no
// copy from BigCache, no new decoding). Without the memo every hit decodes
// a fresh copy.

// sameHit reports whether two hits share their metadata and body.
func sameHit(m1 *tier.Meta, b1 []byte, m2 *tier.Meta, b2 []byte) bool {
	return m1 == m2 && len(b1) > 0 && len(b1) == len(b2) && &b1[0] == &b2[0]
}

// TestHotObjectServedFromMemo: once a key has been read a few times, its
// hits share one decoded copy; a cold key's hits do not.
func TestHotObjectServedFromMemo(t *testing.T) {
	c, err := l1.New(l1.Options{Bytes: 64 << 20, Admission: l1.AdmitAlways})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, size := range []int{100, 4000} { // inline bodies: BigCache copies them per hit
		key := fmt.Sprint("hot", size)
		want := pattern(key, size)
		if err := putSized(t, c, key, want, int64(size)); err != nil {
			t.Fatal(err)
		}
		cold := fmt.Sprint("cold", size)
		if err := putSized(t, c, cold, pattern(cold, size), int64(size)); err != nil {
			t.Fatal(err)
		}
		// A cold key (first read after the write): a decoded copy each.
		cm, cb, err := c.GetBytes(cold)
		if err != nil {
			t.Fatal(err)
		}
		if m, b, _ := c.GetBytes(cold); sameHit(cm, cb, m, b) {
			t.Fatalf("size %d: the second read of a key shares the first's copy; the memo must wait for it to be hot", size)
		}
		var m1 *tier.Meta
		var b1 []byte
		for i := range 8 {
			m, b, err := c.GetBytes(key)
			if err != nil || !bytes.Equal(b, want) || m.URL != "http://x/"+key {
				t.Fatalf("size %d read %d: %q... err %v", size, i, b[:min(len(b), 16)], err)
			}
			m1, b1 = m, b
		}
		m2, b2, err := c.GetBytes(key)
		if err != nil {
			t.Fatal(err)
		}
		if !sameHit(m1, b1, m2, b2) {
			t.Errorf("size %d: hits of a hot key decoded a new copy each (meta %p vs %p): the hot-object memo did not serve them", size, m1, m2)
		}
		// Through Get too (the tier.Tier interface the cache uses).
		obj, err := c.Get(t.Context(), key)
		if err != nil {
			t.Fatal(err)
		}
		obj.Body.Close()
		if obj.Meta != m2 {
			t.Errorf("size %d: Get of a hot key returned new metadata, not the memo's", size)
		}
	}
}

// TestHotMemoBounded: the memo holds at most its budget (a sixty-fourth of
// Bytes): with many more hot keys than fit, most hits are decoded afresh,
// and every hit, memoised or not, is the key's own object.
func TestHotMemoBounded(t *testing.T) {
	const (
		bytesBudget = 64 << 20
		keys        = 2000
		size        = 1000
	)
	c, err := l1.New(l1.Options{Bytes: bytesBudget, Admission: l1.AdmitAlways})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	key := func(i int) string { return fmt.Sprintf("k%05d", i) }
	for i := range keys {
		if err := putSized(t, c, key(i), pattern(key(i), size), size); err != nil {
			t.Fatal(err)
		}
	}
	type hit struct {
		m *tier.Meta
		b []byte
	}
	read := func(i int) hit {
		t.Helper()
		m, b, err := c.GetBytes(key(i))
		if err != nil || !bytes.Equal(b, pattern(key(i), size)) || m.URL != "http://x/"+key(i) {
			t.Fatalf("key %s: wrong object (err %v, URL %v)", key(i), err, m)
		}
		return hit{m, b}
	}
	first := make([]hit, keys)
	for i := range keys {
		for range 4 { // hot: every key is read often enough
			first[i] = read(i)
		}
	}
	shared := 0
	for i := range keys {
		h := read(i)
		if sameHit(first[i].m, first[i].b, h.m, h.b) {
			shared++
		}
	}
	t.Logf("%d of %d hot keys still memoised a pass later", shared, keys)
	// Each memoised object costs at least its body; the memo's budget is
	// Bytes/64.
	if most := (bytesBudget / 64) / size; shared > most {
		t.Errorf("%d of %d hot keys were still memoised a pass later; a memo of %d bytes holds at most %d of them", shared, keys, bytesBudget/64, most)
	}
	if shared == 0 {
		t.Errorf("no hit was served from the memo")
	}
}
