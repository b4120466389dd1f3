package s3embed_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway/cache/l3"
	"github.com/meridian-edge/meridian/gateway/cache/tier"
	"github.com/meridian-edge/meridian/internal/s3embed"
)

func l3On(t *testing.T, endpoint string) *l3.Tier {
	t.Helper()
	tr, err := l3.New(l3.Options{Endpoint: endpoint, Bucket: "dev-cache", Prefix: "local", AccessKey: "dev", SecretKey: "dev",
		SweepInterval: -1, Timeout: time.Second, SpoolDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

func store(t *testing.T, tr tier.Tier, key string, b []byte) {
	t.Helper()
	w, err := tr.Put(context.Background(), key, &tier.Meta{Kind: tier.KindResponse, URL: "https://x/" + key, Status: 200, Size: -1})
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write(b)
	if err := w.Commit(); err != nil {
		t.Fatalf("store %s: %v", key, err)
	}
}

func load(t *testing.T, tr tier.Tier, key string) []byte {
	t.Helper()
	o, err := tr.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("load %s: %v", key, err)
	}
	defer o.Body.Close()
	b, err := io.ReadAll(o.Body)
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	return b
}

func TestL3TierOnEmbeddedServerSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	srv, err := s3embed.Start(s3embed.Options{Dir: dir, Buckets: []string{"dev-cache"}})
	if err != nil {
		t.Fatal(err)
	}
	small := []byte("hello")
	big := bytes.Repeat([]byte("0123456789abcdef"), 9<<16) // 9 MiB: spooled to a file, one PUT
	tr := l3On(t, srv.Endpoint())
	store(t, tr, "small", small)
	store(t, tr, "big", big)
	if got := load(t, tr, "big"); !bytes.Equal(got, big) {
		t.Fatalf("big object differs: %d bytes", len(got))
	}
	addr := strings.TrimPrefix(srv.Endpoint(), "http://")
	if err := srv.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	srv2, err := s3embed.Start(s3embed.Options{Addr: addr, Dir: dir})
	if err != nil {
		t.Fatalf("restart on %s: %v", addr, err)
	}
	defer srv2.Close()
	tr2 := l3On(t, srv2.Endpoint())
	if got := load(t, tr2, "small"); !bytes.Equal(got, small) {
		t.Fatalf("after restart: %q", got)
	}
	if got := load(t, tr2, "big"); !bytes.Equal(got, big) {
		t.Fatal("big object differs after restart")
	}
	if _, err := tr2.Get(context.Background(), "absent"); !errors.Is(err, tier.ErrNotFound) {
		t.Fatalf("absent: %v", err)
	}
	// A Range through the seekable body (a ranged GET with If-Match).
	o, err := tr2.Get(context.Background(), "big")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.Body.(io.Seeker).Seek(1<<20+3, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	part := make([]byte, 100)
	if _, err := io.ReadFull(o.Body, part); err != nil || !bytes.Equal(part, big[1<<20+3:1<<20+103]) {
		t.Fatalf("ranged read: %v", err)
	}
	o.Body.Close()
	// Listing, scanning and sweeping work against the embedded server too.
	keys := map[string]bool{}
	if err := tr2.Scan(context.Background(), func(k string, _ *tier.Meta) bool { keys[k] = true; return true }); err != nil {
		t.Fatalf("scan: %v", err)
	}
	if len(keys) != 2 || !keys["small"] || !keys["big"] {
		t.Fatalf("scan found %v", keys)
	}
	if err := tr2.Sweep(context.Background()); err != nil {
		t.Fatalf("sweep: %v", err)
	}
	if n, b := tr2.Usage(); n != 2 || b < int64(len(big)) {
		t.Fatalf("usage after sweep: %d objects, %d bytes", n, b)
	}
	if err := tr2.Delete(context.Background(), "small"); err != nil {
		t.Fatal(err)
	}
	if _, err := tr2.Get(context.Background(), "small"); !errors.Is(err, tier.ErrNotFound) {
		t.Fatalf("deleted: %v", err)
	}
}

func TestStartRejectsBadOptions(t *testing.T) {
	for _, c := range []struct {
		opts s3embed.Options
		want string
	}{
		{s3embed.Options{}, "Dir is required"},
		{s3embed.Options{Dir: t.TempDir(), Addr: "0.0.0.0:0"}, "not a loopback address"},
		{s3embed.Options{Dir: t.TempDir(), Addr: "nonsense"}, "use host:port"},
	} {
		_, err := s3embed.Start(c.opts)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Start(%+v) = %v, want error containing %q", c.opts, err, c.want)
		}
	}
}

// TestCloseWithAConnectionThatSentNothing: a client connection that was
// opened and never carried a request (an S3 client's transport dials
// ahead) does not make Close wait for it and fail.
func TestCloseWithAConnectionThatSentNothing(t *testing.T) {
	srv, err := s3embed.Start(s3embed.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.Endpoint(), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := srv.Close(); err != nil {
		t.Fatalf("Close with an idle new connection: %v", err)
	}
}
