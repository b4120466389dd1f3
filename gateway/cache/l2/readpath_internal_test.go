package l2

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"testing"
	"testing/iotest"

	"github.com/meridian-edge/meridian/gateway/cache/tier"
)

// The read paths a hit can take, by file size and by how often the file was
// read before: small files (below smallRead) are read with pread on their
// first hit and served from a kept mapping from the second on; mid-size ones
// (up to inlineFile) are read whole; large ones are mapped (kept) and
// streamed block by block. readModes runs each with mappings allowed and
// with the pread fallback only.
var (
	pathSizes = []int{0, 1, 5000, 16 << 10, smallRead - 200, smallRead + 1, 100 << 10, 300 << 10, 1<<20 + 3}
	readModes = []struct {
		name   string
		noMmap bool
	}{{"mmap", false}, {"pread", true}}
)

func openTier(t *testing.T, noMmap bool) (*Tier, string) {
	t.Helper()
	dir := t.TempDir()
	tr, err := Open(Options{Dir: dir, Bytes: 64 << 20})
	if err != nil {
		t.Fatalf("open l2 in %s: %v", dir, err)
	}
	tr.noMmap = noMmap
	t.Cleanup(func() { _ = tr.Close() })
	return tr, dir
}

func pathBody(key string, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(len(key)) + byte(i*13+i/509)
	}
	return b
}

func store(t *testing.T, tr *Tier, key string, b []byte) string {
	t.Helper()
	w, err := tr.Put(context.Background(), key, &tier.Meta{Kind: tier.KindResponse, URL: "https://example.com/" + key, Status: 200, Size: -1})
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	for q := b; len(q) > 0; { // uneven writes, as a proxy streams them
		n := min(len(q), 7777)
		_, _ = w.Write(q[:n])
		q = q[n:]
	}
	if err := w.Commit(); err != nil {
		t.Fatalf("commit %s: %v", key, err)
	}
	return tr.path(hashKey(key))
}

// readVia reads key's whole body through WriteTo, Read with a 32 KiB
// buffer, or one-byte Reads.
func readVia(tr *Tier, key, via string) ([]byte, error) {
	o, err := tr.Get(context.Background(), key)
	if err != nil {
		return nil, err
	}
	defer o.Body.Close()
	var out bytes.Buffer
	switch via {
	case "writeto":
		_, err = o.Body.(io.WriterTo).WriteTo(&out)
	case "read":
		_, err = io.CopyBuffer(struct{ io.Writer }{&out}, struct{ io.Reader }{o.Body}, make([]byte, 32<<10))
	case "bytes":
		_, err = io.Copy(struct{ io.Writer }{&out}, iotest.OneByteReader(o.Body))
	}
	return out.Bytes(), err
}

var vias = []string{"writeto", "read", "bytes"}

// Every path serves every size whole and exactly, on the first hit and on
// the hits after it (kept descriptor, kept mapping), for files of the
// current version and of version 1 (CRC-32C blocks).
func TestReadPathsServeExactBytes(t *testing.T) {
	for _, mode := range readModes {
		for _, ver := range []uint8{versionXXH3, versionCRC} {
			t.Run(fmt.Sprintf("%s/v%d", mode.name, ver), func(t *testing.T) {
				tr, _ := openTier(t, mode.noMmap)
				for _, n := range pathSizes {
					key := fmt.Sprint("obj-", n)
					want := pathBody(key, n)
					path := store(t, tr, key, want)
					if ver == versionCRC {
						rewriteAsVersion1(t, path)
					}
					for hit := range 3 {
						for _, via := range vias {
							if via == "bytes" && n > 100<<10 {
								continue
							}
							got, err := readVia(tr, key, via)
							if err != nil || !bytes.Equal(got, want) {
								t.Fatalf("%d bytes, hit %d via %s: %d bytes, err %v (equal prefix %v)", n, hit, via, len(got), err, bytes.HasPrefix(want, got))
							}
						}
					}
					if b, _ := os.ReadFile(path); b[4] != ver {
						t.Fatalf("%d bytes: file is version %d, want %d", n, b[4], ver)
					}
				}
				if c := tr.Counters(); c.Corrupt != 0 {
					t.Fatalf("%d objects counted corrupt", c.Corrupt)
				}
			})
		}
	}
}

