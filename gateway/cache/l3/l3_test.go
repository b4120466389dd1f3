package l3_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/meridian-edge/meridian/gateway/cache/l3"
	"github.com/meridian-edge/meridian/gateway/cache/tier"
	"github.com/meridian-edge/meridian/internal/testutil"
)

func newTier(t testing.TB, srv *testutil.S3Server, mod func(*l3.Options)) *l3.Tier {
	t.Helper()
	o := l3.Options{
		Endpoint: srv.Endpoint, Bucket: "meridian-cache", Prefix: "eu-west",
		AccessKey: srv.AccessKey, SecretKey: srv.SecretKey,
		Timeout: time.Second, SweepInterval: -1, SpoolDir: t.TempDir(),
	}
	if mod != nil {
		mod(&o)
	}
	tr, err := l3.New(o)
	if err != nil {
		t.Fatalf("l3.New against %s: %v", srv, err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

func body(key string, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(len(key)*13 + i*7 + i/509)
	}
	return b
}

func meta(url string) *tier.Meta {
	return &tier.Meta{
		Kind: tier.KindResponse, Site: "s1", URL: url, Status: 200,
		Header:      http.Header{"Content-Type": {"text/plain"}, "Surrogate-Key": {"a b"}},
		RequestTime: time.Unix(1700000000, 0), ResponseTime: time.Unix(1700000001, 0), Size: -1,
	}
}

func put(t testing.TB, tr tier.Tier, key string, b []byte) error {
	t.Helper()
	w, err := tr.Put(context.Background(), key, meta("https://example.com/"+key))
	if err != nil {
		return err
	}
	for len(b) > 0 {
		n := min(len(b), 32<<10)
		_, _ = w.Write(b[:n])
		b = b[n:]
	}
	return w.Commit()
}

func get(tr tier.Tier, key string) (*tier.Meta, []byte, error) {
	o, err := tr.Get(context.Background(), key)
	if err != nil {
		return nil, nil, err
	}
	defer o.Body.Close()
	b, err := io.ReadAll(o.Body)
	return o.Meta, b, err
}

func TestRoundTripAgainstVersityGW(t *testing.T) {
	srv := testutil.StartS3(t)
	tr := newTier(t, srv, nil)
	for _, n := range []int{0, 10, 1 << 20, 9<<20 + 5} { // the last one spools to a file
		key := fmt.Sprintf("https://example.com/obj-%d", n)
		want := body(key, n)
		if err := put(t, tr, key, want); err != nil {
			t.Fatalf("%d bytes: put: %v", n, err)
		}
		m, got, err := get(tr, key)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%d bytes: get: err=%v, %d bytes", n, err, len(got))
		}
		if m.Size != int64(n) || m.URL != "https://example.com/"+key || m.Header.Get("Surrogate-Key") != "a b" {
			t.Fatalf("meta = %+v", m)
		}
	}
	// Stored headers larger than S3's 2 KB user-metadata limit.
	big := meta("https://example.com/big-headers")
	big.Header.Set("X-Long", strings.Repeat("v", 10_000))
	w, err := tr.Put(context.Background(), "big-headers", big)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write([]byte("x"))
	if err := w.Commit(); err != nil {
		t.Fatalf("put with 10 KB of headers: %v", err)
	}
	if m, _, err := get(tr, "big-headers"); err != nil || len(m.Header.Get("X-Long")) != 10_000 {
		t.Fatalf("10 KB header did not survive: %v", err)
	}
	if _, _, err := get(tr, "absent"); !errors.Is(err, tier.ErrNotFound) {
		t.Fatalf("absent: %v, want ErrNotFound", err)
	}
	if c := tr.Counters(); c.Failures != 0 || c.Stored != 5 {
		t.Fatalf("counters = %+v", c)
	}
}

func TestDeleteAndScan(t *testing.T) {
	srv := testutil.StartS3(t)
	tr := newTier(t, srv, nil)
	other := newTier(t, srv, func(o *l3.Options) { o.Prefix = "us-east/" })
	for _, k := range []string{"a", "b", "c"} {
		if err := put(t, tr, k, body(k, 100)); err != nil {
			t.Fatal(err)
		}
	}
	if err := put(t, other, "z", body("z", 100)); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := tr.Delete(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if err := tr.Delete(ctx, "never"); err != nil {
		t.Fatalf("delete of a missing key: %v", err)
	}
	seen := map[string]string{}
	if err := tr.Scan(ctx, func(k string, m *tier.Meta) bool { seen[k] = m.URL; return true }); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 2 || seen["a"] != "https://example.com/a" || seen["c"] != "https://example.com/c" {
		t.Fatalf("scan of eu-west = %v (another region's prefix must not show)", seen)
	}
	if _, _, err := get(tr, "b"); !errors.Is(err, tier.ErrNotFound) {
		t.Fatalf("deleted object served: %v", err)
	}
}

func TestServerDownOpensCircuitAndRecovers(t *testing.T) {
	srv := testutil.StartS3(t)
	tr := newTier(t, srv, func(o *l3.Options) { o.FailureThreshold = 3; o.Cooldown = 300 * time.Millisecond })
	if err := put(t, tr, "k", body("k", 1000)); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	for i := range 3 {
		if _, _, err := get(tr, "k"); err == nil || errors.Is(err, tier.ErrNotFound) {
			t.Fatalf("get %d with the server down: %v, want a failure", i, err)
		}
	}
	if _, _, err := get(tr, "k"); !errors.Is(err, l3.ErrUnavailable) {
		t.Fatalf("after 3 failures: %v, want ErrUnavailable", err)
	}
	if err := put(t, tr, "k2", body("k2", 10)); !errors.Is(err, l3.ErrUnavailable) {
		t.Fatalf("put while open: %v, want ErrUnavailable", err)
	}
	c := tr.Counters()
	if c.CircuitOpen != 1 || c.CircuitOpened != 1 || c.Skipped < 2 || c.Failures < 3 {
		t.Fatalf("counters while down = %+v", c)
	}
	srv.Start()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, got, err := get(tr, "k")
		if err == nil {
			if !bytes.Equal(got, body("k", 1000)) {
				t.Fatal("wrong bytes after recovery")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("l3 did not recover after the server returned: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if c := tr.Counters(); c.CircuitOpen != 0 {
		t.Fatalf("circuit still open after recovery: %+v", c)
	}
}

func TestSweepEnforcesBudgetAndKeepsHitObjects(t *testing.T) {
	srv := testutil.StartS3(t)
	tr := newTier(t, srv, func(o *l3.Options) { o.Bytes = 50_000 })
	for i := range 10 { // 10 x ~10 KB = 100 KB, twice the budget
		k := fmt.Sprint("k", i)
		if err := put(t, tr, k, body(k, 10_000)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // distinct modification times
	}
	// k0 and k1 are the oldest, but popular.
	for _, k := range []string{"k0", "k1"} {
		if _, _, err := get(tr, k); err != nil {
			t.Fatal(err)
		}
	}
	if err := tr.Sweep(context.Background()); err != nil {
		t.Fatalf("sweep: %v", err)
	}
	objs, used := tr.Usage()
	if used > 50_000 || objs == 0 {
		t.Fatalf("after sweep: %d objects, %d bytes; budget 50000", objs, used)
	}
	if c := tr.Counters(); c.Evictions < 5 {
		t.Fatalf("evictions = %d, want at least 5", c.Evictions)
	}
	for _, k := range []string{"k0", "k1", "k9"} {
		if _, _, err := get(tr, k); err != nil {
			t.Errorf("%s should have survived the sweep: %v", k, err)
		}
	}
	if _, _, err := get(tr, "k2"); !errors.Is(err, tier.ErrNotFound) {
		t.Errorf("k2 (oldest, never hit) survived: %v", err)
	}
}

func TestDamagedObjectIsMissAndDeleted(t *testing.T) {
	srv := testutil.StartS3(t)
	tr := newTier(t, srv, nil)
	if err := put(t, tr, "victim", body("victim", 1000)); err != nil {
		t.Fatal(err)
	}
	// Overwrite the stored object with garbage through a plain S3 client.
	cl := s3.New(s3.Options{
		Region: "us-east-1", BaseEndpoint: aws.String(srv.Endpoint), UsePathStyle: true,
		Credentials:                credentials.NewStaticCredentialsProvider(srv.AccessKey, srv.SecretKey, ""),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
	})

	out, err := cl.ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String("meridian-cache")})
	if err != nil || len(out.Contents) != 1 {
		t.Fatalf("list: %v", err)
	}
	name := aws.ToString(out.Contents[0].Key)
	if _, err := cl.PutObject(context.Background(), &s3.PutObjectInput{
		Bucket: aws.String("meridian-cache"), Key: &name, Body: strings.NewReader("MRL3 this is not a cache object"),
	}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := get(tr, "victim"); !errors.Is(err, tier.ErrNotFound) {
		t.Fatalf("damaged object: %v, want ErrNotFound", err)
	}
	out, err = cl.ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String("meridian-cache")})
	if err != nil || len(out.Contents) != 0 {
		t.Fatalf("damaged object not deleted: %v, %d objects", err, len(out.Contents))
	}
}

func TestBadOptions(t *testing.T) {
	for _, c := range []struct {
		opts l3.Options
		want string
	}{
		{l3.Options{}, "Bucket is required"},
		{l3.Options{Bucket: "b", Endpoint: "127.0.0.1:9000"}, "must be an http:// or https:// URL"},
		{l3.Options{Bucket: "b", MaxObject: 6 << 30}, "between 1 and 5 GiB"},
		{l3.Options{Bucket: "b", Timeout: -1}, "must not be negative"},
	} {
		_, err := l3.New(c.opts)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%+v) = %v, want error containing %q", c.opts, err, c.want)
		}
	}
}

