package statesync

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/internal/testutil"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// startNATSWithPoPUser runs a NATS server with two users: "admin" may do
// anything, "pop" has what a PoP needs for state sync and no right to
// create, edit or delete streams.
func startNATSWithPoPUser(t *testing.T) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true,
		JetStream: true, StoreDir: t.TempDir(),
		Users: []*server.User{
			{Username: "admin", Password: "admin"},
			{Username: "pop", Password: "pop", Permissions: &server.Permissions{
				Publish: &server.SubjectPermission{Allow: []string{
					"meridian.sync.>", "$JS.API.INFO", "$JS.API.STREAM.INFO.MERIDIAN_SYNC", "$JS.API.CONSUMER.>", "$JS.FC.>", "$JS.ACK.>",
				}},
				Subscribe: &server.SubjectPermission{Allow: []string{"meridian.sync.>", "_INBOX.>"}},
			}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

// TestOpenUsesExistingStreamWithoutEditRights: ops created the log stream
// with their own settings; PoPs whose credentials cannot create or edit
// streams open, write and replay, the stream keeps the operators' settings,
// and the difference is logged.
func TestOpenUsesExistingStreamWithoutEditRights(t *testing.T) {
	srv := startNATSWithPoPUser(t)
	admin, err := nats.Connect(srv.ClientURL(), nats.UserInfo("admin", "admin"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	js, err := jetstream.New(admin)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	opsConfig := jetstream.StreamConfig{Name: "MERIDIAN_SYNC", Subjects: []string{deltaSubject(">")},
		Storage: jetstream.FileStorage, MaxAge: 48 * time.Hour, MaxMsgSize: MaxMessageSize}
	if _, err := js.CreateStream(ctx, opsConfig); err != nil {
		t.Fatal(err)
	}
	logs := &testutil.SyncBuffer{}
	open := func(id string) *Node {
		nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo("pop", "pop"), nats.MaxReconnects(-1))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		n, err := Open(ctx, Options{NodeID: id, Conn: nc, DataDir: t.TempDir(), ReplayTimeout: 5 * time.Second,
			Logger: slog.New(slog.NewTextHandler(logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		return n
	}
	a := open("ams")
	if err := a.KVSet(ctx, "s", "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if a.Status().Queued != 0 {
		t.Fatal("the write did not reach the log")
	}
	b := open("fra") // replays the write from the log at start
	if v, ok := b.KVGet("s", "k"); !ok || string(v) != "v" {
		t.Fatalf("fra after replay: %q %v", v, ok)
	}
	st, err := js.Stream(ctx, "MERIDIAN_SYNC")
	if err != nil {
		t.Fatal(err)
	}
	if got := st.CachedInfo().Config.MaxAge; got != 48*time.Hour {
		t.Fatalf("stream max age changed to %v", got)
	}
	if out := logs.String(); !strings.Contains(out, "another configuration") || !strings.Contains(out, "max age 48h0m0s (want 72h0m0s)") {
		t.Fatalf("no warning about the stream's settings in the log:\n%s", out)
	}
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Fatalf("errors logged:\n%s", logs.String())
	}
}

// TestOpenCreatesMissingStream: with rights to create streams, the first
// node creates the log with this package's settings.
func TestOpenCreatesMissingStream(t *testing.T) {
	srv := startNATSWithPoPUser(t)
	nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo("admin", "admin"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	logs := &testutil.SyncBuffer{}
	opts := Options{NodeID: "ams", Conn: nc, DataDir: t.TempDir(), StreamMaxAge: 24 * time.Hour,
		Logger: slog.New(slog.NewTextHandler(logs, nil))}
	n, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	// A second node finds the stream as it would create it: no warning.
	opts.NodeID, opts.DataDir = "fra", t.TempDir()
	n2, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer n2.Close()
	if out := logs.String(); strings.Contains(out, "another configuration") || !strings.Contains(out, "created the durable log stream") {
		t.Fatalf("logs after creating the stream and opening a second node:\n%s", out)
	}
	js, _ := jetstream.New(nc)
	st, err := js.Stream(context.Background(), "MERIDIAN_SYNC")
	if err != nil {
		t.Fatalf("stream not created: %v", err)
	}
	if cfg := st.CachedInfo().Config; cfg.MaxAge != 24*time.Hour || cfg.Subjects[0] != deltaSubject(">") || cfg.MaxMsgSize != MaxMessageSize {
		t.Fatalf("created stream config %+v", cfg)
	}
}
