package statesync

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/internal/testutil"
	"github.com/nats-io/nats.go/jetstream"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
)

func TestDeploymentRolloutAndRollbackReachWatchers(t *testing.T) {
	srv := testutil.StartNATS(t)
	a := openNode(t, "ams", srv.ClientURL(), "")
	b := openNode(t, "fra", srv.ClientURL(), "")
	var mu sync.Mutex
	var seen []string
	stop := b.Watch(func(e Event) {
		if e.Deployment != nil {
			mu.Lock()
			seen = append(seen, fmt.Sprintf("%s@%d%%", e.Deployment.Version, e.Deployment.CanaryPercent))
			mu.Unlock()
		}
	})
	defer stop()
	ctx := context.Background()
	steps := []Deployment{
		{Site: "shop.example", Plugin: "auth", Version: "1", SHA256: "aa", CanaryPercent: 100},
		{Site: "shop.example", Plugin: "auth", Version: "2", SHA256: "bb", CanaryPercent: 10},
	}
	for _, d := range steps {
		if err := a.Deploy(ctx, d); err != nil {
			t.Fatal(err)
		}
		eventually(t, "fra sees version "+d.Version, func() bool {
			got, ok := b.Deployment("shop.example", "auth")
			return ok && got.Version == d.Version
		})
	}
	// fra's operator rolls back; ams follows.
	if err := b.Deploy(ctx, Deployment{Site: "shop.example", Plugin: "auth", Version: "1", SHA256: "aa", CanaryPercent: 100, RolledBack: true}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "ams sees the rollback", func() bool {
		got, _ := a.Deployment("shop.example", "auth")
		return got.Version == "1" && got.RolledBack
	})
	mu.Lock()
	defer mu.Unlock()
	want := []string{"1@100%", "2@10%", "1@100%"}
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Fatalf("fra's watcher saw %v, want %v", seen, want)
	}
	if ds := a.Deployments("shop.example"); len(ds) != 1 {
		t.Fatalf("deployments: %+v", ds)
	}
}

