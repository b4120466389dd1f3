package statesync

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/internal/crdt"
	"github.com/meridian-edge/meridian/internal/natsembed"
	"github.com/meridian-edge/meridian/internal/testutil"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
)

func connect(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond), nats.RetryOnFailedConnect(true))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

type testNode struct {
	*Node
	reg *prometheus.Registry
	dir string
}

func openNode(t testing.TB, id, url string, dir string) *testNode {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	reg := prometheus.NewRegistry()
	n, err := Open(context.Background(), Options{
		NodeID: id, Conn: connect(t, url), DataDir: dir,
		AntiEntropyInterval: 200 * time.Millisecond, ReplayTimeout: 5 * time.Second,
		Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return &testNode{Node: n, reg: reg, dir: dir}
}

// eventually polls cond until it holds or 10 s pass (a liveness bound, not a
// timing assertion).
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func sameDigest(a, b *Node) bool {
	da, db := a.Digest(), b.Digest()
	for i := range da {
		if da[i] != db[i] {
			return false
		}
	}
	return true
}

func TestPurgeReachesOtherNodeAndIsChecked(t *testing.T) {
	srv := testutil.StartNATS(t)
	a := openNode(t, "ams", srv.ClientURL(), "")
	b := openNode(t, "fra", srv.ClientURL(), "")
	got := make(chan PurgeRecord, 1)
	stop := b.Watch(func(e Event) {
		if e.Purge != nil {
			got <- *e.Purge
		}
	})
	defer stop()
	stored := time.Now().Add(-time.Minute)
	p, err := a.Purge(context.Background(), PurgeRecord{Site: "example.com", Kind: PurgeSurrogateKey, Value: "product-42"})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-got:
		if r.ID != p.ID || r.Value != "product-42" {
			t.Fatalf("watcher got %+v, want %+v", r, p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("purge never reached fra")
	}
	cases := []struct {
		name string
		site string
		url  string
		keys []string
		at   time.Time
		want bool
	}{
		{"tagged object stored before", "example.com", "https://example.com/p/42", []string{"x", "product-42"}, stored, true},
		{"untagged object", "example.com", "https://example.com/p/42", []string{"x"}, stored, false},
		{"stored after the purge", "example.com", "https://example.com/p/42", []string{"product-42"}, p.At.Add(time.Second), false},
		{"other site", "other.org", "https://other.org/", []string{"product-42"}, stored, false},
	}
	for _, c := range cases {
		if v := b.CheckPurged(c.site, c.url, c.keys, c.at); v.Purged != c.want {
			t.Errorf("%s: purged=%v, want %v", c.name, v.Purged, c.want)
		}
	}
	// Prefix, URL, soft and site purges.
	ctx := context.Background()
	if _, err := a.Purge(ctx, PurgeRecord{Site: "example.com", Kind: PurgePrefix, Value: "https://example.com/img/", Soft: true}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "soft prefix purge on fra", func() bool {
		v := b.CheckPurged("example.com", "https://example.com/img/a.png", nil, stored)
		return v.Stale && !v.Purged
	})
	if _, err := a.Purge(ctx, PurgeRecord{Site: "example.com", Kind: PurgeSite}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "site purge on fra", func() bool {
		return b.CheckPurged("example.com", "https://example.com/anything", nil, stored).Purged
	})
	if n := len(b.Purges("example.com")); n != 3 {
		t.Fatalf("fra lists %d purges, want 3", n)
	}
}

func TestBadWritesAreRefusedWithClearErrors(t *testing.T) {
	srv := testutil.StartNATS(t)
	a := openNode(t, "ams", srv.ClientURL(), "")
	ctx := context.Background()
	purge := func(p PurgeRecord) error { _, err := a.Purge(ctx, p); return err }
	cases := []struct {
		name string
		err  error
		want string // in the message the operator reads
	}{
		{"purge without site", purge(PurgeRecord{Kind: PurgeSite}), `site ""`},
		{"purge with unknown kind", purge(PurgeRecord{Site: "s", Kind: "regex"}), "want url, prefix, surrogate-key or site"},
		{"url purge without value", purge(PurgeRecord{Site: "s", Kind: PurgeURL}), "needs a value"},
		{"purge dated next year", purge(PurgeRecord{Site: "s", Kind: PurgeSite, At: time.Now().AddDate(1, 0, 0)}), "in the future"},
		{"purge older than the retention", purge(PurgeRecord{Site: "s", Kind: PurgeSite, At: time.Now().AddDate(0, -2, 0)}), "older than the purge retention"},
		{"deployment canary 150%", a.Deploy(ctx, Deployment{Site: "s", Plugin: "p", Version: "1", CanaryPercent: 150}), "canary percent in 0..100"},
		{"deployment without version", a.Deploy(ctx, Deployment{Site: "s", Plugin: "p"}), "need a version"},
		{"oversized KV value", a.KVSet(ctx, "s", "k", make([]byte, MaxValueSize+1)), "exceeds 65536"},
		{"site with slash", a.KVSet(ctx, "a/b", "k", nil), `site "a/b"`},
		{"empty KV key", a.KVSet(ctx, "s", "", nil), "empty KV key"},
		{"config without version", a.AnnounceConfig(ctx, ConfigVersion{Name: "fleet"}), "empty version"},
		{"counter without key", func() error { _, err := a.CounterAdd(ctx, "s", "", 1); return err }(), "counter key"},
	}
	for _, c := range cases {
		if c.err == nil {
			t.Errorf("%s: accepted", c.name)
		} else if !strings.Contains(c.err.Error(), c.want) {
			t.Errorf("%s: error %q does not say %q", c.name, c.err, c.want)
		}
	}
	if keys := a.Keys(""); len(keys) != 0 {
		t.Fatalf("refused writes left keys %v", keys)
	}
	opens := []struct {
		name string
		opts Options
		want string
	}{
		{"node id with a dot", Options{NodeID: "bad.id", Conn: a.opts.Conn, DataDir: t.TempDir()}, `node id "bad.id"`},
		{"no connection", Options{NodeID: "ok", DataDir: t.TempDir()}, "no NATS connection"},
		{"no data dir", Options{NodeID: "ok", Conn: a.opts.Conn}, "no data directory"},
		{"log kept longer than tombstones", Options{NodeID: "ok", Conn: a.opts.Conn, DataDir: t.TempDir(), StreamMaxAge: 10 * 24 * time.Hour}, "must be below the tombstone TTL"},
	}
	for _, c := range opens {
		if _, err := Open(ctx, c.opts); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Open with %s: error %v, want one saying %q", c.name, err, c.want)
		}
	}
	a.Close()
	if err := a.KVSet(ctx, "s", "k", []byte("v")); !errors.Is(err, ErrClosed) {
		t.Fatalf("write on a closed node: %v", err)
	}
	if _, ok := a.KVGet("s", "k"); ok {
		t.Fatal("write refused on a closed node was applied")
	}
}

func TestNodeThatWasDownCatchesUpFromLog(t *testing.T) {
	srv := testutil.StartNATS(t)
	a := openNode(t, "ams", srv.ClientURL(), "")
	ctx := context.Background()
	for i := range 50 {
		if err := a.KVSet(ctx, "example.com", fmt.Sprintf("k%d", i), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Deploy(ctx, Deployment{Site: "example.com", Plugin: "auth", Version: "3", SHA256: "ab", CanaryPercent: 10}); err != nil {
		t.Fatal(err)
	}
	if err := a.KVDelete(ctx, "example.com", "k7"); err != nil {
		t.Fatal(err)
	}
	// fra starts only now; Open returns once it has replayed the log.
	b := openNode(t, "fra", srv.ClientURL(), "")
	if v, ok := b.KVGet("example.com", "k49"); !ok || string(v) != "49" {
		t.Fatalf("k49 = %q, %v after replay", v, ok)
	}
	if _, ok := b.KVGet("example.com", "k7"); ok {
		t.Fatal("deleted key k7 present after replay")
	}
	if d, ok := b.Deployment("example.com", "auth"); !ok || d.Version != "3" || d.CanaryPercent != 10 {
		t.Fatalf("deployment after replay: %+v %v", d, ok)
	}
	if b.LastSeq() == 0 {
		t.Fatal("no log sequence recorded")
	}
	// Restart fra from its snapshot: it resumes after its last sequence.
	seq := b.LastSeq()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.KVSet(ctx, "example.com", "late", []byte("x")); err != nil {
		t.Fatal(err)
	}
	b2 := openNode(t, "fra", srv.ClientURL(), b.dir)
	if v, ok := b2.KVGet("example.com", "late"); !ok || string(v) != "x" {
		t.Fatalf("write made while fra was down: %q %v", v, ok)
	}
	if b2.LastSeq() <= seq {
		t.Fatalf("last seq %d did not advance past %d", b2.LastSeq(), seq)
	}
}

func TestMalformedOversizedAndWrongVersionDropped(t *testing.T) {
	srv := testutil.StartNATS(t)
	a := openNode(t, "ams", srv.ClientURL(), "")
	raw := connect(t, srv.ClientURL())
	good := func(key string) []byte {
		m := crdt.NewMap()
		d := m.Set("evil", key, []byte("v"), 1, 0)
		b, err := encode(envelope{Kind: kindDelta, From: "evil", Regs: d.Regs})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// withVersion encodes a one-version delta from "x" after edit changed it.
	withVersion := func(key string, edit func(*crdt.Version)) []byte {
		v := crdt.Version{Value: []byte("v"), Node: "x", Wall: 1, Clock: crdt.VClock{"x": 1}}
		edit(&v)
		b, err := encode(envelope{Kind: kindDelta, From: "x", Regs: map[string]crdt.Register{key: {Versions: []crdt.Version{v}}}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	fromX := withVersion("kv/s/k", func(*crdt.Version) {})
	big := make([]byte, MaxMessageSize+10)
	big[0], big[1] = WireVersion, 1
	digest, err := encode(envelope{Kind: kindDigest, From: "x", Digest: make([]uint64, DigestBuckets-1)})
	if err != nil {
		t.Fatal(err)
	}
	// A header, then a register count the rest of the message cannot hold.
	hugeCount := append([]byte{WireVersion, 1, 1, 'x', 0, 0, 0, 0}, 0xff, 0xff, 0xff, 0xff, 0x0f)
	cases := []struct {
		name, reason string
		data         []byte
	}{
		{"empty", "malformed", []byte{}},
		{"truncated", "malformed", fromX[:len(fromX)-3]},
		{"bytes after the end", "malformed", append(append([]byte(nil), fromX...), 0)},
		{"count beyond the message", "malformed", hugeCount},
		{"oversized", "oversized", big},
		{"version 1 (JSON)", "version", []byte(`{"v":1,"kind":"delta","from":"x","regs":{"kv/s/k":{"versions":[{"vc":{"x":1},"node":"x","wall":1}]}}}`)},
		{"future version", "version", append([]byte{WireVersion + 1}, fromX[1:]...)},
		{"unknown kind", "invalid", append([]byte{WireVersion, 9}, fromX[2:]...)},
		{"bad key namespace", "invalid", withVersion("secret/k", func(*crdt.Version) {})},
		{"version without clock", "invalid", withVersion("kv/s/k", func(v *crdt.Version) { v.Clock = nil })},
		{"writer missing from its clock", "invalid", withVersion("kv/s/k", func(v *crdt.Version) { v.Clock = crdt.VClock{"y": 3} })},
		{"tombstone with a value", "invalid", withVersion("kv/s/k", func(v *crdt.Version) { v.Deleted = true })},
		{"bad node id in a clock", "invalid", withVersion("kv/s/k", func(v *crdt.Version) { v.Clock["a.b"] = 1 })},
		{"value over the limit", "oversized", withVersion("kv/s/k", func(v *crdt.Version) { v.Value = make([]byte, MaxValueSize+1) })},
		{"digest of wrong size", "invalid", digest},
		{"sender on another node's subject", "invalid", good("kv/s/spoofed")},
	}
	for _, c := range cases {
		before := promtest.ToFloat64(a.m.dropped.WithLabelValues(c.reason))
		if err := raw.Publish(deltaSubject("x"), c.data); err != nil {
			t.Fatal(err)
		}
		eventually(t, c.name+" counted", func() bool {
			return promtest.ToFloat64(a.m.dropped.WithLabelValues(c.reason)) > before
		})
	}
	if keys := a.Keys(""); len(keys) != 0 {
		t.Fatalf("bad messages applied keys %v", keys)
	}
	// The node still works, and a good message from the same raw client applies.
	if err := raw.Publish(deltaSubject("evil"), good("kv/s/fine")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "good message applied", func() bool { _, ok := a.KVGet("s", "fine"); return ok })
	if n, _ := promtest.GatherAndCount(a.reg, "meridian_sync_messages_dropped_total"); n == 0 {
		t.Fatal("dropped counter not exported")
	}
}

func TestAntiEntropyRepairsWhatCoreNATSDropped(t *testing.T) {
	srv := testutil.StartNATS(t)
	a := openNode(t, "ams", srv.ClientURL(), "")
	b := openNode(t, "fra", srv.ClientURL(), "")
	// Writes that never reach the wire (as if core NATS dropped them while a
	// link was down and the log was unreachable): made straight on ams's state.
	lose := func(n *testNode, key string) {
		n.mu.Lock()
		n.regs.Set(n.opts.NodeID, key, []byte("v"), time.Now().UnixNano(), 0)
		n.mu.Unlock()
		n.wrote(key) // local bookkeeping only, no publish
	}
	for i := range 20 {
		lose(a, fmt.Sprintf("kv/s/lost%d", i))
	}
	lose(b, "kv/s/only-fra")
	a.mu.Lock()
	a.ctrs.Add("ams", "ctr/s/hits", 5)
	a.rehash("ctr/s/hits")
	a.mu.Unlock()
	if sameDigest(a.Node, b.Node) {
		t.Fatal("digests equal before repair")
	}
	a.SyncNow()
	eventually(t, "anti-entropy convergence", func() bool { return sameDigest(a.Node, b.Node) })
	if _, ok := b.KVGet("s", "lost19"); !ok {
		t.Fatal("fra missing lost19")
	}
	if _, ok := a.KVGet("s", "only-fra"); !ok {
		t.Fatal("ams missing only-fra")
	}
	if got := b.Counter("s", "hits"); got != 5 {
		t.Fatalf("fra counter = %d, want 5", got)
	}
}

func TestConcurrentWritesPickSameWinnerOnEveryNode(t *testing.T) {
	srv := testutil.StartNATS(t)
	a := openNode(t, "ams", srv.ClientURL(), "")
	b := openNode(t, "fra", srv.ClientURL(), "")
	c := openNode(t, "sin", srv.ClientURL(), "")
	wall := time.Now().UnixNano()
	// Concurrent writes: each node writes without having seen the others.
	var deltas []*crdt.Map
	for _, n := range []*testNode{a, b, c} {
		n.mu.Lock()
		deltas = append(deltas, n.regs.Set(n.opts.NodeID, "kv/s/color", []byte(n.opts.NodeID), wall, 0))
		n.mu.Unlock()
	}
	for i, n := range []*testNode{a, b, c} {
		if err := n.publish(context.Background(), envelope{Regs: deltas[i].Regs}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []*testNode{a, b, c} {
		eventually(t, "all three versions on "+n.opts.NodeID, func() bool {
			info, _ := n.Inspect("kv/s/color")
			return len(info.Conflicts) == 2
		})
		info, _ := n.Inspect("kv/s/color")
		// Equal wall clocks: the greatest node id wins everywhere.
		if info.Winner.Value != "sin" {
			t.Fatalf("%s picked %q", n.opts.NodeID, info.Winner.Value)
		}
		if len(info.History) == 0 {
			t.Fatalf("%s has no history for the key", n.opts.NodeID)
		}
	}
	// The winner's clock names only its writer: nobody had seen the others.
	if v, _ := a.Inspect("kv/s/color"); !strings.HasPrefix(v.Winner.Clock, "sin:") || strings.Contains(v.Winner.Clock, ",") {
		t.Fatalf("winner clock %q", v.Winner.Clock)
	}
}

// restartableNATS runs an embedded server that can be stopped and restarted
// on the same port and store.
type restartableNATS struct {
	t     *testing.T
	addr  string
	store string
	srv   *natsembed.Server
}

func startRestartable(t *testing.T) *restartableNATS {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	r := &restartableNATS{t: t, addr: addr, store: filepath.Join(t.TempDir(), "js")}
	r.start()
	t.Cleanup(func() {
		if r.srv != nil {
			r.srv.Shutdown()
		}
	})
	return r
}

func (r *restartableNATS) start() {
	s, err := natsembed.Start(natsembed.Options{Addr: r.addr, StoreDir: r.store, ServerName: "restartable"})
	if err != nil {
		r.t.Fatal(err)
	}
	r.srv = s
}

func (r *restartableNATS) stop() { r.srv.Shutdown(); r.srv = nil }

func TestDegradedModeQueuesAndFlushesAfterNATSRestart(t *testing.T) {
	ns := startRestartable(t)
	url := "nats://" + ns.addr
	a := openNode(t, "ams", url, "")
	b := openNode(t, "fra", url, "")
	ctx := context.Background()
	if err := a.KVSet(ctx, "s", "before", []byte("1")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "first write on fra", func() bool { _, ok := b.KVGet("s", "before"); return ok })

	ns.stop()
	eventually(t, "ams disconnected", func() bool { return !a.opts.Conn.IsConnected() })
	for i := range 30 {
		if _, err := a.Purge(ctx, PurgeRecord{Site: "s", Kind: PurgeURL, Value: fmt.Sprintf("/p%d", i)}); err != nil {
			t.Fatalf("purge while NATS is down: %v", err)
		}
	}
	if _, err := a.CounterAdd(ctx, "s", "hits", 7); err != nil {
		t.Fatal(err)
	}
	// The PoP keeps answering from its own state.
	if !a.CheckPurged("s", "/p29", nil, time.Now().Add(-time.Hour)).Purged {
		t.Fatal("local purge not visible while degraded")
	}
	eventually(t, "deltas queued", func() bool { return a.Status().Queued >= 30 })
	if !a.Status().Degraded {
		t.Fatal("status does not say degraded")
	}
	// The queue survives on disk.
	q, err := openQueue(filepath.Join(a.dir, "queue"), 1000, 1<<30)
	if err != nil || q.len() < 30 {
		t.Fatalf("on-disk queue holds %d deltas (err %v)", q.len(), err)
	}

	ns.start()
	eventually(t, "queue flushed", func() bool { return a.Status().Queued == 0 })
	eventually(t, "fra has every purge", func() bool { return len(b.Purges("s")) == 30 })
	eventually(t, "fra has the counter", func() bool { return b.Counter("s", "hits") == 7 })
	// And the log holds them: a new node replays them.
	c := openNode(t, "sin", url, "")
	if n := len(c.Purges("s")); n != 30 {
		t.Fatalf("new node replayed %d purges from the log, want 30", n)
	}
}

func TestQueueIsBoundedAndWriteStaysLocal(t *testing.T) {
	ns := startRestartable(t)
	url := "nats://" + ns.addr
	reg := prometheus.NewRegistry()
	a, err := Open(context.Background(), Options{NodeID: "ams", Conn: connect(t, url), DataDir: t.TempDir(), QueueMaxItems: 3, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ns.stop()
	eventually(t, "disconnected", func() bool { return !a.opts.Conn.IsConnected() })
	var full error
	for i := range 5 {
		if err := a.KVSet(context.Background(), "s", fmt.Sprint(i), []byte("v")); err != nil {
			full = err
		}
	}
	if full == nil {
		t.Fatal("queue of 3 accepted 5 deltas")
	}
	if _, ok := a.KVGet("s", "4"); !ok {
		t.Fatal("write refused by the full queue is not applied locally")
	}
}
