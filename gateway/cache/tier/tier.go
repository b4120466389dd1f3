// Package tier defines the narrow storage interface every cache tier (L1
// memory, L2 disk, L3 object store) implements, the stored object's metadata,
// and its compact binary encoding.
//
// It owns the contract between the HTTP cache and its storage. It must not
// contain HTTP caching rules (package policy) or any tier implementation.
package tier

import (
	"context"
	"errors"
	"io"
	"net/http"
	"time"
)

// Errors a tier returns. Callers test them with errors.Is.
var (
	// ErrNotFound: no object under the key.
	ErrNotFound = errors.New("cache tier: not found")
	// ErrNotAdmitted: the tier's admission policy declined the object; not a failure.
	ErrNotAdmitted = errors.New("cache tier: not admitted")
	// ErrTooLarge: the object exceeds what the tier may hold; not a failure.
	ErrTooLarge = errors.New("cache tier: object too large for this tier")
)

// Kind tells a stored response from a Vary index record.
type Kind uint8

// Kinds of stored objects.
const (
	// KindResponse is a full stored response (headers and body).
	KindResponse Kind = 0
	// KindVary is the record at a primary key listing the Vary fields; the
	// responses themselves live under secondary keys that include Gen.
	KindVary Kind = 1
)

// Meta is what a tier stores beside the body. Times are wall-clock.
type Meta struct {
	Kind   Kind
	Site   string // site ID, for purge by site
	URL    string // absolute request URL, for purge by URL and prefix
	Status int
	Header http.Header // stored response header, hop-by-hop fields removed
	// RequestTime and ResponseTime bracket the origin exchange (RFC 9111 4.2.3).
	RequestTime  time.Time
	ResponseTime time.Time
	// TTL overrides the freshness lifetime when > 0 (set by a site plugin).
	TTL time.Duration
	// Invalidated marks a soft-purged object: stale, kept for stale-if-error.
	Invalidated bool
	// Gen identifies a Vary index generation; secondary keys include it so
	// that dropping the index makes every old variant unreachable at once.
	Gen uint64
	// Vary lists the Vary fields (KindVary records only).
	Vary []string
	// Size is the body length in bytes.
	Size int64
}

// Object is a stored object returned by Get. The caller must Close Body.
// Meta may be shared with the tier and with other readers of the object
// (L1 and L2 hand every hit the same one): treat it as read-only, and
// Clone it before changing it.
type Object struct {
	Meta *Meta
	Body io.ReadCloser
}

// FileWriter is an io.Writer that can also send a byte range of an open
// file without copying it through the process (sendfile(2) to a socket). A
// body read from a local file (L2) offers its verified ranges through it
// from WriteTo when the writer has it, so a disk hit's bytes go from the
// page cache to the socket without a copy in user space, as nginx's
// sendfile does.
type FileWriter interface {
	io.Writer
	// WriteFile writes the n bytes of the file open as descriptor fd from
	// offset off (the descriptor's own offset is not used or moved), after
	// anything the writer holds for it. It returns fewer than n only with
	// an error.
	WriteFile(fd int, off, n int64) (int64, error)
}

// Writer receives a body for Put. Commit makes the object visible; Abort
// drops it. Exactly one of them must be called.
type Writer interface {
	io.Writer
	Commit() error
	Abort()
}

// Tier is one storage level. Implementations are safe for concurrent use.
type Tier interface {
	// Name is the short name used in Cache-Status and metrics ("l1").
	Name() string
	// Get returns the object under key or ErrNotFound.
	Get(ctx context.Context, key string) (*Object, error)
	// Put starts storing an object; the body is written to the returned
	// Writer. It may return ErrNotAdmitted or ErrTooLarge (meta.Size, when
	// known, lets a tier refuse early; -1 means unknown).
	Put(ctx context.Context, key string, meta *Meta) (Writer, error)
	// Delete removes the object; a missing key is not an error.
	Delete(ctx context.Context, key string) error
}

// MetaUpdater is implemented by tiers that can replace an object's metadata
// without rewriting its body (used after a 304 and for soft purge).
type MetaUpdater interface {
	UpdateMeta(ctx context.Context, key string, meta *Meta) error
}

// Scanner is implemented by tiers that can enumerate their objects, which
// purge by prefix, surrogate key and site needs.
type Scanner interface {
	// Scan calls fn for every object's key and metadata until fn returns false
	// or ctx ends. The tier may be modified from fn.
	Scan(ctx context.Context, fn func(key string, meta *Meta) bool) error
}

// Stats is implemented by tiers that report their size.
type Stats interface {
	// Usage returns the number of objects and bytes held.
	Usage() (objects int64, bytes int64)
}
