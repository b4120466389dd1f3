package statesync

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/internal/crdt"
	"github.com/meridian-edge/meridian/internal/testutil"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
)

// openQuiet opens a node whose anti-entropy never runs during the test, so
// that whatever it gets beyond the fast path came from the log.
func openQuiet(t *testing.T, id, url string) *testNode {
	t.Helper()
	reg := prometheus.NewRegistry()
	dir := t.TempDir()
	n, err := Open(context.Background(), Options{NodeID: id, Conn: connect(t, url), DataDir: dir,
		AntiEntropyInterval: time.Hour, ReplayTimeout: 5 * time.Second, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return &testNode{Node: n, reg: reg, dir: dir}
}

// deafen stops n hearing deltas on the fast path, as if core NATS dropped
// everything sent to it from now on.
func deafen(t *testing.T, n *Node) {
	t.Helper()
	for _, s := range n.subs {
		if s.Subject == deltaSubject("*") {
			if err := s.Unsubscribe(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := n.opts.Conn.Flush(); err != nil {
		t.Fatal(err)
	}
}

// TestGapInDeltaNumbersCatchesUpFromLog: fra misses one of ams's deltas on
// the fast path; the next delta shows the gap in ams's numbering and fra
// fetches the missing one from the log (no anti-entropy runs).
func TestGapInDeltaNumbersCatchesUpFromLog(t *testing.T) {
	srv := testutil.StartNATS(t)
	a := openQuiet(t, "ams", srv.ClientURL())
	b := openQuiet(t, "fra", srv.ClientURL())
	ctx := context.Background()
	if err := a.KVSet(ctx, "s", "k1", []byte("1")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "k1 on fra", func() bool { _, ok := b.KVGet("s", "k1"); return ok })

	deafen(t, b.Node) // as if core NATS dropped what follows
	if err := a.KVSet(ctx, "s", "k2", []byte("2")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.opts.Conn.Subscribe(deltaSubject("*"), func(m *nats.Msg) { b.receive(m.Subject, m.Data, "core", msgID(m.Header)) }); err != nil {
		t.Fatal(err)
	}
	if err := b.opts.Conn.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.KVGet("s", "k2"); ok {
		t.Fatal("fra got k2 although it was not listening")
	}
	if err := a.KVSet(ctx, "s", "k3", []byte("3")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "k2 on fra from the log", func() bool { _, ok := b.KVGet("s", "k2"); return ok })
	if got := promtest.ToFloat64(b.m.gaps); got != 1 {
		t.Fatalf("gaps counted: %v, want 1", got)
	}
	info, _ := b.Inspect("kv/s/k2")
	if len(info.History) == 0 || info.History[len(info.History)-1].Via != "log" {
		t.Fatalf("k2 on fra did not come from the log: %+v", info.History)
	}
}

// TestReconnectCatchesUpFromLog: fra's link to NATS is cut while ams writes;
// when the link heals fra replays what it missed from the log (no
// anti-entropy runs, and nothing else is written after the heal).
func TestReconnectCatchesUpFromLog(t *testing.T) {
	srv := testutil.StartNATS(t)
	link := testutil.StartLinkProxy(t, strings.TrimPrefix(srv.ClientURL(), "nats://"))
	a := openQuiet(t, "ams", srv.ClientURL())
	b := openQuiet(t, "fra", "nats://"+link.Addr())
	ctx := context.Background()
	link.Cut()
	eventually(t, "fra cut off", func() bool { return !b.opts.Conn.IsConnected() })
	for _, k := range []string{"x", "y", "z"} {
		if err := a.KVSet(ctx, "s", k, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := b.KVGet("s", "z"); ok {
		t.Fatal("the cut does not hold")
	}
	link.Heal()
	eventually(t, "fra caught up after reconnecting", func() bool {
		_, ok1 := b.KVGet("s", "x")
		_, ok2 := b.KVGet("s", "z")
		return ok1 && ok2
	})
	if b.LastSeq() < 3 {
		t.Fatalf("fra's log sequence %d after replaying 3 deltas", b.LastSeq())
	}
}

// TestPeriodicAuditMovesSequenceAndFetchesTrailingMiss: the periodic
// catch-up reads only headers while every delta in the log was applied
// already (no payload is replayed, the sequence moves forward), and replays
// a trailing delta the fast path lost, which no later delta would reveal as
// a gap. The writer is a bare client, so no anti-entropy can answer.
func TestPeriodicAuditMovesSequenceAndFetchesTrailingMiss(t *testing.T) {
	srv := testutil.StartNATS(t)
	reg := prometheus.NewRegistry()
	b, err := Open(context.Background(), Options{NodeID: "fra", Conn: connect(t, srv.ClientURL()), DataDir: t.TempDir(),
		AntiEntropyInterval: 20 * time.Millisecond, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	js, err := jetstream.New(connect(t, srv.ClientURL()))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	publish := func(n int) {
		t.Helper()
		key := fmt.Sprintf("kv/s/k%d", n)
		d := crdt.NewMap().Set("x", key, []byte("v"), time.Now().UnixNano(), 0)
		id := fmt.Sprintf("x.p.%d", n)
		data, err := encode(envelope{Kind: kindDelta, From: "x", ID: id, Regs: d.Regs})
		if err != nil {
			t.Fatal(err)
		}
		m := &nats.Msg{Subject: deltaSubject("x"), Data: data, Header: nats.Header{}}
		m.Header.Set(jetstream.MsgIDHeader, id)
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= 5; i++ {
		publish(i)
	}
	eventually(t, "five deltas on fra", func() bool { return len(b.Keys("kv/s/")) == 5 })
	eventually(t, "the audit moved the sequence", func() bool { return b.LastSeq() == 5 })
	replayed := func() float64 {
		return promtest.ToFloat64(b.m.received.WithLabelValues(kindDelta, "log")) + promtest.ToFloat64(b.m.received.WithLabelValues(kindDelta, "log-seen"))
	}
	if got := replayed(); got != 0 {
		t.Fatalf("%v deltas replayed from the log; the audit should read headers only", got)
	}

	deafen(t, b)
	publish(6) // lost on the fast path, and the last one
	eventually(t, "the trailing delta fetched by an audit", func() bool { _, ok := b.KVGet("s", "k6"); return ok })
	if got := promtest.ToFloat64(b.m.auditMisses); got < 1 {
		t.Fatalf("audit misses %v", got)
	}
	if got := replayed(); got != 1 {
		t.Fatalf("%v deltas replayed from the log, want only the missing one", got)
	}
}
