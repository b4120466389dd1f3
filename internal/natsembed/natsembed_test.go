package natsembed

import (
	"net"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
)

// TestStartTellsWhy: a server whose port another program holds fails to
// start with the server's own reason (not a guess), and one on a free port
// takes a client and JetStream.
func TestStartTellsWhy(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	_, err = Start(Options{Addr: held.Addr().String(), StoreDir: t.TempDir(), ServerName: "taken"})
	if err == nil || !strings.Contains(err.Error(), "address already in use") || !strings.Contains(err.Error(), held.Addr().String()) {
		t.Fatalf("Start on a held port: %v; want an error naming the address and that it is in use", err)
	}

	srv, err := Start(Options{Addr: "127.0.0.1:0", StoreDir: t.TempDir(), ServerName: "free"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := nc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AccountInfo(); err != nil {
		t.Fatalf("JetStream on the embedded server: %v", err)
	}
}
