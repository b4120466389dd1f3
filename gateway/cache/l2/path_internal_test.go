package l2

import (
	"fmt"
	"path/filepath"
	"testing"
)

// path builds an object's file name by hand (one allocation per lookup);
// it must name the file filepath.Join would, whatever Dir looked like.
func TestPathIsJoinOfObjectDir(t *testing.T) {
	tr, err := Open(Options{Dir: t.TempDir() + "/./l2//"})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	for _, h := range []uint64{0, 1, 0xab, 0x0123456789abcdef, ^uint64(0)} {
		name := fmt.Sprintf("%016x", h)
		if got, want := tr.path(h), filepath.Join(tr.objDir, name[:2], name); got != want {
			t.Errorf("path(%#x) = %q, want %q", h, got, want)
		}
	}
}
