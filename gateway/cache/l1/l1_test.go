package l1_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/meridian-edge/meridian/gateway/cache/l1"
	"github.com/meridian-edge/meridian/gateway/cache/tier"
)

func put(t *testing.T, c *l1.Tier, key, body string) error {
	t.Helper()
	w, err := c.Put(context.Background(), key, &tier.Meta{Status: 200, Site: "s", URL: "http://x/" + key, Header: http.Header{"X": {"1"}}, Size: int64(len(body))})
	if err != nil {
		return err
	}
	io.WriteString(w, body)
	return w.Commit()
}

func TestPutGetDelete(t *testing.T) {
	c, err := l1.New(l1.Options{Bytes: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if _, err := c.Get(ctx, "a"); !errors.Is(err, tier.ErrNotFound) {
		t.Fatalf("empty get: %v", err)
	}
	if err := put(t, c, "a", "hello"); err != nil {
		t.Fatal(err)
	}
	obj, err := c.Get(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(obj.Body)
	if string(b) != "hello" || obj.Meta.Header.Get("X") != "1" || obj.Meta.URL != "http://x/a" {
		t.Fatalf("got %q %+v", b, obj.Meta)
	}
	if n, by := c.Usage(); n != 1 || by <= 5 {
		t.Fatalf("usage %d objects %d bytes", n, by)
	}
	m := obj.Meta.Clone()
	m.Header.Set("X", "2")
	if err := c.UpdateMeta(ctx, "a", m); err != nil {
		t.Fatal(err)
	}
	_, body, _ := c.GetBytes("a")
	if mm, _, _ := c.GetBytes("a"); mm.Header.Get("X") != "2" || string(body) != "hello" {
		t.Fatalf("after UpdateMeta: %v %q", mm.Header, body)
	}
	if n, _ := c.Usage(); n != 1 {
		t.Fatalf("UpdateMeta left %d objects", n)
	}
	var keys []string
	c.Scan(ctx, func(k string, m *tier.Meta) bool { keys = append(keys, k); return true })
	if len(keys) != 1 || keys[0] != "a" {
		t.Fatalf("scan %v", keys)
	}
	if err := c.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, "a"); err != nil {
		t.Fatalf("deleting a missing key: %v", err)
	}
	if _, err := c.Get(ctx, "a"); !errors.Is(err, tier.ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
	if n, by := c.Usage(); n != 0 || by != 0 {
		t.Fatalf("usage after delete %d %d", n, by)
	}
}

func TestTooLarge(t *testing.T) {
	c, err := l1.New(l1.Options{Bytes: 4 << 20, MaxObject: 1000})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Put(context.Background(), "k", &tier.Meta{Size: 5000}); !errors.Is(err, tier.ErrTooLarge) {
		t.Fatalf("known size: %v", err)
	}
	w, err := c.Put(context.Background(), "k", &tier.Meta{Size: -1})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(make([]byte, 600))
	w.Write(make([]byte, 600))
	if err := w.Commit(); !errors.Is(err, tier.ErrTooLarge) {
		t.Fatalf("streamed size: %v", err)
	}
	if _, _, err := c.GetBytes("k"); err == nil {
		t.Fatal("too-large object stored")
	}
}

func TestAdmissionUnderPressure(t *testing.T) {
	c, err := l1.New(l1.Options{Bytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	body := strings.Repeat("x", 1000)
	// Fill well past the budget with keys each requested a few times.
	for i := 0; i < 3000; i++ {
		k := fmt.Sprint("hot", i)
		c.GetBytes(k)
		c.GetBytes(k)
		c.GetBytes(k)
		put(t, c, k, body)
	}
	// Keys never asked for before are refused while the tier is full. The
	// sketch hashes with a per-process seed, so a cold key can collide with
	// hot ones now and then: judge twenty of them, not one.
	refused := ""
	n := 0
	for i := 0; i < 20; i++ {
		k := fmt.Sprint("cold", i)
		c.GetBytes(k)
		if err := put(t, c, k, body); errors.Is(err, tier.ErrNotAdmitted) {
			n++
			refused = k
		} else if err != nil {
			t.Fatalf("cold key %s: %v", k, err)
		}
	}
	if n < 15 {
		t.Fatalf("only %d of 20 first-time keys were refused under pressure", n)
	}
	// ...and a refused key is admitted once it has been asked for often.
	for i := 0; i < 8; i++ {
		c.GetBytes(refused)
	}
	if err := put(t, c, refused, body); err != nil {
		t.Fatalf("popular key: %v", err)
	}
}

func TestOptionErrors(t *testing.T) {
	tests := []struct {
		o    l1.Options
		want string
	}{
		{l1.Options{Bytes: 10}, "below the 1 MiB minimum"},
		{l1.Options{MaxObject: -5}, "must be positive"},
		{l1.Options{Admission: "x"}, `unknown admission policy "x"`},
	}
	for _, tc := range tests {
		if _, err := l1.New(tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want %q", tc.o, err, tc.want)
		}
	}
}
