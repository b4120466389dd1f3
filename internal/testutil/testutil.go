// Package testutil starts the real servers that tests talk to (NATS, and
// later S3), on loopback, and cleans them up when the test ends.
package testutil

import (
	"testing"

	"github.com/meridian-edge/meridian/internal/natsembed"
	"github.com/nats-io/nats.go"
)

// StartNATS starts an embedded NATS server with JetStream on a free loopback
// port and returns it; it is shut down at the end of the test.
func StartNATS(t testing.TB) *natsembed.Server {
	t.Helper()
	s, err := natsembed.Start(natsembed.Options{Addr: "127.0.0.1:0", StoreDir: t.TempDir(), ServerName: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

// Connect opens a client connection to s, closed at the end of the test.
func Connect(t testing.TB, s *natsembed.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}