func TestTooLarge(t *testing.T) {
	srv := testutil.StartS3(t)
	tr := newTier(t, srv, func(o *l3.Options) { o.MaxObject = 1000 })
	m := meta("https://example.com/x")
	m.Size = 2000
	if _, err := tr.Put(context.Background(), "x", m); !errors.Is(err, tier.ErrTooLarge) {
		t.Fatalf("declared too large: %v", err)
	}
	if err := put(t, tr, "y", make([]byte, 1500)); !errors.Is(err, tier.ErrTooLarge) {
		t.Fatalf("streamed too large: %v", err)
	}
}

func TestBodySeeksWithRangedGets(t *testing.T) {
	srv := testutil.StartS3(t)
	tr := newTier(t, srv, nil)
	want := body("big", 1<<20)
	if err := put(t, tr, "big", want); err != nil {
		t.Fatal(err)
	}
	o, err := tr.Get(context.Background(), "big")
	if err != nil {
		t.Fatal(err)
	}
	defer o.Body.Close()
	s, ok := o.Body.(io.ReadSeeker)
	if !ok {
		t.Fatalf("L3 body %T does not seek", o.Body)
	}
	if n, err := s.Seek(0, io.SeekEnd); err != nil || n != 1<<20 {
		t.Fatalf("seek to end: %d, %v", n, err)
	}
	for _, c := range []struct{ off, n int64 }{{500_000, 1000}, {10, 20}, {1<<20 - 5, 5}} {
		if _, err := s.Seek(c.off, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, c.n)
		if _, err := io.ReadFull(s, got); err != nil || !bytes.Equal(got, want[c.off:c.off+c.n]) {
			t.Fatalf("range %d+%d: %v", c.off, c.n, err)
		}
	}
	// Replaced by another PoP while being read: an error, not mixed bytes.
	if err := put(t, tr, "big", body("other", 1<<20)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Seek(100, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(s, make([]byte, 10)); err == nil || !strings.Contains(err.Error(), "replaced or deleted") {
		t.Fatalf("read after the object was replaced: %v, want an error", err)
	}
}
