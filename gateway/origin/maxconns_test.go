package origin_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/meridian-edge/meridian/gateway/origin"
	mtestutil "github.com/meridian-edge/meridian/internal/testutil"
)

// TestMaxConns: a server with MaxConns requests in flight is not sent
// more: another server of the group takes them, and when there is none
// the request fails at once with ErrBusy (a 503 for the client), without
// marking the server down. A slot is held until the body is read or
// closed.
func TestMaxConns(t *testing.T) {
	release := make(chan struct{})
	var started, served atomic.Int32
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started.Add(1)
		if r.URL.Path == "/hold" {
			<-release
		}
		served.Add(1)
		io.WriteString(w, "slow")
	}))
	t.Cleanup(slow.Close)
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	p, err := origin.New(origin.Options{Site: "www", Servers: []origin.Server{{URL: mustURL(t, slow.URL), MaxConns: 2}}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	done := make(chan error, 2)
	for range 2 {
		go func() {
			resp, err := get(t, p, "GET", "/hold", nil)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			done <- err
		}()
	}
	mtestutil.WaitFor(t, "two requests held at the origin", func() bool { return started.Load() == 2 })
	_, err = get(t, p, "GET", "/page", nil)
	if !errors.Is(err, origin.ErrBusy) || origin.Failure(err) != origin.FailureBusy {
		t.Fatalf("a third request with two in flight and max_conns 2: %v, want ErrBusy", err)
	}
	if started.Load() != 2 {
		t.Fatalf("the origin got %d requests, want 2: the busy one must not be sent", started.Load())
	}
	close(release)
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	// Slots are back, and the server was not marked down: a request whose
	// body stays open holds one, its Close gives it back.
	resp, err := get(t, p, "GET", "/page", nil)
	if err != nil {
		t.Fatalf("after the held requests ended: %v", err)
	}
	resp2, err := get(t, p, "GET", "/page", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := get(t, p, "GET", "/page", nil); !errors.Is(err, origin.ErrBusy) {
		t.Fatalf("two bodies open: %v, want ErrBusy", err)
	}
	resp.Body.Close()
	resp2.Body.Close()
	if resp, err := get(t, p, "GET", "/page", nil); err != nil {
		t.Fatalf("after the bodies were closed: %v", err)
	} else {
		resp.Body.Close()
	}
}

// TestMaxConnsSpillsToAnotherServer: with one server full, the group's
// other servers take the requests.
func TestMaxConnsSpillsToAnotherServer(t *testing.T) {
	var toA, toB atomic.Int32
	a := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { toA.Add(1) }))
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { toB.Add(1) }))
	t.Cleanup(a.Close)
	t.Cleanup(b.Close)
	p, err := origin.New(origin.Options{Site: "www", Servers: []origin.Server{{URL: mustURL(t, a.URL), MaxConns: 1}, {URL: mustURL(t, b.URL)}}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	// Hold a's only slot: find a request that went to a, keep its body.
	var held *http.Response
	for held == nil {
		resp, err := get(t, p, "GET", "/", nil)
		if err != nil {
			t.Fatal(err)
		}
		if toA.Load() == 1 {
			held = resp
			break
		}
		resp.Body.Close()
	}
	defer held.Body.Close()
	before := toB.Load()
	for range 6 {
		getPage(t, p, "/page")
	}
	if toA.Load() != 1 || toB.Load()-before != 6 {
		t.Errorf("a full: a got %d more, b %d of 6; want all on b", toA.Load()-1, toB.Load()-before)
	}
}
