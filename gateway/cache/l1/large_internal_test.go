package l1

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/meridian-edge/meridian/gateway/cache/tier"
)

func body(key string, n int) []byte {
	return bytes.Repeat([]byte(key+"."), n/(len(key)+1)+1)[:n]
}

// Small bodies are packed into chunks, large ones kept apart; the pool
// evicts both in insertion order within its budget, reports every evicted
// body with its key, and a body handed out stays intact after its chunk is
// evicted and the chunk's bytes would have been reused.
func TestPackedBodies(t *testing.T) {
	const budget = 64 << 10
	l := newLargeBodies(budget, 8192)
	if l.chunkSize != 4<<10 || l.packMax != 512 {
		t.Fatalf("chunk %d, packMax %d: want 4 KiB chunks packing bodies below 512 bytes", l.chunkSize, l.packMax)
	}
	var held [][]byte
	var heldKeys []string
	evicted := map[uint64]string{}
	stored := map[uint64]string{}
	var id uint64
	for i := range 400 {
		id++
		k := fmt.Sprint("k", i)
		n := 300 // packed
		if i%10 == 9 {
			n = 3000 // apart
		}
		buf := body(k, n)
		for _, v := range l.put(id, k, buf) {
			if stored[v.id] != v.key {
				t.Fatalf("victim %d reported with key %q, stored as %q", v.id, v.key, stored[v.id])
			}
			evicted[v.id] = v.key
			delete(stored, v.id)
		}
		if n == 300 {
			clear(buf) // packed bodies are copied: the caller may reuse its buffer
		}
		stored[id] = k
		if _, used := l.usage(); used > budget {
			t.Fatalf("after %d puts the pool counts %d bytes, over its %d budget", i+1, used, budget)
		}
		if i%37 == 0 {
			b, ok := l.get(id)
			if !ok {
				t.Fatalf("%s missing right after put", k)
			}
			held, heldKeys = append(held, b), append(heldKeys, k)
		}
	}
	if len(evicted) == 0 {
		t.Fatal("nothing evicted: the test did not fill the pool")
	}
	// What is stored reads back; what was evicted does not; the survivors
	// are the newest (FIFO).
	var oldestStored uint64 = id
	for sid, k := range stored {
		b, ok := l.get(sid)
		n := 300
		if (sid-1)%10 == 9 {
			n = 3000
		}
		if !ok || !bytes.Equal(b, body(k, n)) {
			t.Fatalf("stored %s: ok %v, %d bytes", k, ok, len(b))
		}
		oldestStored = min(oldestStored, sid)
	}
	for eid := range evicted {
		if _, ok := l.get(eid); ok {
			t.Fatalf("evicted id %d still served", eid)
		}
		if eid > oldestStored+uint64(l.chunkSize/300)+1 {
			t.Fatalf("id %d evicted while older id %d stayed: not FIFO", eid, oldestStored)
		}
	}
	for i, b := range held {
		n := 300
		if len(b) == 3000 {
			n = 3000
		}
		if !bytes.Equal(b, body(heldKeys[i], n)) {
			t.Fatalf("held body of %s changed after eviction", heldKeys[i])
		}
	}
	// Removing everything frees every chunk.
	for sid := range stored {
		l.remove(sid)
	}
	if n, used := l.usage(); n != 0 || used != 0 || l.bytes() != 0 {
		t.Fatalf("after removing all: %d bodies, %d bytes (%d)", n, used, l.bytes())
	}
}

// A small object in a chunk is replaced, deleted and evicted by writers
// while readers hold and check the bodies they got.
func TestPackedBodiesReadWhileWriting(t *testing.T) {
	c, err := New(Options{Bytes: 3 << 20, LargeBytes: 2 << 20, LargeBody: 4096, Admission: AdmitAlways})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.split.threshold.Store(c.split.floor) // small bodies go to the pool
	const size = 1500
	keys := make([]string, 2000) // 3 MB of bodies: the pool evicts
	for i := range keys {
		keys[i] = fmt.Sprint("k", i)
	}
	putKey := func(k string) error {
		w, err := c.Put(context.Background(), k, &tier.Meta{Status: 200, Size: size})
		if err != nil {
			return err
		}
		w.Write(body(k, size))
		return w.Commit()
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
				if err := putKey(k); err != nil && !errors.Is(err, tier.ErrNotAdmitted) {
					errs <- err
					return
				}
			}
		}()
	}
	var readers sync.WaitGroup
	for r := range 3 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			var held [][]byte
			var names []string
			for i := 0; i < 20000; i++ {
				k := keys[(i*13+r)%len(keys)]
				if _, b, err := c.GetBytes(k); err == nil {
					held, names = append(held, b), append(names, k)
				}
				if len(held) == 32 {
					for j, b := range held {
						if !bytes.Equal(b, body(names[j], size)) {
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
	if sp := c.Split(); sp.PoolBodies == 0 || sp.PoolBytes > sp.PoolBudget {
		t.Fatalf("split %+v: want small bodies in the pool, within its budget", sp)
	}
}
