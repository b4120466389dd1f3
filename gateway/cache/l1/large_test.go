package l1_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/meridian-edge/meridian/gateway/cache/l1"
	"github.com/meridian-edge/meridian/gateway/cache/tier"
)

// putSized stores body under key; size -1 streams it without a known length.
func putSized(t *testing.T, c *l1.Tier, key string, body []byte, size int64) error {
	t.Helper()
	w, err := c.Put(context.Background(), key, &tier.Meta{Status: 200, Site: "s", URL: "http://x/" + key,
		Header: http.Header{"Surrogate-Key": {"k-" + key}}, Size: size})
	if err != nil {
		return err
	}
	for p := body; len(p) > 0; {
		n := min(len(p), 3000)
		w.Write(p[:n])
		p = p[n:]
	}
	return w.Commit()
}

func pattern(key string, n int) []byte {
	return bytes.Repeat([]byte(key+"-"), n/(len(key)+1)+1)[:n]
}

func TestLargeBodiesRoundTrip(t *testing.T) {
	c, err := l1.New(l1.Options{Bytes: 8 << 20, LargeBytes: 4 << 20, LargeBody: 4096, Admission: l1.AdmitAlways})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	tests := []struct {
		key  string
		size int
		len  int64 // as announced at Put
	}{
		{"small", 1000, 1000},
		{"large-known", 100 << 10, 100 << 10},
		{"large-streamed", 50 << 10, -1},
		{"small-streamed", 500, -1},
	}
	for _, tc := range tests {
		body := pattern(tc.key, tc.size)
		if err := putSized(t, c, tc.key, body, tc.len); err != nil {
			t.Fatalf("%s: %v", tc.key, err)
		}
		m, got, err := c.GetBytes(tc.key)
		if err != nil || !bytes.Equal(got, body) || m.URL != "http://x/"+tc.key || m.Header.Get("Surrogate-Key") != "k-"+tc.key {
			t.Fatalf("%s: err %v, %d bytes, meta %+v", tc.key, err, len(got), m)
		}
	}
	if n, by := c.Usage(); n != 4 || by < 150<<10 {
		t.Fatalf("usage %d objects %d bytes", n, by)
	}
	// Scan (purge by prefix, surrogate key, site) sees large objects too.
	var seen []string
	c.Scan(ctx, func(k string, m *tier.Meta) bool {
		if m.Header.Get("Surrogate-Key") == "k-"+k {
			seen = append(seen, k)
		}
		return true
	})
	if len(seen) != 4 {
		t.Fatalf("scan saw %v", seen)
	}
	// 304 / soft purge: metadata replaced, body kept, no leak in the accounting.
	_, by0 := c.Usage()
	m, _, _ := c.GetBytes("large-known")
	m.Invalidated = true
	m.Header.Set("X-New", "1")
	if err := c.UpdateMeta(ctx, "large-known", m); err != nil {
		t.Fatal(err)
	}
	m2, got, err := c.GetBytes("large-known")
	if err != nil || !m2.Invalidated || m2.Header.Get("X-New") != "1" || !bytes.Equal(got, pattern("large-known", 100<<10)) {
		t.Fatalf("after UpdateMeta: %v %+v %d bytes", err, m2, len(got))
	}
	if n, by := c.Usage(); n != 4 || by-by0 > 64 || by0-by > 64 {
		t.Fatalf("UpdateMeta changed usage from %d to %d bytes (%d objects)", by0, by, n)
	}
	// Replacing a large object by a small one and deleting frees everything.
	if err := putSized(t, c, "large-known", []byte("now small"), 9); err != nil {
		t.Fatal(err)
	}
	if _, got, _ := c.GetBytes("large-known"); string(got) != "now small" {
		t.Fatalf("replaced body %q", got)
	}
	for _, tc := range tests {
		if err := c.Delete(ctx, tc.key); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.GetBytes(tc.key); !errors.Is(err, tier.ErrNotFound) {
			t.Fatalf("%s after delete: %v", tc.key, err)
		}
	}
	if n, by := c.Usage(); n != 0 || by != 0 {
		t.Fatalf("usage after deleting all: %d objects %d bytes", n, by)
	}
}

// The side pool never holds more than its budget, evicts oldest first, and
// an evicted body's index entry goes with it.
func TestLargeBodiesBudget(t *testing.T) {
	const pool = 2 << 20
	c, err := l1.New(l1.Options{Bytes: 4 << 20, LargeBytes: pool, LargeBody: 4096, Admission: l1.AdmitAlways})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.MaxObject() > pool/8 {
		t.Fatalf("MaxObject %d lets one object take more than an eighth of the pool", c.MaxObject())
	}
	const size = 200 << 10
	for i := range 40 {
		if err := putSized(t, c, fmt.Sprint("obj", i), pattern(fmt.Sprint("obj", i), size), size); err != nil {
			t.Fatal(err)
		}
		if _, by := c.Usage(); by > 4<<20 {
			t.Fatalf("after %d objects usage %d bytes exceeds the 4 MiB budget", i+1, by)
		}
	}
	n, by := c.Usage()
	if n < 5 || n > pool/size || by > pool+256<<10 {
		t.Fatalf("usage %d objects, %d bytes; want at most %d objects in a %d-byte pool", n, by, pool/size, pool)
	}
	// The newest are held, the oldest gone, and what is held is intact.
	if _, got, err := c.GetBytes("obj39"); err != nil || !bytes.Equal(got, pattern("obj39", size)) {
		t.Fatalf("newest object: %v", err)
	}
	if _, _, err := c.GetBytes("obj0"); !errors.Is(err, tier.ErrNotFound) {
		t.Fatalf("oldest object still served: %v", err)
	}
	keys := 0
	c.Scan(context.Background(), func(string, *tier.Meta) bool { keys++; return true })
	if int64(keys) != n {
		t.Fatalf("index holds %d entries for %d objects: evicted bodies left their entries behind", keys, n)
	}
}

