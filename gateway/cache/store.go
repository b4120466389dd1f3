package cache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"

	"github.com/meridian-edge/meridian/gateway/cache/tier"
)

// store adapts the cache's storage (the built-in L1 or a composition such as
// gateway/cache/tiered) to what the request path needs.
type store struct {
	t tier.Tier
	// name is used in metrics for stores and the gauge of usage.
	name string
}

// bytesGetter is the zero-copy-ish fast path of the L1 tier.
type bytesGetter interface {
	GetBytes(key string) (*tier.Meta, []byte, error)
}

// sourceGetter is implemented by compositions that report which tier answered.
type sourceGetter interface {
	GetFrom(ctx context.Context, key string) (*tier.Object, string, error)
}

// maxObjecter is implemented by tiers with a per-object size limit (for a
// composition, the largest any of its tiers takes).
type maxObjecter interface {
	MaxObject() int64
}

// firstTierLimiter is implemented by compositions of tiers
// (gateway/cache/tiered) that can keep one site's objects larger than a
// limit out of their first, memory tier while the lower tiers store them:
// SitePolicy.MaxL1Object.
type firstTierLimiter interface {
	LimitFirst(site string, maxBody int64)
}

// maxInMemory bounds how much of a body the cache reads into memory to
// serve it when the tier's body cannot seek.
const maxInMemory = 1 << 20

// get returns the stored object under key. The body is a ReadSeeker; the
// caller must call close.
func (s *store) get(ctx context.Context, key string) (*stored, error) {
	if bg, ok := s.t.(bytesGetter); ok {
		m, body, err := bg.GetBytes(key)
		if err != nil {
			return nil, err
		}
		return &stored{key: key, meta: m, body: body, tier: s.t.Name(), shared: sharesMeta(s.t.Name())}, nil
	}
	var (
		obj  *tier.Object
		name = s.t.Name()
		err  error
	)
	if sg, ok := s.t.(sourceGetter); ok {
		obj, name, err = sg.GetFrom(ctx, key)
	} else {
		obj, err = s.t.Get(ctx, key)
	}
	if err != nil {
		return nil, err
	}
	st := &stored{key: key, meta: obj.Meta, tier: name, shared: sharesMeta(name)}
	if rs, ok := obj.Body.(io.ReadSeeker); ok {
		st.rs, st.closer = rs, obj.Body
		return st, nil
	}
	defer obj.Body.Close()
	if obj.Meta.Size > maxInMemory {
		// Cannot seek and too big to buffer: treat as a miss rather than
		// hold it in memory; the fill will store a fresh copy.
		return nil, tier.ErrNotFound
	}
	b, err := io.ReadAll(io.LimitReader(obj.Body, maxInMemory+1))
	if err != nil || int64(len(b)) > maxInMemory {
		return nil, errors.Join(tier.ErrNotFound, err)
	}
	st.body = b
	return st, nil
}

// sharesMeta reports whether the tier named name hands every hit on an
// object the same, never modified Header map (see metaKey).
func sharesMeta(name string) bool { return name == "l1" || name == "l2" }

func (s *store) maxObject() int64 {
	if mo, ok := s.t.(maxObjecter); ok {
		return mo.MaxObject()
	}
	return math.MaxInt64
}

func (s *store) put(ctx context.Context, key string, m *tier.Meta) (tier.Writer, error) {
	return s.t.Put(ctx, key, m)
}

func (s *store) delete(key string) {
	_ = s.t.Delete(context.Background(), key)
}

// updateMeta replaces metadata, through MetaUpdater when the tier has it and
// otherwise by rewriting the object with its body.
func (s *store) updateMeta(ctx context.Context, st *stored, m *tier.Meta) error {
	if mu, ok := s.t.(tier.MetaUpdater); ok {
		return mu.UpdateMeta(ctx, st.key, m)
	}
	w, err := s.t.Put(ctx, st.key, m)
	if err != nil {
		return err
	}
	var src io.Reader = bytes.NewReader(st.body)
	if st.rs != nil {
		if _, err := st.rs.Seek(0, io.SeekStart); err != nil {
			w.Abort()
			return err
		}
		src = st.rs
	}
	if _, err := io.Copy(w, src); err != nil {
		w.Abort()
		return err
	}
	return w.Commit()
}

func (s *store) usage() (objects, bytes int64) {
	if st, ok := s.t.(tier.Stats); ok {
		return st.Usage()
	}
	return 0, 0
}
