package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/internal/config"
	"github.com/meridian-edge/meridian/internal/testutil"
)

func TestLogBuffering(t *testing.T) {
	out := &testutil.SyncBuffer{}
	buf := newLogBuffer(out)
	log := newLogger(&config.Config{Log: config.Log{Level: "info", Format: "text"}}, buf)

	log.Info("request", "n", 1)
	if out.String() != "" {
		t.Fatalf("an info line was written at once: %q", out.String())
	}
	log.With("pop", "x").Warn("origin down")
	if s := out.String(); !strings.Contains(s, "msg=request") || !strings.Contains(s, "msg=\"origin down\" pop=x") && !strings.Contains(s, "pop=x msg=\"origin down\"") {
		t.Fatalf("a warning did not flush itself and what came before: %q", s)
	}

	log.Info("later")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { buf.run(ctx); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(out.String(), "msg=later") {
		if time.Now().After(deadline) {
			t.Fatal("the periodic flush never wrote the info line")
		}
		time.Sleep(10 * time.Millisecond)
	}
	log.Info("last")
	cancel()
	<-done
	if !strings.Contains(out.String(), "msg=last") {
		t.Fatal("the final flush lost a line")
	}
}
