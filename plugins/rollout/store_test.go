package rollout_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-edge/meridian/internal/statesync"
	ntestutil "github.com/meridian-edge/meridian/internal/testutil"
	"github.com/meridian-edge/meridian/plugins/rollout"
	"github.com/meridian-edge/meridian/plugins/rollout/rollouttest"
)

// TestConcurrentPushesGetDistinctVersions: uploads racing on two PoPs never
// share a version number, and every one of them is in the catalogue.
func TestConcurrentPushesGetDistinctVersions(t *testing.T) {
	srv := ntestutil.StartNATS(t)
	pops := []*rollouttest.PoP{
		rollouttest.StartPoP(t, srv, engine, "ams", nil),
		rollouttest.StartPoP(t, srv, engine, "fra", nil),
	}
	tags := []string{"a", "b", "c", "d", "e", "f"}
	blobs := make([][]byte, len(tags))
	for i, tag := range tags {
		blobs[i] = rollouttest.VersionWAT(t, tag)
	}
	got := make([]int, len(tags))
	var wg sync.WaitGroup
	for i := range tags {
		wg.Go(func() {
			got[i] = mustPush(t, pops[i%2].Admin.URL, shop, site, "tag", blobs[i], nil).Version.Version
		})
	}
	wg.Wait()
	sorted := slices.Sorted(slices.Values(got))
	if !slices.Equal(sorted, []int{1, 2, 3, 4, 5, 6}) {
		t.Fatalf("versions given: %v", got)
	}
	st := status(t, pops[1].Admin.URL, shop, site)
	if len(st.Plugins) != 1 || len(st.Plugins[0].Versions) != len(tags) {
		t.Fatalf("catalogue: %+v", st.Plugins)
	}
	for _, v := range st.Plugins[0].Versions {
		if want := hexSHA(blobs[slices.Index(got, v.Version)]); v.SHA256 != want {
			t.Fatalf("version %d has SHA-256 %s, uploaded bytes have %s", v.Version, v.SHA256, want)
		}
	}
}

func hexSHA(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestCorruptBlobRefused: a blob whose bytes do not match the SHA-256 the
// catalogue and the record name is never compiled; the PoP keeps running
// what it ran and reports the deployment as not applied, with the reason.
func TestCorruptBlobRefused(t *testing.T) {
	srv := ntestutil.StartNATS(t)
	p := rollouttest.StartPoP(t, srv, engine, "ams", nil)
	mustPush(t, p.Admin.URL, shop, site, "tag", rollouttest.VersionWAT(t, "1"), nil)
	eventually(t, 30*time.Second, "v1 answering", func() bool { return answersWith(t, p, "1") })

	// Forge version 2: catalogue entry and record name the SHA-256 of one
	// plugin, the object store holds another under that name.
	ctx := context.Background()
	js, err := jetstream.New(ntestutil.Connect(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	good, evil := rollouttest.VersionWAT(t, "2"), rollouttest.VersionWAT(t, "9") // same size
	sha := hexSHA(good)
	obs, err := js.ObjectStore(ctx, rollout.BlobBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := obs.Put(ctx, jetstream.ObjectMeta{Name: "shop/tag/" + sha}, bytes.NewReader(evil)); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, rollout.MetaBucket)
	if err != nil {
		t.Fatal(err)
	}
	entry, _ := json.Marshal(rollout.Version{Site: site, Plugin: "tag", Version: 2, SHA256: sha, Size: len(good)})
	if _, err := kv.Create(ctx, "v.shop.tag.2", entry); err != nil {
		t.Fatal(err)
	}
	if err := p.Node.Deploy(ctx, statesync.Deployment{Site: site, Plugin: "tag", Version: "2", SHA256: sha, CanaryPercent: 100}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the PoP reporting the corrupt blob", func() bool {
		st := status(t, p.Admin.URL, shop, site)
		return len(st.Plugins) == 1 && strings.Contains(st.Plugins[0].Pending, "corrupt or replaced")
	})
	for range 20 {
		if !answersWith(t, p, "1") {
			t.Fatal("a corrupt blob changed what runs")
		}
	}
	if got := metric(t, p, "meridian_plugin_deployment_failures_total"); got < 1 {
		t.Fatalf("failures counted: %v", got)
	}
	// A push of the real bytes repairs it: same SHA-256, same version.
	r := push(t, p.Admin.URL, shop, site, "tag", good, nil)
	if r.status != http.StatusOK {
		t.Fatalf("re-push: %d %s", r.status, r.body)
	}
	eventually(t, 30*time.Second, "v2 answering after the re-push", func() bool { return answersWith(t, p, "2") })
}