func TestPluginKVAndCountersAcrossNodes(t *testing.T) {
	srv := testutil.StartNATS(t)
	a := openNode(t, "ams", srv.ClientURL(), "")
	b := openNode(t, "fra", srv.ClientURL(), "")
	c := openNode(t, "sin", srv.ClientURL(), "")
	ctx := context.Background()
	if err := a.KVSet(ctx, "shop.example", "banner", []byte("sale")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "fra reads the value", func() bool { v, ok := b.KVGet("shop.example", "banner"); return ok && string(v) == "sale" })
	if err := b.KVDelete(ctx, "shop.example", "banner"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "ams sees the delete", func() bool { _, ok := a.KVGet("shop.example", "banner"); return !ok })
	// Namespaces are per site.
	if _, ok := a.KVGet("other.example", "banner"); ok {
		t.Fatal("key leaked into another site's namespace")
	}
	for _, step := range []struct {
		n *testNode
		d int64
	}{{a, 3}, {b, 4}, {c, -2}, {a, 1}} {
		if _, err := step.n.CounterAdd(ctx, "shop.example", "rl:1.2.3.4", step.d); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []*testNode{a, b, c} {
		eventually(t, "counter total on "+n.opts.NodeID, func() bool { return n.Counter("shop.example", "rl:1.2.3.4") == 6 })
	}
	info, ok := c.Inspect("ctr/shop.example/rl:1.2.3.4")
	if !ok || *info.Counter != 6 || info.CounterNodes["ams"].P != 4 || info.CounterNodes["sin"].N != 2 {
		t.Fatalf("counter inspection: %+v", info)
	}
}

func TestInspectAnyNodeOverNATS(t *testing.T) {
	srv := testutil.StartNATS(t)
	a := openNode(t, "ams", srv.ClientURL(), "")
	b := openNode(t, "fra", srv.ClientURL(), "")
	ctx := context.Background()
	if err := a.AnnounceConfig(ctx, ConfigVersion{Name: "fleet", Version: "42", SHA256: "cafe"}); err != nil {
		t.Fatal(err)
	}
	if err := a.AnnounceConfig(ctx, ConfigVersion{Name: "fleet", Version: "43", SHA256: "beef"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "fra has config 43", func() bool {
		cs := b.ConfigVersions()
		return len(cs) == 1 && cs[0].Version == "43"
	})
	cli := connect(t, srv.ClientURL())
	info, found, err := InspectRemote(ctx, cli, "fra", "config/fleet")
	if err != nil || !found {
		t.Fatalf("inspect: %v %v", found, err)
	}
	if info.Winner.Writer != "ams" || info.Winner.Clock == "" || len(info.History) != 2 || info.History[0].Via == "local" {
		t.Fatalf("inspect on fra: %+v", info)
	}
	keys, st, err := KeysRemote(ctx, cli, "fra", "config/")
	if err != nil || len(keys) != 1 || keys[0] != "config/fleet" || st.NodeID != "fra" || !st.Connected {
		t.Fatalf("keys: %v %+v %v", keys, st, err)
	}
	if _, found, err := InspectRemote(ctx, cli, "ams", "kv/none/x"); err != nil || found {
		t.Fatalf("missing key: found=%v err=%v", found, err)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, _, err := InspectRemote(short, cli, "nobody", "config/fleet"); err == nil {
		t.Fatal("inspecting a node that does not exist succeeded")
	}
}

// TestNATSRestartMidStream: a PoP writes continuously while the NATS server
// restarts; every write reaches the other PoP and the log.
func TestNATSRestartMidStream(t *testing.T) {
	ns := startRestartable(t)
	url := "nats://" + ns.addr
	a := openNode(t, "ams", url, "")
	b := openNode(t, "fra", url, "")
	const total = 200
	errs := make(chan error, 1)
	go func() {
		for i := range total {
			if err := a.KVSet(context.Background(), "s", fmt.Sprintf("k%03d", i), []byte("v")); err != nil {
				errs <- err
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
		errs <- nil
	}()
	eventually(t, "writes under way", func() bool { _, ok := b.KVGet("s", "k020"); return ok })
	ns.stop()
	time.Sleep(100 * time.Millisecond) // a real outage, with writes in it
	ns.start()
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	eventually(t, "all writes on fra", func() bool { return len(b.Keys("kv/s/")) == total })
	eventually(t, "queue drained", func() bool { return a.Status().Queued == 0 })
	if n := logCount(t, url, "ams"); n < total {
		t.Fatalf("the log holds %d of ams's %d writes", n, total)
	} else {
		t.Logf("log holds %d deltas of ams for %d writes; %v were queued during the outage", n, total, promtest.ToFloat64(a.m.queued))
	}
	if promtest.ToFloat64(a.m.queued) == 0 {
		t.Fatal("no write fell into the outage; the test did not test a restart mid-stream")
	}
}

func TestQueuedDeltasSurviveNodeRestart(t *testing.T) {
	ns := startRestartable(t)
	url := "nats://" + ns.addr
	dir := t.TempDir()
	a := openNode(t, "ams", url, dir)
	ns.stop()
	eventually(t, "disconnected", func() bool { return !a.opts.Conn.IsConnected() })
	if _, err := a.Purge(context.Background(), PurgeRecord{Site: "s", Kind: PurgeSite}); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	ns.start()
	b := openNode(t, "fra", url, "")
	a2 := openNode(t, "ams", url, dir)
	eventually(t, "queued purge reaches fra", func() bool { return len(b.Purges("s")) == 1 })
	eventually(t, "queue flushed after restart", func() bool { return a2.Status().Queued == 0 })
	eventually(t, "queued purge in the log", func() bool { return logCount(t, url, "ams") == 1 })
}

func TestSnapshotOlderThanTombstoneTTLIsDiscarded(t *testing.T) {
	srv := testutil.StartNATS(t)
	dir := t.TempDir()
	a := openNode(t, "ams", srv.ClientURL(), dir)
	if err := a.KVSet(context.Background(), "s", "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	// Same data dir, a fresh NATS without the log, and a clock 8 days later.
	srv2 := testutil.StartNATS(t)
	later := func() time.Time { return time.Now().Add(8 * 24 * time.Hour) }
	n, err := Open(context.Background(), Options{NodeID: "ams", Conn: connect(t, srv2.ClientURL()), DataDir: dir, Now: later})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if _, ok := n.KVGet("s", "k"); ok {
		t.Fatal("state from a snapshot older than the tombstone TTL was loaded")
	}
	// A damaged snapshot costs a replay, not the node.
	if err := os.WriteFile(filepath.Join(dir, "state.json"), []byte("{garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	n2, err := Open(context.Background(), Options{NodeID: "ams2", Conn: connect(t, srv.ClientURL()), DataDir: dir})
	if err != nil {
		t.Fatalf("open with a damaged snapshot: %v", err)
	}
	defer n2.Close()
	if _, ok := n2.KVGet("s", "k"); !ok {
		t.Fatal("state not rebuilt from the log after a damaged snapshot")
	}
}

func TestCompactionDropsExpiredPurgesEverywhere(t *testing.T) {
	srv := testutil.StartNATS(t)
	var mu sync.Mutex
	offset := time.Duration(0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return time.Now().Add(offset) }
	open := func(id string) *Node {
		n, err := Open(context.Background(), Options{NodeID: id, Conn: connect(t, srv.ClientURL()), DataDir: t.TempDir(),
			Now: clock, AntiEntropyInterval: 100 * time.Millisecond, PurgeRetention: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		return n
	}
	a, b := open("ams"), open("fra")
	ctx := context.Background()
	p, err := a.Purge(ctx, PurgeRecord{Site: "s", Kind: PurgeURL, Value: "/x"})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.KVDelete(ctx, "s", "gone"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "purge on fra", func() bool { return len(b.Purges("s")) == 1 })
	mu.Lock()
	offset = 8 * 24 * time.Hour
	mu.Unlock()
	eventually(t, "purge compacted on both", func() bool { return len(a.Purges("s")) == 0 && len(b.Purges("s")) == 0 })
	eventually(t, "tombstone compacted", func() bool { _, ok := a.Inspect("kv/s/gone"); return !ok })
	// Replaying the old purge delta does not bring it back.
	c := open("sin")
	if n := len(c.Purges("s")); n != 0 {
		t.Fatalf("new node replayed %d expired purges", n)
	}
	if !c.CheckPurged("s", "/x", nil, p.At.Add(-time.Minute)).Purged {
		t.Fatal("an object older than the purge retention must count as purged")
	}
}

// logCount counts the deltas of node in the durable log.
func logCount(t *testing.T, url, node string) uint64 {
	t.Helper()
	js, err := jetstream.New(connect(t, url))
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(context.Background(), "MERIDIAN_SYNC")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background(), jetstream.WithSubjectFilter(deltaSubject(node)))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[deltaSubject(node)]
}

// TestRandomLossAndDuplicationConvergeOverNATS: three PoPs write at random;
// each delta is delivered normally, lost (never published) or published
// twice; anti-entropy then brings every PoP to the same state, with every
// write accounted for.
func TestRandomLossAndDuplicationConvergeOverNATS(t *testing.T) {
	srv := testutil.StartNATS(t)
	nodes := []*testNode{
		openNode(t, "ams", srv.ClientURL(), ""),
		openNode(t, "fra", srv.ClientURL(), ""),
		openNode(t, "sin", srv.ClientURL(), ""),
	}
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	ctx := context.Background()
	counter := int64(0)
	for round := range 5 {
		for range 40 {
			n := nodes[rng.IntN(len(nodes))]
			key := fmt.Sprintf("kv/s/k%d", rng.IntN(8))
			n.mu.Lock()
			var e envelope
			switch rng.IntN(3) {
			case 0:
				d := n.regs.Delete(n.opts.NodeID, key, time.Now().UnixNano())
				e = envelope{Regs: d.Regs}
			case 1:
				d := n.regs.Set(n.opts.NodeID, key, []byte(fmt.Sprint(round)), time.Now().UnixNano(), 0)
				e = envelope{Regs: d.Regs}
			default:
				v := int64(rng.IntN(7) - 3)
				_, d := n.ctrs.Add(n.opts.NodeID, "ctr/s/c", v)
				counter += v
				e = envelope{Counters: d}
				n.rehash("ctr/s/c")
			}
			n.mu.Unlock()
			if len(e.Regs) > 0 {
				n.wrote(key)
			}
			switch rng.IntN(4) {
			case 0: // lost
			case 1: // duplicated
				_ = n.publish(ctx, e)
				_ = n.publish(ctx, e)
			default:
				_ = n.publish(ctx, e)
			}
		}
		eventually(t, fmt.Sprintf("convergence in round %d", round), func() bool { return allConverged(nodes...) })
		for _, n := range nodes {
			if got := n.Counter("s", "c"); got != counter {
				t.Fatalf("%s counter %d, want %d", n.opts.NodeID, got, counter)
			}
			// The digest is kept incrementally; it must equal one computed
			// from scratch, or anti-entropy would miss differences.
			n.mu.RLock()
			fresh := make([]uint64, DigestBuckets)
			for k, r := range n.regs.Regs {
				fresh[bucketOf(k)] += hashRegister(k, r)
			}
			for k, c := range n.ctrs {
				fresh[bucketOf(k)] += hashCounter(k, c)
			}
			same := fmt.Sprint(fresh) == fmt.Sprint(n.sums)
			n.mu.RUnlock()
			if !same {
				t.Fatalf("%s: incremental digest differs from a fresh one", n.opts.NodeID)
			}
		}
	}
}

// TestLongIsolationDoesNotResurrectCompactedDeletes: fra is cut off while ams
// deletes a plugin KV key; eight days later (past the 7-day tombstone TTL) ams
// has compacted the tombstone and the log has trimmed it. Without the
// isolation rule fra would hand the old value back by anti-entropy; with it,
// fra drops its plugin KV, replays the log, and the key stays deleted
// everywhere while the others come back.
func TestLongIsolationDoesNotResurrectCompactedDeletes(t *testing.T) {
	srv := testutil.StartNATS(t)
	var mu sync.Mutex
	offset := time.Duration(0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return time.Now().Add(offset) }
	open := func(id, url string) *Node {
		n, err := Open(context.Background(), Options{NodeID: id, Conn: connect(t, url), DataDir: t.TempDir(),
			Now: clock, AntiEntropyInterval: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		return n
	}
	link := testutil.StartLinkProxy(t, strings.TrimPrefix(srv.ClientURL(), "nats://"))
	a := open("ams", srv.ClientURL())
	b := open("fra", "nats://"+link.Addr())
	ctx := context.Background()
	for _, k := range []string{"gone", "kept"} {
		if err := a.KVSet(ctx, "s", k, []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Deploy(ctx, Deployment{Site: "s", Plugin: "p", Version: "1"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "fra has both keys", func() bool { _, ok := b.KVGet("s", "kept"); _, ok2 := b.KVGet("s", "gone"); return ok && ok2 })
	eventually(t, "fra has the deployment", func() bool { _, ok := b.Deployment("s", "p"); return ok })

	link.Cut()
	eventually(t, "fra cut off", func() bool { return !b.opts.Conn.IsConnected() })
	if err := a.KVDelete(ctx, "s", "gone"); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	offset = 8 * 24 * time.Hour
	mu.Unlock()
	eventually(t, "ams compacted the tombstone", func() bool { _, ok := a.Inspect("kv/s/gone"); return !ok })
	// Eight days on, the log (MaxAge 72 h) no longer holds the deletion either.
	js, err := jetstream.New(connect(t, srv.ClientURL()))
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, "MERIDIAN_SYNC")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "fra dropped its plugin KV", func() bool { _, ok := b.KVGet("s", "gone"); return !ok })
	if _, ok := b.Deployment("s", "p"); !ok {
		t.Fatal("fra dropped deployments too; only plugin KV can be resurrected")
	}

	link.Heal()
	eventually(t, "fra back and converged", func() bool { return sameDigest(a, b) })
	eventually(t, "kept value back on fra", func() bool { _, ok := b.KVGet("s", "kept"); return ok })
	for _, n := range []*Node{a, b} {
		if _, ok := n.KVGet("s", "gone"); ok {
			t.Fatalf("%s: deleted key resurrected", n.opts.NodeID)
		}
	}
}

func TestOpenWhileNATSIsDownServesSnapshotAndCatchesUp(t *testing.T) {
	ns := startRestartable(t)
	url := "nats://" + ns.addr
	dir := t.TempDir()
	a := openNode(t, "ams", url, dir)
	if err := a.KVSet(context.Background(), "s", "k", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	ns.stop()
	a2 := openNode(t, "ams", url, dir) // returns at once, degraded
	if v, ok := a2.KVGet("s", "k"); !ok || string(v) != "v1" {
		t.Fatalf("snapshot not served while NATS is down: %q %v", v, ok)
	}
	if !a2.Status().Degraded {
		t.Fatal("status not degraded")
	}
	if err := a2.KVSet(context.Background(), "s", "k", []byte("v2")); err != nil {
		t.Fatal(err)
	}
	ns.start()
	b := openNode(t, "fra", url, "")
	eventually(t, "write made before NATS came back reaches fra", func() bool {
		v, _ := b.KVGet("s", "k")
		return string(v) == "v2"
	})
	eventually(t, "ams no longer degraded", func() bool { return !a2.Status().Degraded })
}
