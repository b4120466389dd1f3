package cache

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/meridian-edge/meridian/middleware"
)

// TestBackgroundContextIsNotTheClients: a stale-while-revalidate refresh
// runs under backgroundContext, which outlives the request and keeps its
// ID, but whose origin attempts are not recorded on the client's access
// log line (nor written to its record while the line is logged).
func TestBackgroundContextIsNotTheClients(t *testing.T) {
	middleware.RequestID(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithCancel(r.Context())
		bg := backgroundContext(ctx)
		cancel()
		if bg.Err() != nil {
			t.Error("the background context ended with the request's")
		}
		if id := middleware.GetRequestID(bg); id == "" || id != middleware.GetRequestID(r.Context()) {
			t.Errorf("background request id %q, want the request's %q", id, middleware.GetRequestID(r.Context()))
		}
		if middleware.MarkOrigin(bg, middleware.OriginFetch{Server: "o:80", Status: 304}) {
			t.Error("an origin attempt under the background context was recorded")
		}
		if o := middleware.Origin(r.Context()); o.Attempts != 0 {
			t.Errorf("the client's record has the background attempt: %+v", o)
		}
	})).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
}
