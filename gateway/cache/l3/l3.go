// Package l3 is the regional cache tier in an S3-compatible object store,
// shared by the PoPs of one region (one bucket and prefix per region).
//
// It talks S3 through the AWS SDK v2 S3 client, built with s3.New (no
// shared-config loading): it is AWS's maintained client, it works against
// AWS S3, versitygw and the embedded gofakes3 server of `meridian dev`
// without workarounds (minio-go needs DisableContentSha256 with gofakes3),
// and it is about as light as minio-go when built this way.
//
// Each object is one S3 object: a small header (magic, lengths, CRC-32C of
// key and metadata), the cache key, the encoded tier.Meta, then the body.
// The stored headers are thus not limited by S3's 2 KB user-metadata limit,
// and a Get is one request. Uploads are spooled (memory, then a temp file)
// and sent with a known length, so no chunked signing is needed.
//
// Every call has timeouts, and a circuit breaker skips the store after
// repeated failures (counted), letting one probe through after a cooldown.
// A sweeper keeps the prefix within a byte budget: oldest objects first,
// but an object hit since the previous sweep gets another round
// (FIFO-reinsertion, the main-queue half of S3-FIFO; S3 has no access time).
//
// It owns L3 storage only. It must not know HTTP caching rules.
package l3

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-edge/meridian/gateway/cache/tier"
)

// ErrUnavailable is returned while the circuit breaker is open: the store
// failed repeatedly and is skipped until the cooldown ends.
var ErrUnavailable = errors.New("l3: object store unavailable (circuit open); skipping it")

// Options configures the tier.
type Options struct {
	// Endpoint is the S3 server's base URL, e.g. "http://127.0.0.1:9000".
	// Empty means AWS S3 in Region. Path-style addressing is used.
	Endpoint string
	// Region signs requests. Default "us-east-1".
	Region string
	// Bucket holds the region's cache. Required. It is created if missing.
	Bucket string
	// Prefix is prepended to every object name, e.g. "eu-west/". Lets
	// several regions or deployments share a bucket.
	Prefix string
	// AccessKey and SecretKey are the static credentials.
	AccessKey, SecretKey string
	// Timeout bounds connecting and waiting for a response's headers.
	// Default 2s.
	Timeout time.Duration
	// PutTimeout bounds one whole upload. Default 60s.
	PutTimeout time.Duration
	// Bytes is the budget the sweeper enforces. Default 100 GiB.
	Bytes int64
	// MaxObject is the largest body stored. Default 1 GiB; at most 5 GiB
	// (one S3 PUT).
	MaxObject int64
	// SweepInterval is how often the sweeper lists the prefix. Default 1m;
	// negative disables it (Sweep can still be called).
	SweepInterval time.Duration
	// FailureThreshold consecutive failures open the circuit. Default 5.
	FailureThreshold int
	// Cooldown is how long an open circuit skips the store. Default 10s.
	Cooldown time.Duration
	// SpoolDir holds uploads larger than 8 MiB while they are written.
	// Default os.TempDir().
	SpoolDir string
	// Logger receives failures and sweeps; nil discards.
	Logger *slog.Logger
	// Registerer receives the tier's metrics; nil registers nothing.
	Registerer prometheus.Registerer
}

// Counters are the tier's event counts since New.
type Counters struct {
	Hits, Misses int64
	// Failures counts operations that failed (network, timeout, 5xx, bad object).
	Failures int64
	// Skipped counts operations refused because the circuit was open.
	Skipped int64
	// CircuitOpened counts transitions to open; CircuitOpen is 1 while open.
	CircuitOpened, CircuitOpen int64
	Stored                     int64
	// Evictions counts objects the sweeper deleted for the budget.
	Evictions int64
	Sweeps    int64
}

