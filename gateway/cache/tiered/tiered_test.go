package tiered_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-edge/meridian/gateway/cache/l1"
	"github.com/meridian-edge/meridian/gateway/cache/l2"
	"github.com/meridian-edge/meridian/gateway/cache/l3"
	"github.com/meridian-edge/meridian/gateway/cache/tier"
	"github.com/meridian-edge/meridian/gateway/cache/tiered"
	"github.com/meridian-edge/meridian/internal/testutil"
)

type stack struct {
	l1  *l1.Tier
	l2  *l2.Tier
	l3  *l3.Tier
	all *tiered.Tiered
}

func newStack(t *testing.T, endpoint string, mod func(*tiered.Options), l3mod func(*l3.Options)) *stack {
	t.Helper()
	t1, err := l1.New(l1.Options{Bytes: 8 << 20, MaxObject: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = t1.Close() })
	t2, err := l2.Open(l2.Options{Dir: t.TempDir(), Bytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = t2.Close() })
	o3 := l3.Options{Endpoint: endpoint, Bucket: "cache", Prefix: "r1", AccessKey: "meridian-test", SecretKey: "meridian-test-secret",
		Timeout: time.Second, SweepInterval: -1, FailureThreshold: 2, Cooldown: 200 * time.Millisecond, SpoolDir: t.TempDir()}
	if l3mod != nil {
		l3mod(&o3)
	}
	t3, err := l3.New(o3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = t3.Close() })
	o := tiered.Options{Tiers: []tier.Tier{t1, t2, t3}}
	if mod != nil {
		mod(&o)
	}
	all, err := tiered.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = all.Close() })
	return &stack{t1, t2, t3, all}
}

func body(key string, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(len(key)*31 + i*7 + i/263)
	}
	return b
}

func meta(key string) *tier.Meta {
	return &tier.Meta{Kind: tier.KindResponse, Site: "s1", URL: "https://example.com/" + key, Status: 200,
		Header: http.Header{"Content-Type": {"text/plain"}}, ResponseTime: time.Now(), RequestTime: time.Now(), Size: -1}
}

func put(t testing.TB, tr tier.Tier, key string, b []byte) error {
	t.Helper()
	w, err := tr.Put(context.Background(), key, meta(key))
	if err != nil {
		return err
	}
	for len(b) > 0 {
		n := min(len(b), 16<<10)
		_, _ = w.Write(b[:n])
		b = b[n:]
	}
	return w.Commit()
}

// read reads key through the composition and reports the tier that answered.
func read(t *testing.T, s *stack, key string) ([]byte, string, error) {
	t.Helper()
	o, from, err := s.all.GetFrom(context.Background(), key)
	if err != nil {
		return nil, "", err
	}
	defer o.Body.Close()
	b, err := io.ReadAll(o.Body)
	return b, from, err
}

func has(tr tier.Tier, key string) bool {
	o, err := tr.Get(context.Background(), key)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, o.Body)
	o.Body.Close()
	return true
}

func flush(t *testing.T, s *stack) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.all.Flush(ctx); err != nil {
		t.Fatalf("write-downs did not finish: %v", err)
	}
}

func TestWriteDownReachesEveryTier(t *testing.T) {
	srv := testutil.StartS3(t)
	s := newStack(t, srv.Endpoint, nil, nil)
	small, large := body("small", 20_000), body("large", 3<<20) // large: over L1's limit and the spool limit
	if err := put(t, s.all, "small", small); err != nil {
		t.Fatal(err)
	}
	if err := put(t, s.all, "large", large); err != nil {
		t.Fatal(err)
	}
	flush(t, s)
	for _, c := range []struct {
		tr   tier.Tier
		key  string
		want bool
	}{
		{s.l1, "small", true}, {s.l2, "small", true}, {s.l3, "small", true},
		{s.l1, "large", false}, {s.l2, "large", true}, {s.l3, "large", true},
	} {
		if got := has(c.tr, c.key); got != c.want {
			t.Errorf("%s in %s: %v, want %v", c.key, c.tr.Name(), got, c.want)
		}
	}
	if b, from, err := read(t, s, "large"); err != nil || from != "l2" || !bytes.Equal(b, large) {
		t.Fatalf("large: from %q, err %v", from, err)
	}
	if b, from, err := read(t, s, "small"); err != nil || from != "l1" || !bytes.Equal(b, small) {
		t.Fatalf("small: from %q, err %v", from, err)
	}
	c := s.all.Counters()
	if c.WriteDowns["l2"] != 2 || c.WriteDowns["l3"] != 2 || c.Dropped["l3"] != 0 {
		t.Fatalf("counters = %+v", c)
	}
}

