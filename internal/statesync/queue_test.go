package statesync

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestQueueKeepsOrderAcrossReopenAndIsBounded(t *testing.T) {
	dir := t.TempDir()
	q, err := openQueue(dir, 3, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"one", "two", "three"} {
		if err := q.push([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.push([]byte("four")); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("fourth push into a queue of 3: %v", err)
	}
	// A write interrupted by a crash leaves a .tmp file: ignored and removed.
	if err := os.WriteFile(filepath.Join(dir, "00000000000000000009.delta.tmp"), []byte("half"), 0o644); err != nil {
		t.Fatal(err)
	}
	q2, err := openQueue(dir, 3, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		seq, data, ok, err := q2.peek()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		got = append(got, string(data))
		if err := q2.pop(seq); err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != 3 || got[0] != "one" || got[2] != "three" {
		t.Fatalf("reopened queue gave %v", got)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("files left after draining: %v", ents)
	}
	// The byte bound holds too.
	small, err := openQueue(t.TempDir(), 100, 5)
	if err != nil {
		t.Fatal(err)
	}
	if err := small.push([]byte("123456")); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("6 bytes into a 5-byte queue: %v", err)
	}
}