// Tier is the S3 tier. It implements tier.Tier, tier.Scanner and tier.Stats.
type Tier struct {
	s3        *s3.Client
	bucket    string
	prefix    string
	putTO     time.Duration
	budget    int64
	maxObject int64
	spoolDir  string
	br        *breaker
	log       *slog.Logger

	bucketOK atomic.Bool

	hitMu sync.Mutex
	hit   map[string]struct{} // object names hit since the last sweep

	usageObjects, usageBytes atomic.Int64
	c                        struct {
		hits, misses, failures, skipped, stored, evictions, sweeps atomic.Int64
	}

	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed atomic.Bool
}

const (
	magic      = "MRL3"
	headerSize = 17 // magic, version, keyLen u32, metaLen u32, crc u32
	memSpool   = 8 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// New creates the tier and starts its sweeper. It does not fail when the
// store is unreachable: the tier then skips it until it answers.
func New(opts Options) (*Tier, error) {
	if opts.Bucket == "" {
		return nil, errors.New("l3: Bucket is required; set the region's cache bucket")
	}
	if opts.Region == "" {
		opts.Region = "us-east-1"
	}
	if opts.Timeout == 0 {
		opts.Timeout = 2 * time.Second
	}
	if opts.PutTimeout == 0 {
		opts.PutTimeout = 60 * time.Second
	}
	if opts.Bytes == 0 {
		opts.Bytes = 100 << 30
	}
	if opts.MaxObject == 0 {
		opts.MaxObject = 1 << 30
	}
	if opts.MaxObject < 0 || opts.MaxObject > 5<<30 {
		return nil, fmt.Errorf("l3: MaxObject %d must be between 1 and 5 GiB (one S3 PUT)", opts.MaxObject)
	}
	if opts.Bytes < 0 || opts.Timeout < 0 || opts.PutTimeout < 0 || opts.Cooldown < 0 || opts.FailureThreshold < 0 {
		return nil, errors.New("l3: Bytes, Timeout, PutTimeout, Cooldown and FailureThreshold must not be negative")
	}
	if opts.SweepInterval == 0 {
		opts.SweepInterval = time.Minute
	}
	if opts.FailureThreshold == 0 {
		opts.FailureThreshold = 5
	}
	if opts.Cooldown == 0 {
		opts.Cooldown = 10 * time.Second
	}
	if opts.SpoolDir == "" {
		opts.SpoolDir = os.TempDir()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Endpoint != "" && !strings.HasPrefix(opts.Endpoint, "http://") && !strings.HasPrefix(opts.Endpoint, "https://") {
		return nil, fmt.Errorf("l3: Endpoint %q must be an http:// or https:// URL such as http://127.0.0.1:9000", opts.Endpoint)
	}
	if opts.Prefix != "" && !strings.HasSuffix(opts.Prefix, "/") {
		opts.Prefix += "/"
	}
	transport := &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: opts.Timeout, KeepAlive: 30 * time.Second}).DialContext,
		ResponseHeaderTimeout: opts.Timeout,
		TLSHandshakeTimeout:   opts.Timeout,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
	}
	so := s3.Options{
		Region:       opts.Region,
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(opts.AccessKey, opts.SecretKey, ""),
		HTTPClient:   &http.Client{Transport: transport},
		// Checksums only where S3 requires them: S3-compatible servers vary
		// in their support of the newer default trailing checksums.
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
		// The breaker decides about retrying; SDK retries would only make a
		// dead store slower to skip.
		RetryMaxAttempts: 1,
	}
	if opts.Endpoint != "" {
		so.BaseEndpoint = aws.String(opts.Endpoint)
	}
	t := &Tier{
		s3: s3.New(so), bucket: opts.Bucket, prefix: opts.Prefix, putTO: opts.PutTimeout,
		budget: opts.Bytes, maxObject: opts.MaxObject, spoolDir: opts.SpoolDir, log: opts.Logger,
		br:  &breaker{threshold: opts.FailureThreshold, cooldown: opts.Cooldown, now: time.Now},
		hit: map[string]struct{}{},
	}
	if err := t.register(opts.Registerer); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.cancel = cancel
	ectx, ecancel := context.WithTimeout(ctx, opts.Timeout)
	if err := t.ensureBucket(ectx); err != nil {
		t.log.Warn("l3: object store not ready; the tier is skipped until it answers", "endpoint", opts.Endpoint, "bucket", opts.Bucket, "err", err)
	}
	ecancel()
	if opts.SweepInterval > 0 {
		t.wg.Add(1)
		go t.sweepLoop(ctx, opts.SweepInterval)
	}
	return t, nil
}