// New files are version 2; an UpdateMeta of a version 1 file keeps its
// version (the CRC-32C table is copied unchanged) and it stays readable.
func TestVersion1FileSurvivesUpdateMeta(t *testing.T) {
	tr, _ := openTier(t, false)
	want := pathBody("old", 200<<10)
	path := store(t, tr, "old", want)
	if b, _ := os.ReadFile(path); b[4] != versionXXH3 {
		t.Fatalf("new file is version %d, want %d", b[4], versionXXH3)
	}
	rewriteAsVersion1(t, path)
	m := &tier.Meta{Kind: tier.KindResponse, URL: "https://example.com/old", Status: 203, Size: -1}
	if err := tr.UpdateMeta(context.Background(), "old", m); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(tr.path(hashKey("old"))); b[4] != versionCRC {
		t.Fatalf("updated file is version %d, want %d", b[4], versionCRC)
	}
	o, err := tr.Get(context.Background(), "old")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(o.Body)
	o.Body.Close()
	if err != nil || !bytes.Equal(got, want) || o.Meta.Status != 203 {
		t.Fatalf("after UpdateMeta: %d bytes, err %v, status %d", len(got), err, o.Meta.Status)
	}
}

// A byte flipped in place (the same inode, so a kept descriptor or mapping
// sees it) after 0, 1 or 2 good hits is caught on the next read, on every
// path and for both versions: a miss, or a stream cut after a verified
// prefix; the file is removed and counted. Verification is never skipped
// because the file verified before.
func TestFlipAfterHitsIsCaughtOnEveryPath(t *testing.T) {
	for _, mode := range readModes {
		for _, ver := range []uint8{versionXXH3, versionCRC} {
			for _, n := range []int{5000, 100 << 10, 1<<20 + 3} {
				for hits := range 3 {
					for _, via := range []string{"writeto", "read"} {
						name := fmt.Sprintf("%s/v%d/%d/hits=%d/%s", mode.name, ver, n, hits, via)
						t.Run(name, func(t *testing.T) {
							tr, _ := openTier(t, mode.noMmap)
							want := pathBody("obj", n)
							path := store(t, tr, "obj", want)
							if ver == versionCRC {
								rewriteAsVersion1(t, path)
							}
							for range hits {
								if got, err := readVia(tr, "obj", via); err != nil || !bytes.Equal(got, want) {
									t.Fatalf("good hit: %d bytes, err %v", len(got), err)
								}
							}
							// The last block's last byte: the whole body
							// before it is good, so a cut stream is long.
							flipAt(t, path, int64(headerSize+len("obj")+n-1))
							got, err := readVia(tr, "obj", via)
							checkCaught(t, tr, path, want, got, err)
						})
					}
				}
			}
		}
	}
}

