package cache_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/meridian-edge/meridian/gateway/cache"
)

type connKey struct{}

// Coalesce keeps a ConnContext the server already had.
func TestCoalesceChainsConnContext(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, _ := r.Context().Value(connKey{}).(string)
		io.WriteString(w, v)
	}))
	srv.Config.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		return context.WithValue(ctx, connKey{}, "from-the-server")
	}
	srv.Listener = cache.Coalesce(srv.Config, srv.Listener)
	srv.Start()
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if b, _ := io.ReadAll(resp.Body); string(b) != "from-the-server" {
		t.Fatalf("server's ConnContext lost: %q", b)
	}
}

func TestGCPercent(t *testing.T) {
	tests := []struct {
		l1      int64
		percent int
	}{
		{0, 6},          // the 512 MiB default
		{16 << 20, 100}, // small caches: the runtime's default
		{64 << 20, 50},
		{1 << 30, 3},
		{64 << 30, 2}, // never below 2%
	}
	for _, tc := range tests {
		if pct := cache.GCPercent(tc.l1); pct != tc.percent {
			t.Errorf("GCPercent(%d) = %d%%, want %d%%", tc.l1, pct, tc.percent)
		}
	}
}
