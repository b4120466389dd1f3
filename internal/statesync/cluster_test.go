package statesync

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/internal/testutil"
	"github.com/prometheus/client_golang/prometheus"
)

func openClusterNode(t *testing.T, id, url string) *testNode {
	t.Helper()
	reg := prometheus.NewRegistry()
	dir := t.TempDir()
	n, err := Open(context.Background(), Options{
		NodeID: id, Conn: connect(t, url), DataDir: dir, StreamReplicas: 3,
		AntiEntropyInterval: 200 * time.Millisecond, ReplayTimeout: 10 * time.Second,
		PublishTimeout: 500 * time.Millisecond, Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return &testNode{Node: n, reg: reg, dir: dir}
}

func allConverged(nodes ...*testNode) bool {
	for _, n := range nodes[1:] {
		if !sameDigest(nodes[0].Node, n.Node) {
			return false
		}
	}
	return true
}

// TestClusterPartitionAndHeal: four PoPs on a 3-server NATS cluster (two on
// server 2). Server 2 is cut off; both sides keep writing; the minority side
// still syncs among itself over core NATS and queues for the log; after the
// heal every PoP converges and the log holds every write.
func TestClusterPartitionAndHeal(t *testing.T) {
	cl := testutil.StartNATSCluster(t)
	a := openClusterNode(t, "ams", cl.ClientURL(0))
	b := openClusterNode(t, "fra", cl.ClientURL(1))
	c := openClusterNode(t, "sin", cl.ClientURL(2))
	d := openClusterNode(t, "syd", cl.ClientURL(2))
	ctx := context.Background()
	if err := a.KVSet(ctx, "s", "start", []byte("1")); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*testNode{b, c, d} {
		eventually(t, "first write on "+n.opts.NodeID, func() bool { _, ok := n.KVGet("s", "start"); return ok })
	}

	cl.Partition(2)
	for i := range 10 {
		if err := a.KVSet(ctx, "s", fmt.Sprintf("major%d", i), []byte("a")); err != nil {
			t.Fatal(err)
		}
		if err := c.KVSet(ctx, "s", fmt.Sprintf("minor%d", i), []byte("c")); err != nil {
			t.Fatal(err)
		}
	}
	// Both sides write the same key concurrently.
	if err := b.KVSet(ctx, "s", "contested", []byte("fra")); err != nil {
		t.Fatal(err)
	}
	if err := d.KVSet(ctx, "s", "contested", []byte("syd")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "majority sees its writes", func() bool { _, ok := b.KVGet("s", "major9"); return ok })
	eventually(t, "minority sees its writes", func() bool { _, ok := d.KVGet("s", "minor9"); return ok })
	if _, ok := c.KVGet("s", "major9"); ok {
		t.Fatal("write crossed the partition: the cut does not hold")
	}

	cl.Heal()
	eventually(t, "convergence after heal", func() bool { return allConverged(a, b, c, d) })
	for _, n := range []*testNode{a, b, c, d} {
		if _, ok := n.KVGet("s", "minor9"); !ok {
			t.Fatalf("%s lacks minor9", n.opts.NodeID)
		}
		info, _ := n.Inspect("kv/s/contested")
		if len(info.Conflicts) != 1 {
			t.Fatalf("%s: contested key %+v, want a winner and one conflict", n.opts.NodeID, info)
		}
	}
	wa, _ := a.Inspect("kv/s/contested")
	for _, n := range []*testNode{b, c, d} {
		if w, _ := n.Inspect("kv/s/contested"); w.Winner.Value != wa.Winner.Value {
			t.Fatalf("%s picked %q, ams picked %q", n.opts.NodeID, w.Winner.Value, wa.Winner.Value)
		}
	}
	// The minority's queued writes reached the durable log: a new PoP
	// replays them.
	eventually(t, "minority queue flushed", func() bool { return c.Status().Queued == 0 })
	e := openClusterNode(t, "gru", cl.ClientURL(0))
	eventually(t, "new node has the minority writes from the log", func() bool {
		_, ok := e.KVGet("s", "minor9")
		return ok
	})
}
