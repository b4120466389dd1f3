package beacon_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/internal/beacon"
	"github.com/meridian-edge/meridian/internal/testutil"
)

func TestPublishSubscribeOverNATS(t *testing.T) {
	srv := testutil.StartNATS(t)
	pub := testutil.Connect(t, srv)
	sub := testutil.Connect(t, srv)

	got := make(chan beacon.Beacon, 10)
	var badMu sync.Mutex
	var bad []error
	s, err := beacon.Subscribe(sub, func(b beacon.Beacon) { got <- b }, func(err error) {
		badMu.Lock()
		bad = append(bad, err)
		badMu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Unsubscribe()
	if err := sub.Flush(); err != nil {
		t.Fatal(err)
	}

	// Garbage, a wrong version and a spoofed subject must all be rejected.
	_ = pub.Publish(beacon.Subject("x"), []byte("{not json"))
	_ = pub.Publish(beacon.Subject("x"), []byte(`{"v":99,"pop":"x"}`))
	_ = pub.Publish(beacon.Subject("other"), []byte(`{"v":1,"pop":"x"}`))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go beacon.Publish(ctx, pub, 20*time.Millisecond, slog.New(slog.DiscardHandler), func() beacon.Beacon {
		return beacon.Beacon{PoP: "us-east-1", Region: "us-east-1", Healthy: true, Load: 5, Capacity: 100}
	})

	var last uint64
	for i := 0; i < 3; i++ {
		select {
		case b := <-got:
			if b.PoP != "us-east-1" || !b.Healthy || b.Capacity != 100 || b.V != beacon.Version {
				t.Fatalf("unexpected beacon %+v", b)
			}
			if b.Seq <= last {
				t.Fatalf("seq went from %d to %d", last, b.Seq)
			}
			last = b.Seq
		case <-time.After(5 * time.Second):
			t.Fatal("no beacon received")
		}
	}
	badMu.Lock()
	defer badMu.Unlock()
	if len(bad) != 3 {
		t.Fatalf("rejected %d messages, want 3: %v", len(bad), bad)
	}
	for _, err := range bad {
		if !errors.Is(err, beacon.ErrBadBeacon) {
			t.Errorf("error %v does not wrap ErrBadBeacon", err)
		}
	}
}

func TestDecodeRejectsOversize(t *testing.T) {
	big := make([]byte, beacon.MaxSize+1)
	if _, err := beacon.Decode(big); !errors.Is(err, beacon.ErrBadBeacon) {
		t.Fatalf("oversize beacon: err = %v", err)
	}
}
