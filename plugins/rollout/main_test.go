package rollout_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/plugins"
	"github.com/meridian-edge/meridian/plugins/plugintest"
	"github.com/meridian-edge/meridian/plugins/rollout"
)

// engine is shared so its compilation cache is too, as in a PoP.
var engine *plugins.SDKEngine

// wasm holds the plugins built from source once per test binary.
var wasm = map[string][]byte{}

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "meridian-rollout-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	built, err := plugintest.BuildGo(ctx, dir, "headers")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	wasm["headers"] = built["headers"]
	for _, n := range []string{"trap", "unknownimport", "noexport", "continue"} {
		b, err := plugintest.WAT(ctx, dir, n)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		wasm[n] = b
	}
	engine, err = plugins.NewSDKEngine(plugins.SDKOptions{CacheDir: plugintest.CacheDir()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer engine.Close(ctx)
	return m.Run()
}

// apiResult is an admin API answer.
type apiResult struct {
	status int
	body   []byte
}

func (r apiResult) errorText() string {
	var e struct{ Error string }
	_ = json.Unmarshal(r.body, &e)
	return e.Error
}

func call(t testing.TB, method, u, token string, body []byte) apiResult {
	t.Helper()
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return apiResult{resp.StatusCode, b}
}

// push uploads a plugin to an admin API.
func push(t testing.TB, admin, token, site, plugin string, b []byte, q url.Values) apiResult {
	t.Helper()
	u := admin + "/admin/plugins/" + site + "/" + plugin
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return call(t, http.MethodPost, u, token, b)
}

// mustPush pushes and fails the test unless it was accepted.
func mustPush(t testing.TB, admin, token, site, plugin string, b []byte, q url.Values) rollout.PushResult {
	t.Helper()
	r := push(t, admin, token, site, plugin, b, q)
	if r.status != http.StatusCreated && r.status != http.StatusOK {
		t.Fatalf("push %s/%s: %d %s", site, plugin, r.status, r.body)
	}
	var pr rollout.PushResult
	if err := json.Unmarshal(r.body, &pr); err != nil {
		t.Fatal(err)
	}
	return pr
}

func status(t testing.TB, admin, token, site string) rollout.SiteStatus {
	t.Helper()
	r := call(t, http.MethodGet, admin+"/admin/plugins/"+site, token, nil)
	if r.status != http.StatusOK {
		t.Fatalf("status of %s: %d %s", site, r.status, r.body)
	}
	var st rollout.SiteStatus
	if err := json.Unmarshal(r.body, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// eventually polls cond until it holds or timeout passes. The bound is
// generous: compiling under -race on a loaded machine is slow.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
