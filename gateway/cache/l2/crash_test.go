package l2_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/meridian-edge/meridian/gateway/cache/l2"
	"github.com/meridian-edge/meridian/gateway/cache/tier"
)

// The tests below re-execute the test binary as a child process (selected by
// MERIDIAN_L2_CHILD) so that a real process can be SIGKILLed mid-write or run
// under a file-size limit.

const childEnv = "MERIDIAN_L2_CHILD"

func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "writer":
		childWriter(os.Getenv("MERIDIAN_L2_DIR"))
		os.Exit(0)
	case "diskfull":
		os.Exit(childDiskFull(os.Getenv("MERIDIAN_L2_DIR")))
	}
	os.Exit(m.Run())
}

func crashBodySize(i int) int { return 1 + (i*7919)%(300<<10) }

// childWriter stores objects forever, reporting each commit on stdout; it
// also replaces metadata and deletes, so a kill can land in any of them.
func childWriter(dir string) {
	tr, err := l2.Open(l2.Options{Dir: dir, Bytes: 1 << 30})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	ctx := context.Background()
	start, _ := strconv.Atoi(os.Getenv("MERIDIAN_L2_START"))
	for i := start; ; i++ {
		key := fmt.Sprint("crash-", i)
		b := body(key, crashBodySize(i))
		w, err := tr.Put(ctx, key, meta("https://example.com/"+key))
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		for len(b) > 0 {
			n := min(len(b), 4096)
			_, _ = w.Write(b[:n])
			b = b[n:]
		}
		if err := w.Commit(); err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println("committed", i)
		if i%3 == 0 {
			m := meta("https://example.com/" + key)
			m.Invalidated = true
			_ = tr.UpdateMeta(ctx, key, m)
		}
		if i%5 == 0 && i > 0 {
			// Announced first: a kill may land between the two.
			fmt.Println("deleting", i-1)
			_ = tr.Delete(ctx, fmt.Sprint("crash-", i-1))
		}
	}
}

func TestKillMidWriteNeverServesCorrupt(t *testing.T) {
	dir := t.TempDir()
	committed := map[int]bool{}
	next := 0
	for round := range 4 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"=writer", "MERIDIAN_L2_DIR="+dir, fmt.Sprint("MERIDIAN_L2_START=", next))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatalf("start child: %v", err)
		}
		sc := bufio.NewScanner(out)
		n := 0
		// Every line is read, including those written after the kill
		// signal was sent: they report what happened before it.
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) == 2 && f[0] == "committed" {
				i, _ := strconv.Atoi(f[1])
				committed[i] = true
				next = max(next, i+1)
				n++
			} else if len(f) == 2 && f[0] == "deleting" {
				i, _ := strconv.Atoi(f[1])
				delete(committed, i)
			} else {
				t.Fatalf("child: %s", sc.Text())
			}
			// Kill at a different point each round, in the middle of writes.
			if n == 20+round*13 {
				_ = cmd.Process.Signal(syscall.SIGKILL)
			}
		}
		_ = cmd.Wait()
		next += 2 // the killed write may have been one of these
	}

	tr := open(t, dir, 1<<30)
	if tr.Counters().IndexRebuilt != 1 {
		t.Fatal("reopen after SIGKILL did not check the object files")
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(ents) != 0 {
		t.Fatalf("%d temp files left after reopen", len(ents))
	}
	served := 0
	for i := range next {
		key := fmt.Sprint("crash-", i)
		_, got, err := get(t, tr, key)
		switch {
		case err == nil:
			if !bytes.Equal(got, body(key, crashBodySize(i))) {
				t.Fatalf("%s served with wrong bytes after a crash", key)
			}
			served++
		case errors.Is(err, tier.ErrNotFound):
			if committed[i] {
				t.Fatalf("%s was committed before the kill but is gone", key)
			}
		default:
			t.Fatalf("%s: %v", key, err)
		}
	}
	if served < len(committed) {
		t.Fatalf("served %d objects, %d were committed", served, len(committed))
	}
	if c := tr.Counters().Corrupt; c != 0 {
		t.Fatalf("%d corrupt files found; renames should have made writes atomic", c)
	}
}
