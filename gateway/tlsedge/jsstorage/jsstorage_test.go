package jsstorage

import (
	"context"
	"errors"
	"io/fs"
	"slices"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/internal/testutil"
)

// TestStorageRoundTrip covers what certmagic does with a Storage: store,
// load, list (flat and recursive), stat, exists and delete of a prefix, with
// keys holding dots, stars and other bytes a KV key cannot.
func TestStorageRoundTrip(t *testing.T) {
	ns := testutil.StartNATS(t)
	ctx := context.Background()
	s, err := New(ctx, testutil.Connect(t, ns), Options{Owner: "t"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	keys := map[string]string{
		"certificates/acme.example-directory/www.example.test/www.example.test.crt": "cert",
		"certificates/acme.example-directory/www.example.test/www.example.test.key": "key",
		"certificates/acme.example-directory/wildcard_.example.test/x.json":         "meta",
		"acme/acme.example-directory/users/ops@example.test/ops.json":               "user",
		"ocsp/we ird+name=1": "staple",
	}
	for k, v := range keys {
		if err := s.Store(ctx, k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	for k, v := range keys {
		got, err := s.Load(ctx, k)
		if err != nil || string(got) != v {
			t.Fatalf("Load %s = %q, %v", k, got, err)
		}
	}
	if _, err := s.Load(ctx, "certificates/nope"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load of a missing key: %v, want fs.ErrNotExist", err)
	}
	flat, err := s.List(ctx, "certificates/acme.example-directory", false)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(flat)
	if want := []string{"certificates/acme.example-directory/wildcard_.example.test", "certificates/acme.example-directory/www.example.test"}; !slices.Equal(flat, want) {
		t.Fatalf("List flat = %v, want %v", flat, want)
	}
	all, _ := s.List(ctx, "certificates", true)
	if len(all) != 3 {
		t.Fatalf("List recursive = %v", all)
	}
	if _, err := s.List(ctx, "nothing/here", true); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("List of nothing: %v", err)
	}
	ki, err := s.Stat(ctx, "certificates/acme.example-directory/www.example.test/www.example.test.crt")
	if err != nil || !ki.IsTerminal || ki.Size != 4 || ki.Modified.IsZero() {
		t.Fatalf("Stat file = %+v, %v", ki, err)
	}
	ki, err = s.Stat(ctx, "certificates/acme.example-directory")
	if err != nil || ki.IsTerminal {
		t.Fatalf("Stat dir = %+v, %v", ki, err)
	}
	if !s.Exists(ctx, "certificates/acme.example-directory") || s.Exists(ctx, "certificates/other") {
		t.Fatal("Exists wrong")
	}
	if err := s.Delete(ctx, "certificates/acme.example-directory/www.example.test"); err != nil {
		t.Fatal(err)
	}
	if s.Exists(ctx, "certificates/acme.example-directory/www.example.test/www.example.test.key") {
		t.Fatal("Delete of a prefix left a key")
	}
	if !s.Exists(ctx, "certificates/acme.example-directory/wildcard_.example.test/x.json") {
		t.Fatal("Delete removed a sibling")
	}
	if err := s.Delete(ctx, "never/stored"); err != nil {
		t.Fatalf("Delete of a missing key: %v", err)
	}
	for _, k := range []string{"a/b.c", "x=y/*.z", "we ird+name=1", "dots..in.a.row", ".lead/trail."} {
		if got := decodeKey(encodeKey(k)); got != cleanKey(k) {
			t.Errorf("key %q round-trips to %q", k, got)
		}
	}
}

// TestLockExclusiveAcrossPoPs: two PoPs (two connections, two Storages) on
// one JetStream: while one holds a lock the other waits; it gets the lock
// once released, and also when the holder dies without releasing (the lock
// expires after its TTL because nobody refreshes it).
func TestLockExclusiveAcrossPoPs(t *testing.T) {
	ns := testutil.StartNATS(t)
	ctx := context.Background()
	a, err := New(ctx, testutil.Connect(t, ns), Options{Owner: "pop-a", LockTTL: 2 * time.Second, LockPoll: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(ctx, testutil.Connect(t, ns), Options{Owner: "pop-b", LockTTL: 2 * time.Second, LockPoll: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := a.Lock(ctx, "issue_cert_www.example.test"); err != nil {
		t.Fatal(err)
	}
	// Held across several TTLs: the refresher keeps it.
	short, cancel := context.WithTimeout(ctx, 5*time.Second)
	err = b.Lock(short, "issue_cert_www.example.test")
	cancel()
	if err == nil {
		t.Fatal("pop-b took a lock pop-a holds (and refreshes)")
	}
	if err := a.Unlock(ctx, "issue_cert_www.example.test"); err != nil {
		t.Fatal(err)
	}
	got, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := b.Lock(got, "issue_cert_www.example.test"); err != nil {
		t.Fatalf("pop-b after release: %v", err)
	}
	if err := b.Unlock(ctx, "issue_cert_www.example.test"); err != nil {
		t.Fatal(err)
	}
	if err := b.Unlock(ctx, "issue_cert_www.example.test"); err == nil {
		t.Fatal("unlocking a lock not held succeeded")
	}

	// pop-a takes the lock and dies (stops refreshing without unlocking).
	if err := a.Lock(ctx, "renew"); err != nil {
		t.Fatal(err)
	}
	a.Close()
	if err := b.Lock(got, "renew"); err != nil {
		t.Fatalf("lock of a dead holder never expired: %v", err)
	}
	b.Unlock(ctx, "renew")
}

// TestNewErrors: what the caller gets wrong is said.
func TestNewErrors(t *testing.T) {
	if _, err := New(context.Background(), nil, Options{}); err == nil {
		t.Fatal("nil connection accepted")
	}
	ns := testutil.StartNATS(t)
	if _, err := New(context.Background(), testutil.Connect(t, ns), Options{LockTTL: time.Millisecond}); err == nil {
		t.Fatal("1ms lock TTL accepted")
	}
}