// A file truncated by an outside hand while it is mapped (a kept mapping,
// or a body being served) faults when read; the fault is caught and handled
// as corruption, never a crash.
func TestTruncatedWhileMappedIsCorruptNotACrash(t *testing.T) {
	for _, n := range []int{5000, 1<<20 + 3} {
		t.Run(fmt.Sprint(n, "/body open"), func(t *testing.T) {
			tr, _ := openTier(t, false)
			want := pathBody("obj", n)
			path := store(t, tr, "obj", want)
			for range 2 { // a small file is mapped from its second hit on
				if _, err := readVia(tr, "obj", "writeto"); err != nil {
					t.Fatal(err)
				}
			}
			o, err := tr.Get(context.Background(), "obj")
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := o.Body.(*bytesBody); ok {
				t.Fatal("body is not served from a mapping; the test would not test it")
			}
			if err := os.Truncate(path, 0); err != nil {
				t.Fatal(err)
			}
			var out appendWriter
			_, err = o.Body.(io.WriterTo).WriteTo(&out)
			o.Body.Close()
			if err == nil {
				t.Fatalf("a body truncated under its mapping was served whole (%d bytes)", len(out))
			}
			checkCaught(t, tr, path, want, out, err)
		})
		t.Run(fmt.Sprint(n, "/kept mapping"), func(t *testing.T) {
			tr, _ := openTier(t, false)
			want := pathBody("obj", n)
			path := store(t, tr, "obj", want)
			for range 2 {
				if _, err := readVia(tr, "obj", "read"); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Truncate(path, 0); err != nil {
				t.Fatal(err)
			}
			got, err := readVia(tr, "obj", "read")
			checkCaught(t, tr, path, want, got, err)
		})
	}
}

// appendWriter keeps what was written; a Write interrupted by a fault on
// its source adds nothing (append assigns after its copy), as a socket
// write that fails with EFAULT sends nothing of the bad page.
type appendWriter []byte

func (w *appendWriter) Write(p []byte) (int, error) {
	*w = append(*w, p...)
	return len(p), nil
}

func flipAt(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := []byte{0}
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x5a
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// checkCaught asserts that a damaged file's read was a miss or a cut
// stream of good bytes, and that the file was counted and removed.
func checkCaught(t *testing.T, tr *Tier, path string, want, got []byte, err error) {
	t.Helper()
	switch {
	case errors.Is(err, tier.ErrNotFound):
	case err != nil:
		if !bytes.HasPrefix(want, got) {
			t.Fatalf("damaged bytes were returned before the error %v", err)
		}
	default:
		t.Fatalf("a damaged file was served whole (%d bytes)", len(got))
	}
	if c := tr.Counters().Corrupt; c != 1 {
		t.Fatalf("corrupt counter = %d, want 1", c)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("damaged file still on disk: %v", err)
	}
	if _, err := readVia(tr, "obj", "read"); !errors.Is(err, tier.ErrNotFound) {
		t.Fatalf("read after removal: %v, want ErrNotFound", err)
	}
}

// rewriteAsVersion1 rewrites a just-stored file (never read, so nothing of
// it is kept open) in format version 1, as the tier wrote before version 2:
// CRC-32C per body block, 4 bytes each.
func rewriteAsVersion1(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p, body, err := parseWhole(b)
	if err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	var table []byte
	for i := 0; i < len(body); i += blockSize {
		table = binary.LittleEndian.AppendUint32(table, crc32.Checksum(body[i:min(i+blockSize, len(body))], castagnoli))
	}
	h := p.hdr
	h.ver = versionCRC
	h.tableCRC = crc32.Checksum(table, castagnoli)
	hb := make([]byte, headerSize)
	h.marshal(hb)
	h.headCRC = headSum(hb, p.key, p.meta)
	h.marshal(hb)
	out := append(append(append(append(hb, p.key...), body...), table...), p.meta...)
	if int64(len(out)) != h.fileSize() {
		t.Fatalf("version 1 file is %d bytes, header says %d", len(out), h.fileSize())
	}
	tmp := filepath.Join(filepath.Dir(path), "v1.tmp")
	if err := os.WriteFile(tmp, out, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// A kept descriptor or mapping never outlives its file in the tier: after a
// replace, an UpdateMeta or a Delete the next read sees the new state, and
// readers racing with replacements get one whole version or a miss, never
// a mix and never a corruption report.
func TestKeptFilesFollowReplacement(t *testing.T) {
	ctx := context.Background()
	for _, n := range []int{5000, 100 << 10, 1<<20 + 3} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			tr, _ := openTier(t, false)
			v1, v2 := pathBody("v1", n), pathBody("v2", n+777)
			store(t, tr, "obj", v1)
			for range 3 {
				if got, err := readVia(tr, "obj", "writeto"); err != nil || !bytes.Equal(got, v1) {
					t.Fatalf("v1: %d bytes, err %v", len(got), err)
				}
			}
			store(t, tr, "obj", v2)
			if got, err := readVia(tr, "obj", "writeto"); err != nil || !bytes.Equal(got, v2) {
				t.Fatalf("after replace: %d bytes, err %v", len(got), err)
			}
			m := &tier.Meta{Kind: tier.KindResponse, URL: "https://example.com/obj", Status: 299, Size: -1}
			if err := tr.UpdateMeta(ctx, "obj", m); err != nil {
				t.Fatal(err)
			}
			o, err := tr.Get(ctx, "obj")
			if err != nil || o.Meta.Status != 299 {
				t.Fatalf("after UpdateMeta: %v, %v", o, err)
			}
			o.Body.Close()
			if err := tr.Delete(ctx, "obj"); err != nil {
				t.Fatal(err)
			}
			if _, err := readVia(tr, "obj", "read"); !errors.Is(err, tier.ErrNotFound) {
				t.Fatalf("after delete: %v, want a miss", err)
			}

			store(t, tr, "obj", v1)
			done := make(chan struct{})
			errs := make(chan error, 4)
			for range 4 {
				go func() {
					for {
						select {
						case <-done:
							errs <- nil
							return
						default:
						}
						got, err := readVia(tr, "obj", "writeto")
						if err != nil && !errors.Is(err, tier.ErrNotFound) || err == nil && !bytes.Equal(got, v1) && !bytes.Equal(got, v2) {
							errs <- fmt.Errorf("read during replacements: %d bytes, err %v", len(got), err)
							return
						}
					}
				}()
			}
			for i := range 20 {
				store(t, tr, "obj", [][]byte{v1, v2}[i%2])
			}
			close(done)
			for range 4 {
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
			}
			if c := tr.Counters().Corrupt; c != 0 {
				t.Fatalf("%d files counted corrupt", c)
			}
		})
	}
}
