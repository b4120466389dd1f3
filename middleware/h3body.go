package middleware

import (
	"bytes"
	"errors"
	"io"
	"net/http"
)

// HTTP3EmptyBody marks HTTP/3 requests that carry no body as such. An HTTP/3
// server cannot tell from the headers whether a body follows (no
// Content-Length means "unknown", not "none"), so every GET arrives looking
// like a GET with a body, which the cache must not share. A client sends the
// end of its stream with the headers when there is no body, so reading one
// byte answers at once: EOF means no body.
func HTTP3EmptyBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 3 && r.ContentLength == -1 && r.Body != nil && r.Body != http.NoBody {
			var one [1]byte
			n, err := r.Body.Read(one[:])
			switch {
			case n == 0 && errors.Is(err, io.EOF):
				_ = r.Body.Close()
				r.Body, r.ContentLength = http.NoBody, 0
			default:
				// A body after all (or an error, which the next reader will see
				// again): give the byte back.
				r.Body = &prefixedBody{Reader: io.MultiReader(bytes.NewReader(append([]byte(nil), one[:n]...)), r.Body), closer: r.Body}
			}
		}
		next.ServeHTTP(w, r)
	})
}

type prefixedBody struct {
	io.Reader
	closer io.Closer
}

func (b *prefixedBody) Close() error { return b.closer.Close() }