func (t *Tier) register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	counter := func(name, help string, v *atomic.Int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "meridian", Subsystem: "cache_l3", Name: name, Help: help},
			func() float64 { return float64(v.Load()) })
	}
	cs := []prometheus.Collector{
		counter("hits_total", "Objects served from the object-store tier.", &t.c.hits),
		counter("misses_total", "Lookups the object-store tier could not answer.", &t.c.misses),
		counter("failures_total", "Object-store operations that failed.", &t.c.failures),
		counter("skipped_total", "Operations skipped because the circuit was open.", &t.c.skipped),
		counter("evictions_total", "Objects deleted by the sweeper to stay within the budget.", &t.c.evictions),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "meridian", Subsystem: "cache_l3", Name: "circuit_open", Help: "1 while the object store is skipped."},
			func() float64 {
				if open, _ := t.br.state(); open {
					return 1
				}
				return 0
			}),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("l3: register metrics: %w", err)
		}
	}
	return nil
}

// ensureBucket creates the bucket unless it exists.
func (t *Tier) ensureBucket(ctx context.Context) error {
	if t.bucketOK.Load() {
		return nil
	}
	_, err := t.s3.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &t.bucket})
	if err == nil {
		t.bucketOK.Store(true)
		return nil
	}
	if status(err) != http.StatusNotFound {
		return fmt.Errorf("l3: check bucket %q: %w", t.bucket, err)
	}
	_, err = t.s3.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &t.bucket})
	var owned *types.BucketAlreadyOwnedByYou
	var exists *types.BucketAlreadyExists
	if err != nil && !errors.As(err, &owned) && !errors.As(err, &exists) {
		return fmt.Errorf("l3: create bucket %q: %w", t.bucket, err)
	}
	t.bucketOK.Store(true)
	return nil
}

func status(err error) int {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// objectName maps a cache key to its object: prefix + two hex digits + 32
// hex digits of SHA-256. The key itself is stored in the object and checked.
func (t *Tier) objectName(key string) string {
	sum := sha256.Sum256([]byte(key))
	h := hex.EncodeToString(sum[:16])
	return t.prefix + h[:2] + "/" + h
}

// outcome feeds the breaker: nil and "not found" are healthy answers, a
// caller's cancellation says nothing, anything else is a failure.
func (t *Tier) outcome(ctx context.Context, err error) {
	switch {
	case err == nil || status(err) == http.StatusNotFound:
		t.br.success()
	case ctx.Err() != nil && errors.Is(err, ctx.Err()):
		t.br.neutral()
	default:
		t.c.failures.Add(1)
		t.br.failure()
		if open, _ := t.br.state(); open {
			t.log.Warn("l3: object store failing; skipping it for a while", "err", err)
		}
	}
}

func (t *Tier) allow() error {
	if t.closed.Load() {
		return errors.New("l3: tier is closed")
	}
	if !t.br.allow() {
		t.c.skipped.Add(1)
		return ErrUnavailable
	}
	return nil
}

// Name implements tier.Tier.
func (t *Tier) Name() string { return "l3" }

// MaxObject returns the largest body the tier stores.
func (t *Tier) MaxObject() int64 { return t.maxObject }

// Counters returns event counts since New.
func (t *Tier) Counters() Counters {
	open, opened := t.br.state()
	c := Counters{
		Hits: t.c.hits.Load(), Misses: t.c.misses.Load(), Failures: t.c.failures.Load(), Skipped: t.c.skipped.Load(),
		CircuitOpened: opened, Stored: t.c.stored.Load(), Evictions: t.c.evictions.Load(), Sweeps: t.c.sweeps.Load(),
	}
	if open {
		c.CircuitOpen = 1
	}
	return c
}

// Usage implements tier.Stats: what the last sweep listed plus what this
// process stored since (other PoPs' stores show after the next sweep).
func (t *Tier) Usage() (objects, bytes int64) { return t.usageObjects.Load(), t.usageBytes.Load() }

// Get implements tier.Tier. It returns ErrUnavailable while the circuit is
// open, and tier.ErrNotFound for a missing or damaged object.
func (t *Tier) Get(ctx context.Context, key string) (*tier.Object, error) {
	if err := t.allow(); err != nil {
		return nil, err
	}
	name := t.objectName(key)
	// The body may stream for long; only connecting and the response
	// headers are bounded (by the transport's timeouts).
	out, err := t.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: &t.bucket, Key: &name})
	t.outcome(ctx, err)
	if err != nil {
		if status(err) == http.StatusNotFound {
			t.c.misses.Add(1)
			return nil, tier.ErrNotFound
		}
		return nil, fmt.Errorf("l3: get %s: %w", name, err)
	}
	gotKey, m, hdrLen, err := readHead(out.Body)
	if err != nil || gotKey != key {
		out.Body.Close()
		t.c.misses.Add(1)
		if err != nil {
			t.c.failures.Add(1)
			t.log.Warn("l3: damaged object; deleting it", "object", name, "err", err)
			_ = t.Delete(ctx, key)
		}
		return nil, tier.ErrNotFound
	}
	t.c.hits.Add(1)
	t.hitMu.Lock()
	if len(t.hit) < 1<<17 {
		t.hit[name] = struct{}{}
	}
	t.hitMu.Unlock()
	return &tier.Object{Meta: m, Body: &objectBody{
		t: t, ctx: ctx, name: name, etag: aws.ToString(out.ETag), hdrLen: hdrLen, size: m.Size, rc: out.Body,
	}}, nil
}