func TestPromotionByFrequency(t *testing.T) {
	srv := testutil.StartS3(t)
	s := newStack(t, srv.Endpoint, nil, nil)
	want := body("k", 50_000)
	if err := put(t, s.l3, "k", want); err != nil { // only in L3, as another PoP of the region left it
		t.Fatal(err)
	}
	steps := []struct {
		from       string
		inL1, inL2 bool
	}{
		{"l3", false, false}, // first lookup: served, not promoted
		{"l3", true, true},   // second lookup: promoted while read
		{"l1", true, true},
	}
	for i, st := range steps {
		b, from, err := read(t, s, "k")
		if err != nil || !bytes.Equal(b, want) {
			t.Fatalf("step %d: %v", i, err)
		}
		if from != st.from || has(s.l1, "k") != st.inL1 || has(s.l2, "k") != st.inL2 {
			t.Fatalf("step %d: from %s, in l1 %v, in l2 %v; want %+v", i, from, has(s.l1, "k"), has(s.l2, "k"), st)
		}
	}
	// Gone from memory (evicted, restarted): L2 answers, and promotes the
	// popular key back into L1.
	if err := s.l1.Delete(context.Background(), "k"); err != nil {
		t.Fatal(err)
	}
	if _, from, err := read(t, s, "k"); err != nil || from != "l2" {
		t.Fatalf("after L1 delete: from %q, %v", from, err)
	}
	// A body closed before the end is not promoted half-written.
	if err := put(t, s.l3, "partial", want); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		o, _, err := s.all.GetFrom(context.Background(), "partial")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.ReadFull(o.Body, make([]byte, 100))
		o.Body.Close()
	}
	flush(t, s)
	if has(s.l1, "partial") {
		t.Fatal("a half-read body was promoted into L1")
	}
	// Instead, the popular object was copied whole into L2 in the background.
	o, err := s.l2.Get(context.Background(), "partial")
	if err != nil {
		t.Fatalf("partial was not copied into L2: %v", err)
	}
	b, _ := io.ReadAll(o.Body)
	o.Body.Close()
	if !bytes.Equal(b, want) {
		t.Fatalf("L2 holds %d bytes of partial, want the whole %d", len(b), len(want))
	}
	if c := s.all.Counters(); c.Promotions["l1"] != 2 || c.Promotions["l2"] != 1 || c.Hits["l3"] != 4 {
		t.Fatalf("counters = %+v", c)
	}
}

func TestS3DownKeepsServingAndRecovers(t *testing.T) {
	srv := testutil.StartS3(t)
	s := newStack(t, srv.Endpoint, nil, nil)
	if err := put(t, s.all, "before", body("before", 30_000)); err != nil {
		t.Fatal(err)
	}
	flush(t, s)
	srv.Stop()
	// Hits from L1 and L2 go on; new objects are stored in L1 and L2.
	for i := range 20 {
		key := fmt.Sprint("during-", i)
		if err := put(t, s.all, key, body(key, 10_000)); err != nil {
			t.Fatalf("put with S3 down: %v", err)
		}
		if b, from, err := read(t, s, "before"); err != nil || from != "l1" || !bytes.Equal(b, body("before", 30_000)) {
			t.Fatalf("hit with S3 down: from %q, %v", from, err)
		}
	}
	flush(t, s)
	if err := s.l1.Delete(context.Background(), "during-3"); err != nil {
		t.Fatal(err)
	}
	if _, from, err := read(t, s, "during-3"); err != nil || from != "l2" {
		t.Fatalf("L2 with S3 down: from %q, %v", from, err)
	}
	if _, _, err := read(t, s, "nowhere"); !errors.Is(err, tier.ErrNotFound) {
		t.Fatalf("miss with S3 down: %v, want ErrNotFound", err)
	}
	c3 := s.l3.Counters()
	if c3.CircuitOpened == 0 || c3.Skipped == 0 {
		t.Fatalf("l3 counters while down = %+v", c3)
	}
	srv.Start()
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		key := fmt.Sprint("after-", i)
		if err := put(t, s.all, key, body(key, 1000)); err != nil {
			t.Fatal(err)
		}
		flush(t, s)
		if has(s.l3, key) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("L3 did not take writes again after the server returned: %+v", s.l3.Counters())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if has(s.l3, "before") != true {
		t.Fatal("object stored before the outage is gone from L3")
	}
}

