package cache_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway/cache"
	"github.com/meridian-edge/meridian/gateway/cache/cachetest"
	"github.com/meridian-edge/meridian/gateway/cache/tier"
)

// streamTier is a minimal tier that hands out seekable streams instead of
// byte slices and has no MetaUpdater, like a disk tier might: it checks
// that the cache works with any tier.Tier given as Options.Store.
type streamTier struct {
	mu sync.Mutex
	m  map[string][]byte
}

type rsc struct{ *bytes.Reader }

func (rsc) Close() error { return nil }

func (s *streamTier) Name() string { return "disk" }

func (s *streamTier) Get(_ context.Context, key string) (*tier.Object, error) {
	s.mu.Lock()
	b, ok := s.m[key]
	s.mu.Unlock()
	if !ok {
		return nil, tier.ErrNotFound
	}
	m, body, err := tier.DecodeMeta(b)
	if err != nil {
		return nil, err
	}
	return &tier.Object{Meta: m, Body: rsc{bytes.NewReader(body)}}, nil
}

type streamWriter struct {
	s   *streamTier
	key string
	buf []byte
}

func (w *streamWriter) Write(p []byte) (int, error) { w.buf = append(w.buf, p...); return len(p), nil }
func (w *streamWriter) Commit() error {
	w.s.mu.Lock()
	w.s.m[w.key] = w.buf
	w.s.mu.Unlock()
	return nil
}
func (w *streamWriter) Abort() {}

func (s *streamTier) Put(_ context.Context, key string, m *tier.Meta) (tier.Writer, error) {
	return &streamWriter{s: s, key: key, buf: tier.AppendMeta(nil, m)}, nil
}

func (s *streamTier) Delete(_ context.Context, key string) error {
	s.mu.Lock()
	delete(s.m, key)
	s.mu.Unlock()
	return nil
}

func (s *streamTier) Scan(ctx context.Context, fn func(string, *tier.Meta) bool) error {
	s.mu.Lock()
	keys := make([]string, 0, len(s.m))
	for k := range s.m {
		keys = append(keys, k)
	}
	s.mu.Unlock()
	for _, k := range keys {
		o, err := s.Get(ctx, k)
		if err != nil {
			continue
		}
		if !fn(k, o.Meta) {
			break
		}
	}
	return nil
}

func TestCustomStore(t *testing.T) {
	st := &streamTier{m: map[string][]byte{}}
	var n int
	var mu sync.Mutex
	origin := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		cur := n
		mu.Unlock()
		w.Header().Set("ETag", `"s"`)
		w.Header().Set("X-N", fmt.Sprint(cur))
		w.Header().Set("Surrogate-Key", "k1")
		if r.Header.Get("If-None-Match") == `"s"` {
			w.Header().Set("Cache-Control", "max-age=600")
			w.WriteHeader(304)
			return
		}
		// Long enough that a loaded machine cannot make it stale between
		// the first two requests: the test clock is real time plus offsets.
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, "0123456789")
	}))
	clk := &clock{}
	c, err := cache.New(cache.Options{Store: st, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	e := &env{t: t, clock: clk, client: http.DefaultClient}
	e.front = newServer(t, c.Handler(cache.SitePolicy{SiteID: "s"}, cachetest.Transport(t, origin.URL, 0)))
	if r := e.get("/x"); r.body != "0123456789" {
		t.Fatalf("miss: %q", r.body)
	}
	if r := e.get("/x", "Range", "bytes=3-4"); r.status != 206 || r.body != "34" || !strings.Contains(r.cs(), "detail=disk") {
		t.Fatalf("range hit from the stream tier: %d %q %q", r.status, r.body, r.cs())
	}
	clk.Advance(90 * time.Second)
	if r := e.get("/x"); r.body != "0123456789" || r.header.Get("X-N") != "2" || !strings.Contains(r.cs(), "fwd-status=304") {
		t.Fatalf("revalidated: %q X-N=%s %q", r.body, r.header.Get("X-N"), r.cs())
	}
	clk.Advance(5 * time.Second)
	if r := e.get("/x"); r.header.Get("X-N") != "2" || !strings.Contains(r.cs(), "hit") {
		t.Fatalf("updated headers not stored without MetaUpdater: X-N=%s %q", r.header.Get("X-N"), r.cs())
	}
	if k, err := c.Purge(context.Background(), cache.Selector{Site: "s", Kind: cache.BySurrogateKey, Value: "k1"}); err != nil || k != 1 {
		t.Fatalf("purge: %d %v", k, err)
	}
	if r := e.get("/x"); strings.Contains(r.cs(), "hit") {
		t.Fatalf("after purge: %q", r.cs())
	}
}