// readHead reads and verifies an object's header, key and metadata, and
// returns the offset of the body in the object.
func readHead(r io.Reader) (string, *tier.Meta, int64, error) {
	var h [headerSize]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return "", nil, 0, fmt.Errorf("read header: %w", err)
	}
	if string(h[:4]) != magic || h[4] != 1 {
		return "", nil, 0, errors.New("bad magic or version")
	}
	kl := binary.LittleEndian.Uint32(h[5:])
	ml := binary.LittleEndian.Uint32(h[9:])
	if kl > 1<<20 || ml > 1<<26 {
		return "", nil, 0, errors.New("implausible header lengths")
	}
	b := make([]byte, kl+ml)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", nil, 0, fmt.Errorf("read key and meta: %w", err)
	}
	if crc32.Checksum(b, castagnoli) != binary.LittleEndian.Uint32(h[13:]) {
		return "", nil, 0, errors.New("header checksum mismatch")
	}
	m, _, err := tier.DecodeMeta(b[kl:])
	if err != nil {
		return "", nil, 0, err
	}
	if m.Size < 0 {
		return "", nil, 0, errors.New("negative body size")
	}
	return string(b[:kl]), m, headerSize + int64(kl) + int64(ml), nil
}

func appendHead(dst []byte, key string, meta []byte) []byte {
	var h [headerSize]byte
	copy(h[:], magic)
	h[4] = 1
	binary.LittleEndian.PutUint32(h[5:], uint32(len(key)))
	binary.LittleEndian.PutUint32(h[9:], uint32(len(meta)))
	c := crc32.Update(0, castagnoli, []byte(key))
	binary.LittleEndian.PutUint32(h[13:], crc32.Update(c, castagnoli, meta))
	dst = append(dst, h[:]...)
	dst = append(dst, key...)
	return append(dst, meta...)
}

// objectBody streams an object's body and seeks: a seek drops the current
// stream and the next read issues a ranged GET from the new position,
// conditional on the object's ETag (so a copy replaced meanwhile is an
// error, never a mix of two objects). A stream that ends before Meta.Size
// is an error, never a short body passed off as complete.
type objectBody struct {
	t      *Tier
	ctx    context.Context
	name   string
	etag   string
	hdrLen int64
	size   int64
	pos    int64
	rc     io.ReadCloser // positioned at pos, or nil
}

