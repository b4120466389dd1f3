//go:build unix

package l2_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"testing"

	"github.com/meridian-edge/meridian/gateway/cache/tier"
)

// rangeWriter is a tier.FileWriter that copies each offered file range
// with pread (what sendfile would send), so a test sees exactly the bytes
// a socket would get and how many ranges were offered.
type rangeWriter struct {
	got    bytes.Buffer
	ranges int
}

func (w *rangeWriter) Write(p []byte) (int, error) { return w.got.Write(p) }

func (w *rangeWriter) WriteFile(fd int, off, n int64) (int64, error) {
	w.ranges++
	b := make([]byte, n)
	k, err := syscall.Pread(fd, b, off)
	w.got.Write(b[:max(k, 0)])
	if err != nil {
		return int64(max(k, 0)), err
	}
	if int64(k) < n {
		return int64(k), io.ErrUnexpectedEOF
	}
	return n, nil
}

var _ tier.FileWriter = (*rangeWriter)(nil)

// TestWriteToOffersVerifiedFileRanges checks that an L2 body hands a
// tier.FileWriter file ranges (for sendfile) that hold exactly the body,
// whole or a window of it, on every read path: a small file once it is
// mapped, a mid-size and a large one.
func TestWriteToOffersVerifiedFileRanges(t *testing.T) {
	tr := open(t, t.TempDir(), 64<<20)
	for _, size := range []int{5000, 100 << 10, 1<<20 + 100} {
		key := "obj" + string(rune('a'+size%26))
		want := body(key, size)
		put(t, tr, key, want)
		for hit := 1; hit <= 3; hit++ {
			o, err := tr.Get(context.Background(), key)
			if err != nil {
				t.Fatalf("%d bytes, hit %d: %v", size, hit, err)
			}
			w := &rangeWriter{}
			n, err := o.Body.(io.WriterTo).WriteTo(w)
			o.Body.Close()
			if err != nil || n != int64(size) || !bytes.Equal(w.got.Bytes(), want) {
				t.Fatalf("%d bytes, hit %d: WriteTo = %d, %v; body equal: %v", size, hit, n, err, bytes.Equal(w.got.Bytes(), want))
			}
			// A small file is read with pread on its first hit and mapped
			// (with its descriptor) from the second on.
			if hit >= 2 && w.ranges == 0 {
				t.Errorf("%d bytes, hit %d: no file range offered; the body went through Write (a copy)", size, hit)
			}
		}
		// A window: GetRange, and a seek within a whole-object body.
		lo, hi := int64(size/3), int64(size-size/5)
		o, err := tr.GetRange(context.Background(), key, lo, hi-lo)
		if err != nil {
			t.Fatal(err)
		}
		w := &rangeWriter{}
		if _, err := o.Body.(io.WriterTo).WriteTo(w); err != nil || !bytes.Equal(w.got.Bytes(), want[lo:hi]) {
			t.Fatalf("%d bytes, range %d-%d: %v, equal %v", size, lo, hi, err, bytes.Equal(w.got.Bytes(), want[lo:hi]))
		}
		o.Body.Close()
		o, err = tr.Get(context.Background(), key)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := o.Body.(io.Seeker).Seek(lo, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		w = &rangeWriter{}
		if _, err := o.Body.(io.WriterTo).WriteTo(w); err != nil || !bytes.Equal(w.got.Bytes(), want[lo:]) {
			t.Fatalf("%d bytes, after seek to %d: %v, equal %v", size, lo, err, bytes.Equal(w.got.Bytes(), want[lo:]))
		}
		o.Body.Close()
	}
}

// TestFlippedBytesNeverOfferedAsFileRange damages a mapped file's body and
// requires that no range holding the damage is offered to a FileWriter:
// the hit is a miss, or the stream stops with an error before the bad
// block, and the file is removed and counted. The damage comes before the
// first hit, or after hits that mapped the file and kept its verified
// header and table (later hits verify the body against those).
func TestFlippedBytesNeverOfferedAsFileRange(t *testing.T) {
	const keyLen = 3 // "obj"
	type damage struct {
		name      string
		size, at  int
		hitsFirst int
	}
	var cases []damage
	for _, hits := range []int{0, 3} {
		for _, c := range []damage{
			{"small body", 5000, 4000, 0},
			{"mid-size body", 100 << 10, 90_000, 0},
			{"large body first block", 1<<20 + 100, 100, 0},
			{"large body second chunk", 1<<20 + 100, 300_000, 0},
			{"large body last block", 1<<20 + 100, 1<<20 + 50, 0},
		} {
			if hits == 0 && c.size == 5000 {
				continue // not mapped on its first hit (TestFlippedBytesAreMissRemovedCounted)
			}
			c.hitsFirst = hits
			c.name += fmt.Sprintf(" after %d hits", hits)
			cases = append(cases, c)
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			tr := open(t, dir, 64<<20)
			want := body("obj", c.size)
			put(t, tr, "obj", want)
			for range c.hitsFirst {
				o, err := tr.Get(context.Background(), "obj")
				if err != nil {
					t.Fatal(err)
				}
				w := &rangeWriter{}
				if _, err := o.Body.(io.WriterTo).WriteTo(w); err != nil || !bytes.Equal(w.got.Bytes(), want) {
					t.Fatalf("hit before the damage: %v", err)
				}
				o.Body.Close()
			}
			files := objectFiles(t, dir)
			f, err := os.OpenFile(files[0], os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			// Damage in place (the page cache, as a failing disk would
			// show it), not by replacing the file.
			at := int64(32 + keyLen + c.at)
			b := []byte{0}
			if _, err := f.ReadAt(b, at); err != nil {
				t.Fatal(err)
			}
			b[0] ^= 0x5a
			if _, err := f.WriteAt(b, at); err != nil {
				t.Fatal(err)
			}
			f.Close()
			o, err := tr.Get(context.Background(), "obj")
			if err == nil {
				w := &rangeWriter{}
				_, werr := o.Body.(io.WriterTo).WriteTo(w)
				o.Body.Close()
				switch {
				case werr == nil:
					t.Fatalf("a damaged body was written whole (%d of %d bytes)", w.got.Len(), len(want))
				case !bytes.HasPrefix(want, w.got.Bytes()):
					t.Fatalf("damaged bytes were offered before the stream stopped (%d bytes)", w.got.Len())
				}
			} else if !errors.Is(err, tier.ErrNotFound) {
				t.Fatalf("Get: %v, want a miss", err)
			}
			wantRemovedCorrupt(t, tr, files[0])
		})
	}
}
