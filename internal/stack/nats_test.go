package stack_test

import (
	"strings"
	"testing"

	"github.com/meridian-edge/meridian/internal/config"
	"github.com/meridian-edge/meridian/internal/stack"
)

// A configuration built in code with both an embedded server and a
// cluster's URLs is refused rather than connected to the embedded server
// alone (config files are refused by validation already).
func TestConnectRefusesEmbeddedAndURLs(t *testing.T) {
	cfg := &config.Config{NATS: config.NATS{Embedded: &config.EmbeddedNATS{Listen: "127.0.0.1:4222"}, URLs: []string{"nats://10.0.0.1:4222"}}}
	nc, err := stack.Connect(cfg, "test")
	if err == nil {
		nc.Close()
		t.Fatal("connected with both nats.embedded and nats.urls")
	}
	if !strings.Contains(err.Error(), "set either nats.embedded or nats.urls, not both") {
		t.Fatalf("err = %v", err)
	}
}