func (b *objectBody) Read(p []byte) (int, error) {
	if b.pos >= b.size {
		return 0, io.EOF
	}
	if b.rc == nil {
		if err := b.open(); err != nil {
			return 0, err
		}
	}
	if rest := b.size - b.pos; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := b.rc.Read(p)
	b.pos += int64(n)
	if err == io.EOF {
		if b.pos < b.size {
			return n, fmt.Errorf("l3: object %s ended %d bytes short: %w", b.name, b.size-b.pos, io.ErrUnexpectedEOF)
		}
		err = nil
	}
	return n, err
}

// open starts a ranged GET at b.pos.
func (b *objectBody) open() error {
	if err := b.t.allow(); err != nil {
		return err
	}
	rng := fmt.Sprintf("bytes=%d-%d", b.hdrLen+b.pos, b.hdrLen+b.size-1)
	in := &s3.GetObjectInput{Bucket: &b.t.bucket, Key: &b.name, Range: &rng}
	if b.etag != "" {
		in.IfMatch = &b.etag
	}
	out, err := b.t.s3.GetObject(b.ctx, in)
	if st := status(err); st == http.StatusPreconditionFailed || st == http.StatusNotFound {
		b.t.br.success()
		return fmt.Errorf("l3: object %s was replaced or deleted while being read", b.name)
	}
	b.t.outcome(b.ctx, err)
	if err != nil {
		return fmt.Errorf("l3: ranged get %s: %w", b.name, err)
	}
	b.rc = out.Body
	return nil
}

// Seek implements io.Seeker over the body (not the stored header).
func (b *objectBody) Seek(off int64, whence int) (int64, error) {
	off, err := seekTarget(off, whence, b.pos, b.size)
	if err != nil {
		return 0, err
	}
	off = min(off, b.size)
	if off != b.pos && b.rc != nil {
		b.rc.Close()
		b.rc = nil
	}
	b.pos = off
	return off, nil
}

func (b *objectBody) Close() error {
	if b.rc == nil {
		return nil
	}
	err := b.rc.Close()
	b.rc = nil
	return err
}

// Put implements tier.Tier. The body is spooled and uploaded on Commit,
// under ctx and PutTimeout.
func (t *Tier) Put(ctx context.Context, key string, meta *tier.Meta) (tier.Writer, error) {
	if meta.Size > t.maxObject {
		return nil, tier.ErrTooLarge
	}
	if err := t.allow(); err != nil {
		return nil, err
	}
	t.br.neutral() // Put itself does not talk to the store; Commit does.
	return &writer{t: t, ctx: ctx, key: key, meta: meta.Clone()}, nil
}

type writer struct {
	t      *Tier
	ctx    context.Context
	key    string
	meta   *tier.Meta
	mem    []byte
	file   *os.File
	n      int64
	failed error
	done   bool
}

func (w *writer) Write(p []byte) (int, error) {
	if w.done || w.failed != nil {
		return len(p), nil
	}
	if w.n+int64(len(p)) > w.t.maxObject {
		w.failed = tier.ErrTooLarge
		return len(p), nil
	}
	w.n += int64(len(p))
	if w.file == nil && len(w.mem)+len(p) <= memSpool {
		w.mem = append(w.mem, p...)
		return len(p), nil
	}
	if w.file == nil {
		f, err := os.CreateTemp(w.t.spoolDir, "meridian-l3-*")
		if err != nil {
			w.failed = fmt.Errorf("l3: spool upload in %s: %w", w.t.spoolDir, err)
			return len(p), nil
		}
		w.file = f
		if _, err := f.Write(w.mem); err != nil {
			w.failed = fmt.Errorf("l3: spool upload: %w", err)
			return len(p), nil
		}
		w.mem = nil
	}
	if _, err := w.file.Write(p); err != nil {
		w.failed = fmt.Errorf("l3: spool upload: %w", err)
	}
	return len(p), nil
}

