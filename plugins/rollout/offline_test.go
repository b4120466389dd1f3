package rollout_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/internal/natsembed"
	"github.com/meridian-edge/meridian/plugins/rollout/rollouttest"
)

// TestRestartWithoutNATS: a PoP restarted while NATS is down runs its
// site's plugins again from its CacheDir copy and statesync snapshot; its
// admin API says why uploads wait. When NATS is back, uploads work again.
func TestRestartWithoutNATS(t *testing.T) {
	natsDir := t.TempDir()
	srv, err := natsembed.Start(natsembed.Options{Addr: "127.0.0.1:0", StoreDir: natsDir, ServerName: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	addr := strings.TrimPrefix(srv.ClientURL(), "nats://")
	cfg := rollouttest.Config{ID: "ams", NATSURL: srv.ClientURL(), DataDir: t.TempDir(), CacheDir: t.TempDir()}
	p := rollouttest.Start(t, engine, cfg)
	mustPush(t, p.Admin.URL, shop, site, "tag", rollouttest.VersionWAT(t, "1"), nil)
	eventually(t, 30*time.Second, "v1 answering", func() bool { return answersWith(t, p, "1") })
	p.Stop()
	srv.Shutdown()

	p = rollouttest.Start(t, engine, cfg)
	eventually(t, 30*time.Second, "v1 answering after a restart without NATS", func() bool { return answersWith(t, p, "1") })
	r := push(t, p.Admin.URL, shop, site, "tag", rollouttest.VersionWAT(t, "2"), nil)
	if r.status != http.StatusServiceUnavailable || !strings.Contains(r.errorText(), "cannot reach JetStream") {
		t.Fatalf("push without NATS: %d %q", r.status, r.errorText())
	}
	if !answersWith(t, p, "1") {
		t.Fatal("a refused push changed what runs")
	}
	// The logs do not live in JetStream: an owner reads this PoP's lines
	// while uploads wait.
	if code, ans, msg := getLogs(t, p, shop, ""); code != http.StatusOK || !slices.Equal(ans.Answered, []string{"ams"}) {
		t.Fatalf("logs without NATS: %d %q, answered by %v", code, msg, ans.Answered)
	}

	// NATS comes back on the same address with its JetStream files.
	srv2, err := natsembed.Start(natsembed.Options{Addr: addr, StoreDir: natsDir, ServerName: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv2.Shutdown)
	eventually(t, 30*time.Second, "push accepted once NATS is back", func() bool {
		r := push(t, p.Admin.URL, shop, site, "tag", rollouttest.VersionWAT(t, "2"), nil)
		return r.status == http.StatusCreated
	})
	eventually(t, 30*time.Second, "v2 answering", func() bool { return answersWith(t, p, "2") })
}