// A store that accepts connections and never answers: the slowest L3.
func hangingServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { close(done); ln.Close() })
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
			select {
			case <-done:
				return
			default:
			}
		}
	}()
	return "http://" + ln.Addr().String()
}

func TestSlowL3DropsWriteDownsNotRequests(t *testing.T) {
	endpoint := hangingServer(t)
	s := newStack(t, endpoint,
		func(o *tiered.Options) { o.QueueLen = 8; o.Workers = 1 },
		func(o *l3.Options) { o.Timeout = 500 * time.Millisecond; o.FailureThreshold = 1000 })
	const n = 40
	for i := range n {
		key := fmt.Sprint("k", i)
		if err := put(t, s.all, key, body(key, 5000)); err != nil {
			t.Fatalf("put %s: %v", key, err)
		}
		if b, from, err := read(t, s, key); err != nil || from != "l1" || !bytes.Equal(b, body(key, 5000)) {
			t.Fatalf("%s: from %q, %v", key, from, err)
		}
		// Paced like traffic: the disk keeps up, the hanging L3 cannot.
		time.Sleep(5 * time.Millisecond)
	}
	c := s.all.Counters()
	if c.Dropped["l3"] == 0 {
		t.Fatalf("no write-down was dropped with a hanging L3 and a queue of 8: %+v", c)
	}
	// L2 has its own queue: L3's backlog does not cost it anything.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := range n {
		key := fmt.Sprint("k", i)
		for !has(s.l2, key) {
			if ctx.Err() != nil {
				t.Fatalf("%s never reached L2 while L3 hung: %+v", key, s.all.Counters())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

func TestDeleteAndPurgeReachEveryTier(t *testing.T) {
	srv := testutil.StartS3(t)
	s := newStack(t, srv.Endpoint, nil, nil)
	ctx := context.Background()
	for _, k := range []string{"a", "b", "c"} {
		if err := put(t, s.all, k, body(k, 4000)); err != nil {
			t.Fatal(err)
		}
	}
	flush(t, s)
	// A delete right after a store cancels the queued write-downs.
	if err := put(t, s.all, "d", body("d", 4000)); err != nil {
		t.Fatal(err)
	}
	if err := s.all.Delete(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	flush(t, s)
	for _, tr := range []tier.Tier{s.l1, s.l2, s.l3} {
		if has(tr, "d") {
			t.Fatalf("deleted key d came back in %s from a queued write-down", tr.Name())
		}
	}
	// Purge as the cache does: Scan, then Delete what matches.
	seen := map[string]int{}
	err := s.all.Scan(ctx, func(key string, m *tier.Meta) bool {
		seen[key]++
		if strings.HasSuffix(m.URL, "/b") {
			_ = s.all.Delete(ctx, key)
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != 3 || seen["a"] != 1 || seen["b"] != 1 || seen["c"] != 1 {
		t.Fatalf("scan visited %v; want a, b, c once each", seen)
	}
	for _, tr := range []tier.Tier{s.l1, s.l2, s.l3} {
		if has(tr, "b") {
			t.Errorf("purged b still in %s", tr.Name())
		}
		if !has(tr, "a") {
			t.Errorf("a missing from %s", tr.Name())
		}
	}
	// Soft purge: tiers that can update metadata do at once; L3 is
	// rewritten in the background from L1.
	m := meta("a")
	m.Invalidated = true
	if err := s.all.UpdateMeta(ctx, "a", m); err != nil {
		t.Fatal(err)
	}
	flush(t, s)
	for _, tr := range []tier.Tier{s.l1, s.l2, s.l3} {
		o, err := tr.Get(ctx, "a")
		if err != nil {
			t.Fatalf("%s after soft purge: %v", tr.Name(), err)
		}
		b, _ := io.ReadAll(o.Body)
		o.Body.Close()
		if !o.Meta.Invalidated || !bytes.Equal(b, body("a", 4000)) {
			t.Fatalf("%s after soft purge: invalidated %v, %d bytes", tr.Name(), o.Meta.Invalidated, len(b))
		}
	}
	if c := s.all.Counters(); c.PendingDeletes != 0 {
		t.Fatalf("pending deletes after the rewrite: %+v", c)
	}
}

func TestDeleteWhileS3DownIsNeverServedAndRetried(t *testing.T) {
	srv := testutil.StartS3(t)
	// No timed retry during the test: the retry on the next lookup is checked.
	s := newStack(t, srv.Endpoint, func(o *tiered.Options) { o.RetryEvery = time.Hour }, nil)
	ctx := context.Background()
	if err := put(t, s.all, "x", body("x", 3000)); err != nil {
		t.Fatal(err)
	}
	flush(t, s)
	srv.Stop()
	time.Sleep(10 * time.Millisecond) // a response time strictly before the delete
	if err := s.all.Delete(ctx, "x"); err != nil {
		t.Fatalf("delete with L3 down: %v (local tiers succeeded)", err)
	}
	if c := s.all.Counters(); c.PendingDeletes != 1 {
		t.Fatalf("pending deletes = %d, want 1", c.PendingDeletes)
	}
	srv.Start()
	if !has(s.l3, "x") {
		t.Fatal("test setup: L3 should still hold the old copy")
	}
	// L3 answers again and still holds the old copy: it must not be served.
	deadline := time.Now().Add(10 * time.Second)
	for s.all.Counters().Hidden["l3"] == 0 {
		if _, from, err := read(t, s, "x"); !errors.Is(err, tier.ErrNotFound) {
			t.Fatalf("deleted object served from %q after L3 returned: %v", from, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("L3 never answered again: %+v", s.l3.Counters())
		}
		time.Sleep(20 * time.Millisecond)
	}
	flush(t, s)
	if has(s.l3, "x") || s.all.Counters().PendingDeletes != 0 {
		t.Fatalf("the failed delete was not retried on the next lookup: %+v", s.all.Counters())
	}
	// A newer copy stored after the delete is served again.
	if err := put(t, s.all, "x", body("x", 10)); err != nil {
		t.Fatal(err)
	}
	if b, _, err := read(t, s, "x"); err != nil || len(b) != 10 {
		t.Fatalf("new copy: %v", err)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	t1, _ := l1.New(l1.Options{Bytes: 1 << 20})
	defer t1.Close()
	for _, c := range []struct {
		opts tiered.Options
		want string
	}{
		{tiered.Options{}, "at least one tier"},
		{tiered.Options{Tiers: []tier.Tier{t1, nil}}, "tier 1 is nil"},
		{tiered.Options{Tiers: []tier.Tier{t1}, PromoteAfter: 20}, "at most 15"},
		{tiered.Options{Tiers: []tier.Tier{t1}, QueueLen: -1}, "must not be negative"},
	} {
		_, err := tiered.New(c.opts)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%+v) = %v, want error containing %q", c.opts, err, c.want)
		}
	}
}

func TestRangeReadsAndRangePromotion(t *testing.T) {
	srv := testutil.StartS3(t)
	s := newStack(t, srv.Endpoint, nil, nil)
	want := body("r", 400_000)
	if err := put(t, s.l3, "r", want); err != nil { // only in L3
		t.Fatal(err)
	}
	rangeRead := func(off, n int64) (string, []byte) {
		t.Helper()
		o, from, err := s.all.GetFrom(context.Background(), "r")
		if err != nil {
			t.Fatal(err)
		}
		sec, err := tiered.Section(o.Body, off, n)
		if err != nil {
			t.Fatal(err)
		}
		defer sec.Close()
		b, err := io.ReadAll(sec)
		if err != nil {
			t.Fatal(err)
		}
		return from, b
	}
	for i, st := range []struct {
		off, n int64
		from   string
	}{
		{1000, 10, "l3"},
		{200_000, 70_000, "l3"}, // second lookup: copied into L2 in the background
	} {
		from, b := rangeRead(st.off, st.n)
		if from != st.from || !bytes.Equal(b, want[st.off:st.off+st.n]) {
			t.Fatalf("range %d: from %s, %d bytes", i, from, len(b))
		}
	}
	flush(t, s)
	if !has(s.l2, "r") {
		t.Fatal("a popular object read only by ranges was not promoted into L2")
	}
	from, b := rangeRead(390_000, 10_000)
	if from != "l2" || !bytes.Equal(b, want[390_000:]) {
		t.Fatalf("range from L2: from %s, %d bytes", from, len(b))
	}
}

func TestFailedDeleteIsRetriedInTheBackground(t *testing.T) {
	srv := testutil.StartS3(t)
	s := newStack(t, srv.Endpoint, func(o *tiered.Options) { o.RetryEvery = 50 * time.Millisecond }, nil)
	if err := put(t, s.all, "y", body("y", 3000)); err != nil {
		t.Fatal(err)
	}
	flush(t, s)
	srv.Stop()
	if err := s.all.Delete(context.Background(), "y"); err != nil {
		t.Fatal(err)
	}
	srv.Start()
	deadline := time.Now().Add(10 * time.Second)
	for s.all.Counters().PendingDeletes != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the failed delete was not retried: %+v", s.all.Counters())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if has(s.l3, "y") {
		t.Fatal("L3 still holds the deleted object after the retry")
	}
}

func TestMetricsPerTier(t *testing.T) {
	t1, err := l1.New(l1.Options{Bytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer t1.Close()
	t2, err := l2.Open(l2.Options{Dir: t.TempDir(), Bytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer t2.Close()
	reg := prometheus.NewRegistry()
	all, err := tiered.New(tiered.Options{Tiers: []tier.Tier{t1, t2}, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer all.Close()
	if err := put(t, t2, "k", body("k", 100)); err != nil {
		t.Fatal(err)
	}
	if _, from, err := all.GetFrom(context.Background(), "k"); err != nil || from != "l2" {
		t.Fatalf("from %q: %v", from, err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() != "meridian_cache_tiered_hits_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == "l2" && m.GetCounter().GetValue() == 1 {
				found = true
			}
		}
	}
	if !found {
		t.Fatal("meridian_cache_tiered_hits_total{tier=\"l2\"} is not 1")
	}
}

func TestScanSkipsAFailingOrExcludedL3(t *testing.T) {
	srv := testutil.StartS3(t)
	s := newStack(t, srv.Endpoint, nil, nil)
	ctx := context.Background()
	if err := put(t, s.all, "local", body("local", 100)); err != nil {
		t.Fatal(err)
	}
	if err := put(t, s.l3, "remote", body("remote", 100)); err != nil { // only in L3
		t.Fatal(err)
	}
	flush(t, s)
	scan := func(tr *tiered.Tiered) map[string]bool {
		t.Helper()
		seen := map[string]bool{}
		if err := tr.Scan(ctx, func(k string, _ *tier.Meta) bool { seen[k] = true; return true }); err != nil {
			t.Fatalf("scan: %v", err)
		}
		return seen
	}
	if got := scan(s.all); !got["local"] || !got["remote"] {
		t.Fatalf("scan with L3 up = %v", got)
	}
	skipping, err := tiered.New(tiered.Options{Tiers: []tier.Tier{s.l1, s.l2, s.l3}, SkipScan: []string{"l3"}})
	if err != nil {
		t.Fatal(err)
	}
	defer skipping.Close()
	if got := scan(skipping); !got["local"] || got["remote"] {
		t.Fatalf("scan with SkipScan l3 = %v", got)
	}
	srv.Stop()
	if got := scan(s.all); !got["local"] || got["remote"] {
		t.Fatalf("scan with L3 down = %v; want the local tiers only, and no error", got)
	}
	if c := s.all.Counters(); c.Errors["l3"] == 0 {
		t.Fatalf("the failed L3 scan was not counted: %+v", c)
	}
}
