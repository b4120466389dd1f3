//go:build unix

package l2_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway/cache/l2"
	"github.com/meridian-edge/meridian/gateway/cache/tier"
)

// The full-disk test needs a real file-size limit (RLIMIT_FSIZE), which
// only unix systems have.

// childDiskFull runs with a 1 MiB file-size limit: the kernel refuses to grow
// a file past it (EFBIG; Go ignores SIGXFSZ), like a full disk.
func childDiskFull(dir string) int {
	lim := syscall.Rlimit{Cur: 1 << 20, Max: 1 << 20}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		fmt.Println("setrlimit:", err)
		return 2
	}
	tr, err := l2.Open(l2.Options{Dir: dir, Bytes: 64 << 20, DiskFullBypass: time.Hour})
	if err != nil {
		fmt.Println("open:", err)
		return 2
	}
	ctx := context.Background()
	w, err := tr.Put(ctx, "small", meta("https://example.com/small"))
	if err != nil {
		fmt.Println("put small:", err)
		return 1
	}
	_, _ = w.Write(make([]byte, 1000))
	if err := w.Commit(); err != nil {
		fmt.Println("commit small:", err)
		return 1
	}
	w, err = tr.Put(ctx, "big", meta("https://example.com/big"))
	if err != nil {
		fmt.Println("put big:", err)
		return 1
	}
	for range 40 {
		if _, err := w.Write(make([]byte, 64<<10)); err != nil {
			fmt.Println("write big returned an error to the caller:", err)
			return 1
		}
	}
	if err := w.Commit(); !errors.Is(err, tier.ErrNotAdmitted) {
		fmt.Println("commit big: want ErrNotAdmitted, got", err)
		return 1
	}
	if _, err := tr.Put(ctx, "after", meta("https://example.com/after")); !errors.Is(err, tier.ErrNotAdmitted) {
		fmt.Println("put during bypass: want ErrNotAdmitted, got", err)
		return 1
	}
	if _, err := tr.Get(ctx, "big"); !errors.Is(err, tier.ErrNotFound) {
		fmt.Println("the failed object is visible:", err)
		return 1
	}
	c := tr.Counters()
	if c.DiskFull < 1 || c.Bypassed != 1 {
		fmt.Printf("counters %+v\n", c)
		return 1
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(ents) != 0 {
		fmt.Println("temp files left:", len(ents))
		return 1
	}
	return 0
}

func TestDiskFullEvictsThenBypasses(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=diskfull", "MERIDIAN_L2_DIR="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child under a 1 MiB file-size limit: %v\n%s", err, out)
	}
}
