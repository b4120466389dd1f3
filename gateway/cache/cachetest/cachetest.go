// Package cachetest holds test support for the cache and proxy packages:
// an origin RoundTripper that stands in for gateway/origin.Pool against an
// httptest origin on loopback.
//
// It owns test helpers only and must not be imported by production code.
package cachetest

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"
)

// Transport returns a RoundTripper that sends requests to origin (an
// http://127.0.0.1:port URL) like origin.Pool would: it sets the URL's
// scheme and host, leaves path, query and headers alone, and bounds the
// whole exchange by timeout (0: none) with an error wrapping
// context.DeadlineExceeded. Its idle connections close at test cleanup.
func Transport(t testing.TB, origin string, timeout time.Duration) http.RoundTripper {
	u, err := url.Parse(origin)
	if err != nil {
		t.Fatalf("cachetest: bad origin URL %q: %v", origin, err)
	}
	tr := &http.Transport{
		Proxy:               nil,
		MaxIdleConnsPerHost: 256,
		DisableCompression:  true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return rt{base: tr, u: u, timeout: timeout}
}

type rt struct {
	base    *http.Transport
	u       *url.URL
	timeout time.Duration
}

func (r rt) RoundTrip(req *http.Request) (*http.Response, error) {
	out := req.Clone(req.Context())
	out.URL.Scheme = r.u.Scheme
	out.URL.Host = r.u.Host
	if r.timeout <= 0 {
		return r.base.RoundTrip(out)
	}
	ctx, cancel := context.WithTimeout(req.Context(), r.timeout)
	out = out.WithContext(ctx)
	resp, err := r.base.RoundTrip(out)
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

type cancelOnClose struct {
	io.ReadCloser
	cancel func()
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}