func (w *writer) cleanup() {
	if w.file != nil {
		w.file.Close()
		_ = os.Remove(w.file.Name())
		w.file = nil
	}
	w.mem = nil
}

func (w *writer) Abort() {
	if !w.done {
		w.done = true
		w.cleanup()
	}
}

// Commit uploads the object with one PUT of known length.
func (w *writer) Commit() error {
	if w.done {
		return errors.New("l3: Commit after Commit or Abort")
	}
	w.done = true
	defer w.cleanup()
	if w.failed != nil {
		return w.failed
	}
	t := w.t
	if err := t.allow(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(w.ctx, t.putTO)
	defer cancel()
	if err := t.ensureBucket(ctx); err != nil {
		t.outcome(ctx, err)
		return err
	}
	m := *w.meta
	m.Size = w.n
	head := appendHead(nil, w.key, tier.AppendMeta(nil, &m))
	var body io.ReadSeeker
	if w.file != nil {
		body = newConcat(bytes.NewReader(head), io.NewSectionReader(w.file, 0, w.n))
	} else {
		body = newConcat(bytes.NewReader(head), bytes.NewReader(w.mem))
	}
	name := t.objectName(w.key)
	size := int64(len(head)) + w.n
	_, err := t.s3.PutObject(ctx, &s3.PutObjectInput{
		Bucket: &t.bucket, Key: &name, Body: body, ContentLength: aws.Int64(size),
		ContentType: aws.String("application/vnd.meridian.cache-object"),
	})
	t.outcome(ctx, err)
	if err != nil {
		return fmt.Errorf("l3: put %s: %w", name, err)
	}
	t.c.stored.Add(1)
	t.usageObjects.Add(1)
	t.usageBytes.Add(size)
	return nil
}

// Delete implements tier.Tier.
func (t *Tier) Delete(ctx context.Context, key string) error {
	if err := t.allow(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, t.putTO)
	defer cancel()
	name := t.objectName(key)
	_, err := t.s3.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &t.bucket, Key: &name})
	t.outcome(ctx, err)
	if err != nil && status(err) != http.StatusNotFound {
		return fmt.Errorf("l3: delete %s: %w", name, err)
	}
	return nil
}

type listed struct {
	name string
	size int64
	mod  time.Time
}

// list returns every object under the prefix.
func (t *Tier) list(ctx context.Context) ([]listed, error) {
	var out []listed
	p := s3.NewListObjectsV2Paginator(t.s3, &s3.ListObjectsV2Input{Bucket: &t.bucket, Prefix: aws.String(t.prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		t.outcome(ctx, err)
		if err != nil {
			return nil, fmt.Errorf("l3: list %s/%s: %w", t.bucket, t.prefix, err)
		}
		for _, o := range page.Contents {
			l := listed{name: aws.ToString(o.Key), size: aws.ToInt64(o.Size)}
			if o.LastModified != nil {
				l.mod = *o.LastModified
			}
			out = append(out, l)
		}
	}
	return out, nil
}

// Scan implements tier.Scanner: it lists the prefix and reads each object's
// header (one ranged GET per object), so it is slow on a big bucket; purges
// stay correct without it because the cache checks purge records on read.
func (t *Tier) Scan(ctx context.Context, fn func(key string, meta *tier.Meta) bool) error {
	if err := t.allow(); err != nil {
		return err
	}
	objs, err := t.list(ctx)
	if err != nil {
		return err
	}
	for _, o := range objs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !t.br.allow() {
			t.c.skipped.Add(1)
			return ErrUnavailable
		}
		out, err := t.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: &t.bucket, Key: aws.String(o.name), Range: aws.String("bytes=0-65535")})
		t.outcome(ctx, err)
		if err != nil {
			if status(err) == http.StatusNotFound {
				continue // deleted meanwhile
			}
			return fmt.Errorf("l3: scan %s: %w", o.name, err)
		}
		key, m, _, err := readHead(out.Body)
		out.Body.Close()
		if err != nil {
			continue // damaged or with headers over 64 KiB: left to the sweeper
		}
		if !fn(key, m) {
			return nil
		}
	}
	return nil
}

