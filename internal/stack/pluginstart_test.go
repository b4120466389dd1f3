package stack_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/internal/demoorigin"
	"github.com/meridian-edge/meridian/internal/stack"
	"github.com/meridian-edge/meridian/internal/testutil"
	"github.com/meridian-edge/meridian/plugins/plugintest"
)

// TestRestartedPoPNeverSkipsItsAuthPlugin: a stack restarted with an auth
// plugin (examples/bearerauth) deployed in a fail-closed chain never
// serves the site without it: requests sent without a token from before
// the restart, and so from the moment each PoP's listener accepts, are all
// refused (401 from the plugin, or the fail-closed 503), never answered by
// the origin.
func TestRestartedPoPNeverSkipsItsAuthPlugin(t *testing.T) {
	wasm, err := plugintest.BuildGo(context.Background(), t.TempDir(), "bearerauth")
	if err != nil {
		t.Fatal(err)
	}
	origin := httptest.NewServer(demoorigin.New())
	defer origin.Close()
	cfg := devConfig(t, origin.URL)
	// Fixed ports, so that a restarted stack listens where the test
	// already sends requests.
	for i, addr := range testutil.FreeAddrs(t, "127.0.0.1", len(cfg.PoPs)) {
		cfg.PoPs[i].HTTP = addr
	}
	start := func() *stack.Stack {
		st, err := stack.Start(context.Background(), cfg, stack.Roles{AllPoPs: true}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	st := start()
	pushPlugin(t, st, "eu-west-2", "auth", url.Values{"config": {"tokens=s3cret"}, "request_header": {"authorization"}}, wasm["bearerauth"])
	chain := `{"fail_closed":true,"entries":[{"plugin":"auth","config":{"tokens":"s3cret"},"request_headers":["authorization"]}]}`
	if code, body := adminSend(t, st, "eu-west-2", "PUT", "/admin/plugins/www/chain", "dev-www-token", strings.NewReader(chain)); code != http.StatusOK {
		t.Fatalf("set the chain: %d %s", code, body)
	}
	for _, pc := range cfg.PoPs {
		// Generous: compiling a Go plugin takes tens of seconds under -race.
		deadline := time.Now().Add(180 * time.Second)
		for getHome(t, pc.HTTP).StatusCode != http.StatusUnauthorized {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the auth plugin is not refusing requests after 180s", pc.ID)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if err := st.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	// Hammer every PoP's address while the stack starts again.
	type tally struct {
		mu     sync.Mutex
		status map[int]int
		bad    string // the first answer that was served without the plugin
	}
	var (
		wg      sync.WaitGroup
		tallies = make([]*tally, len(cfg.PoPs))
		stop    = make(chan struct{})
	)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	for i, pc := range cfg.PoPs {
		tl := &tally{status: map[int]int{}}
		tallies[i] = tl
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("GET", "http://"+pc.HTTP+"/", nil)
				req.Host = "www.example.test"
				resp, err := client.Do(req)
				if err != nil {
					time.Sleep(2 * time.Millisecond) // not listening yet
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				// The plugin's 401, or the fail-closed 503 (the plugin not
				// loaded yet, or a call that failed, e.g. past its deadline
				// on a loaded machine): anything but the origin's page.
				ok := resp.StatusCode == http.StatusUnauthorized ||
					(resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(string(b), "the site is set to fail closed"))
				tl.mu.Lock()
				tl.status[resp.StatusCode]++
				if !ok && tl.bad == "" {
					tl.bad = resp.Status + " " + string(b)
				}
				tl.mu.Unlock()
			}
		}()
	}
	st = start()
	defer st.Shutdown(context.Background())
	// Keep on until every PoP has answered a fair number of requests.
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		enough := true
		for _, tl := range tallies {
			tl.mu.Lock()
			n := 0
			for _, c := range tl.status {
				n += c
			}
			tl.mu.Unlock()
			enough = enough && n >= 50
		}
		if enough {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	for i, pc := range cfg.PoPs {
		tl := tallies[i]
		t.Logf("%s after the restart: %v", pc.ID, tl.status)
		if tl.bad != "" {
			t.Errorf("%s served the site without its auth plugin after the restart: %.200s", pc.ID, tl.bad)
		}
		if tl.status[http.StatusUnauthorized]+tl.status[http.StatusServiceUnavailable] == 0 {
			t.Errorf("%s: no request got through after the restart", pc.ID)
		}
	}
}