// A body handed out by GetBytes stays intact while the object is evicted,
// deleted and replaced by other goroutines.
func TestLargeBodiesReadWhileEvicting(t *testing.T) {
	c, err := l1.New(l1.Options{Bytes: 3 << 20, LargeBytes: 2 << 20, LargeBody: 4096, Admission: l1.AdmitAlways})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const size = 64 << 10
	keys := make([]string, 16)
	for i := range keys {
		keys[i] = fmt.Sprint("k", i)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 8)
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := keys[(i*7+w)%len(keys)]
				if i%5 == 0 {
					_ = c.Delete(context.Background(), k)
					continue
				}
				if err := putSized(t, c, k, pattern(k, size), size); err != nil && !errors.Is(err, tier.ErrNotAdmitted) {
					errs <- err
					return
				}
			}
		}()
	}
	var readers sync.WaitGroup
	for r := range 4 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			var held [][]byte
			var names []string
			for i := 0; i < 3000; i++ {
				k := keys[(i+r)%len(keys)]
				if _, b, err := c.GetBytes(k); err == nil {
					held = append(held, b)
					names = append(names, k)
				}
				if len(held) == 8 {
					for j, b := range held {
						if !bytes.Equal(b, pattern(names[j], size)) {
							errs <- fmt.Errorf("body of %s changed while held", names[j])
							return
						}
					}
					held, names = held[:0], names[:0]
				}
			}
		}()
	}
	readers.Wait()
	close(stop)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
}

func TestLargeOptionErrors(t *testing.T) {
	tests := []struct {
		o    l1.Options
		want string
	}{
		{l1.Options{Bytes: 4 << 20, LargeBytes: 4 << 20}, "leaves BigCache less than 1 MiB"},
		{l1.Options{Bytes: 4 << 20, LargeBytes: -1}, "must not be negative"},
	}
	for _, tc := range tests {
		if _, err := l1.New(tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want %q", tc.o, err, tc.want)
		}
	}
}

// A key read often is served from its decoded form; every change to it
// (replace, UpdateMeta, Delete) must show on the very next read.
func TestHotKeysSeeEveryChange(t *testing.T) {
	c, err := l1.New(l1.Options{Bytes: 64 << 20, Admission: l1.AdmitAlways})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	for _, size := range []int{100, 64 << 10} { // inline and large bodies
		key := fmt.Sprint("hot", size)
		heat := func() {
			for range 6 {
				c.GetBytes(key)
			}
		}
		if err := putSized(t, c, key, pattern("v1", size), int64(size)); err != nil {
			t.Fatal(err)
		}
		heat()
		if err := putSized(t, c, key, pattern("v2", size), int64(size)); err != nil {
			t.Fatal(err)
		}
		if _, b, err := c.GetBytes(key); err != nil || !bytes.Equal(b, pattern("v2", size)) {
			t.Fatalf("size %d: replaced hot key served the old body (err %v)", size, err)
		}
		heat()
		m, _, _ := c.GetBytes(key)
		m2 := m.Clone()
		m2.Invalidated = true
		if err := c.UpdateMeta(ctx, key, m2); err != nil {
			t.Fatal(err)
		}
		if m3, b, err := c.GetBytes(key); err != nil || !m3.Invalidated || !bytes.Equal(b, pattern("v2", size)) {
			t.Fatalf("size %d: soft-purged hot key: err %v invalidated %v", size, err, m3 != nil && m3.Invalidated)
		}
		heat()
		if err := c.Delete(ctx, key); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.GetBytes(key); !errors.Is(err, tier.ErrNotFound) {
			t.Fatalf("size %d: deleted hot key still served: %v", size, err)
		}
	}
}

// Readers hammering a hot key while it is replaced and deleted never see a
// version older than the last completed change.
func TestHotKeyRacingWriters(t *testing.T) {
	c, err := l1.New(l1.Options{Bytes: 64 << 20, Admission: l1.AdmitAlways})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
					c.GetBytes("k")
				}
			}
		}()
	}
	for i := range 300 {
		v := pattern(fmt.Sprint("v", i), 2000)
		if err := putSized(t, c, "k", v, 2000); err != nil {
			t.Fatal(err)
		}
		if _, b, err := c.GetBytes("k"); err != nil || !bytes.Equal(b, v) {
			close(stop)
			wg.Wait()
			t.Fatalf("version %d: read back another version (err %v)", i, err)
		}
		if i%10 == 9 {
			c.Delete(context.Background(), "k")
			if _, _, err := c.GetBytes("k"); !errors.Is(err, tier.ErrNotFound) {
				close(stop)
				wg.Wait()
				t.Fatalf("after delete %d: %v", i, err)
			}
		}
	}
	close(stop)
	wg.Wait()
}