func (t *Tier) sweepLoop(ctx context.Context, every time.Duration) {
	defer t.wg.Done()
	tk := time.NewTicker(every)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
			if err := t.Sweep(ctx); err != nil && ctx.Err() == nil && !errors.Is(err, ErrUnavailable) {
				t.log.Warn("l3: sweep failed", "err", err)
			}
		}
	}
}

// Sweep lists the prefix and, while it holds more than the budget, deletes
// objects oldest first; an object hit through this tier since the previous
// sweep is passed over once. It updates Usage.
func (t *Tier) Sweep(ctx context.Context) error {
	if err := t.allow(); err != nil {
		return err
	}
	t.c.sweeps.Add(1)
	objs, err := t.list(ctx)
	if err != nil {
		return err
	}
	t.hitMu.Lock()
	hit := t.hit
	t.hit = map[string]struct{}{}
	t.hitMu.Unlock()
	var total int64
	for _, o := range objs {
		total += o.size
	}
	sort.Slice(objs, func(i, j int) bool { return objs[i].mod.Before(objs[j].mod) })
	count := int64(len(objs))
	for pass := 0; pass < 2 && total > t.budget; pass++ {
		for i := range objs {
			o := &objs[i]
			if total <= t.budget {
				break
			}
			if o.name == "" {
				continue
			}
			if _, ok := hit[o.name]; ok && pass == 0 {
				continue
			}
			_, err := t.s3.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &t.bucket, Key: aws.String(o.name)})
			t.outcome(ctx, err)
			if err != nil && status(err) != http.StatusNotFound {
				t.usageObjects.Store(count)
				t.usageBytes.Store(total)
				return fmt.Errorf("l3: sweep delete %s: %w", o.name, err)
			}
			total -= o.size
			count--
			o.name = ""
			t.c.evictions.Add(1)
		}
	}
	t.usageObjects.Store(count)
	t.usageBytes.Store(total)
	return nil
}

// Close stops the sweeper.
func (t *Tier) Close() error {
	if !t.closed.CompareAndSwap(false, true) {
		return nil
	}
	t.cancel()
	t.wg.Wait()
	return nil
}

// concat is an io.ReadSeeker over two ReadSeekers of known size (the SDK
// needs to seek to sign and to rewind).
type concat struct {
	parts []io.ReadSeeker
	sizes []int64
	off   int64
	total int64
}

func newConcat(parts ...io.ReadSeeker) *concat {
	c := &concat{parts: parts}
	for _, p := range parts {
		n, _ := p.Seek(0, io.SeekEnd)
		_, _ = p.Seek(0, io.SeekStart)
		c.sizes = append(c.sizes, n)
		c.total += n
	}
	return c
}

func (c *concat) Read(b []byte) (int, error) {
	base := int64(0)
	for i, p := range c.parts {
		if c.off < base+c.sizes[i] {
			if _, err := p.Seek(c.off-base, io.SeekStart); err != nil {
				return 0, err
			}
			n, err := p.Read(b[:min(int64(len(b)), base+c.sizes[i]-c.off)])
			c.off += int64(n)
			if err == io.EOF {
				err = nil
			}
			return n, err
		}
		base += c.sizes[i]
	}
	return 0, io.EOF
}

func (c *concat) Seek(off int64, whence int) (int64, error) {
	off, err := seekTarget(off, whence, c.off, c.total)
	if err != nil {
		return 0, err
	}
	c.off = off
	return off, nil
}

// seekTarget resolves an io.Seeker offset against the current position and
// the size.
func seekTarget(off int64, whence int, cur, size int64) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		off += cur
	case io.SeekEnd:
		off += size
	default:
		return 0, errors.New("l3: bad whence")
	}
	if off < 0 {
		return 0, errors.New("l3: seek before the start")
	}
	return off, nil
}
