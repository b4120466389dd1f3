package l2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"runtime/debug"
	"sync"
	"unsafe"

	"github.com/zeebo/xxh3"

	"github.com/meridian-edge/meridian/gateway/cache/tier"
)

// bytesBody is an in-memory body that can seek (for Range) and close. Its
// buffer goes back to the tier's pool on Close; reading after Close is not
// allowed (as for any closed body).
type bytesBody struct {
	bytes.Reader
	pool *sync.Pool // where buf goes back on Close
	buf  *[]byte
}

func (b *bytesBody) Close() error {
	if b.buf != nil {
		b.pool.Put(b.buf)
		b.pool, b.buf = nil, nil
		b.Reset(nil)
	}
	return nil
}

// bytesObject is a hit read into a pooled buffer: the object and its body
// in one allocation.
type bytesObject struct {
	obj  tier.Object
	body bytesBody
}

// blockObject is a hit streamed block by block: the object and its body in
// one allocation.
type blockObject struct {
	obj tier.Object
	r   blockReader
}

// One object is one file:
//
//	header (32 bytes) | key | body | block table | encoded tier.Meta
//
// The header holds the format version, the lengths, a CRC-32C over the
// header fields, key and meta (headCRC), and a CRC-32C over the block table
// (tableCRC). The block table holds one checksum per blockSize bytes of
// body, so a reader verifies each block before handing it out, and a ranged
// read verifies only the blocks it touches. A file is written under tmp/ and
// renamed into place only after the header is complete, so a crash leaves
// either the old file, the new file, or a temp file that Open removes; a
// torn or flipped file fails its checksums. The meta comes last so that it
// is encoded at Commit, when the body length is known, and so that
// UpdateMeta copies the body unchanged.
//
// Two versions differ only in the block table: version 1 holds a CRC-32C
// (4 bytes) per block, version 2 an XXH3-64 (8 bytes). New files are
// version 2: verifying the body is the bulk of a hit's own CPU, and XXH3
// runs at 40-49 GB/s on the PoP's AVX2/AVX-512 cores against 16-20 GB/s for
// CRC-32C (SSE4.2) on hot 32 KiB blocks, so a 1 MiB hit spends about 25 µs
// instead of 60 µs verifying. Version 1 files (written before) are still
// read and verified with CRC-32C until they are evicted or replaced;
// UpdateMeta keeps a file's version (it copies the table unchanged).
const (
	magic = "MRL2"
	// versionCRC files hold a CRC-32C per body block.
	versionCRC = 1
	// versionXXH3 files hold an XXH3-64 per body block.
	versionXXH3 = 2
	// writeVersion is the version of files written now.
	writeVersion = versionXXH3
	headerSize   = 32
	// 32 KiB blocks: the size of the buffer io.Copy and net/http read
	// with, so a block can be read and verified straight into the caller's
	// buffer (see blockReader.Read).
	blockShift = 15
	blockSize  = 1 << blockShift
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errCorrupt marks a file that failed a checksum or could not be parsed.
var errCorrupt = errors.New("l2: corrupt object file")

// header is the fixed-size start of an object file.
type header struct {
	ver      uint8
	keyLen   uint32
	metaLen  uint32
	bodyLen  uint64
	tableCRC uint32
	headCRC  uint32
}

func (h *header) marshal(dst []byte) {
	copy(dst[0:4], magic)
	dst[4] = h.ver
	dst[5] = blockShift
	dst[6], dst[7] = 0, 0
	binary.LittleEndian.PutUint32(dst[8:], h.keyLen)
	binary.LittleEndian.PutUint32(dst[12:], h.metaLen)
	binary.LittleEndian.PutUint64(dst[16:], h.bodyLen)
	binary.LittleEndian.PutUint32(dst[24:], h.tableCRC)
	binary.LittleEndian.PutUint32(dst[28:], h.headCRC)
}

func parseHeader(b []byte) (header, error) {
	if len(b) < headerSize || string(b[0:4]) != magic {
		return header{}, fmt.Errorf("%w: bad magic", errCorrupt)
	}
	if v := b[4]; v != versionCRC && v != versionXXH3 || b[5] != blockShift {
		return header{}, fmt.Errorf("%w: unknown version %d or block size 1<<%d", errCorrupt, v, b[5])
	}
	h := header{
		ver:      b[4],
		keyLen:   binary.LittleEndian.Uint32(b[8:]),
		metaLen:  binary.LittleEndian.Uint32(b[12:]),
		bodyLen:  binary.LittleEndian.Uint64(b[16:]),
		tableCRC: binary.LittleEndian.Uint32(b[24:]),
		headCRC:  binary.LittleEndian.Uint32(b[28:]),
	}
	if h.keyLen > 1<<20 || h.metaLen > 1<<26 || h.bodyLen > 1<<50 {
		return header{}, fmt.Errorf("%w: implausible lengths", errCorrupt)
	}
	return h, nil
}

// headSum is the CRC-32C of the header's first 28 bytes, the key and the
// meta (both versions: these are a few hundred bytes, where CRC-32C is as
// fast as XXH3).
func headSum(hdr, key, meta []byte) uint32 {
	c := crc32.Update(0, castagnoli, hdr[:28])
	c = crc32.Update(c, castagnoli, key)
	return crc32.Update(c, castagnoli, meta)
}

// blockSum is the checksum of one body block in a file of version ver.
func blockSum(ver uint8, b []byte) uint64 {
	if ver == versionCRC {
		return uint64(crc32.Checksum(b, castagnoli))
	}
	return xxh3.Hash(b)
}

func blocks(bodyLen uint64) int { return int((bodyLen + blockSize - 1) >> blockShift) }

// fileSize is the length of a complete object file.
func (h *header) fileSize() int64 { return h.metaOff() + int64(h.metaLen) }

// sumSize is the width of one block-table entry.
func (h *header) sumSize() int64 {
	if h.ver == versionCRC {
		return 4
	}
	return 8
}

func (h *header) bodyOff() int64  { return headerSize + int64(h.keyLen) }
func (h *header) tableOff() int64 { return h.bodyOff() + int64(h.bodyLen) }
func (h *header) metaOff() int64  { return h.tableOff() + h.sumSize()*int64(blocks(h.bodyLen)) }

// parsed is an object file whose header, key, meta and block table have been
// verified; the body is verified block by block as it is read.
type parsed struct {
	hdr   header
	key   []byte
	meta  []byte
	table []byte // the block table as stored (verified against tableCRC)
}

// want is the stored checksum of body block i.
func (p *parsed) want(i int64) uint64 {
	if p.hdr.ver == versionCRC {
		return uint64(binary.LittleEndian.Uint32(p.table[4*i:]))
	}
	return binary.LittleEndian.Uint64(p.table[8*i:])
}

// verify checks b, body bytes from the block-aligned body offset lo, block
// by block against the table; it returns the first bad block's error.
func (p *parsed) verify(b []byte, lo int64) error {
	for i := 0; i < len(b); i += blockSize {
		bi := (lo + int64(i)) >> blockShift
		if blockSum(p.hdr.ver, b[i:min(i+blockSize, len(b))]) != p.want(bi) {
			return fmt.Errorf("%w: body block %d checksum mismatch", errCorrupt, bi)
		}
	}
	return nil
}

// checkTable verifies a block table's length and checksum.
func checkTable(tb []byte, h header) error {
	if int64(len(tb)) != h.sumSize()*int64(blocks(h.bodyLen)) {
		return fmt.Errorf("%w: short block table", errCorrupt)
	}
	if crc32.Checksum(tb, castagnoli) != h.tableCRC {
		return fmt.Errorf("%w: block table checksum mismatch", errCorrupt)
	}
	return nil
}

// readHead reads and verifies an object file's header, key, block table and
// meta through f (the body is not read). size is the file's length from
// Stat; the file is rejected when it does not match the header.
func readHead(f *os.File, size int64) (p parsed, err error) {
	b := make([]byte, min(size, 4096))
	if _, err := f.ReadAt(b, 0); err != nil {
		return parsed{}, fmt.Errorf("%w: read: %v", errCorrupt, err)
	}
	h, err := parseHeader(b)
	if err != nil {
		return parsed{}, err
	}
	if h.fileSize() != size {
		return parsed{}, fmt.Errorf("%w: file is %d bytes, header says %d", errCorrupt, size, h.fileSize())
	}
	p.hdr = h
	if int64(len(b)) < h.bodyOff() {
		kb := make([]byte, h.keyLen)
		if _, err := f.ReadAt(kb, headerSize); err != nil {
			return parsed{}, fmt.Errorf("%w: read key: %v", errCorrupt, err)
		}
		p.key = kb
	} else {
		p.key = b[headerSize:h.bodyOff()]
	}
	tailOff := h.tableOff()
	tail := make([]byte, size-tailOff)
	if _, err := f.ReadAt(tail, tailOff); err != nil {
		return parsed{}, fmt.Errorf("%w: read table: %v", errCorrupt, err)
	}
	p.table = tail[:h.metaOff()-tailOff]
	p.meta = tail[h.metaOff()-tailOff:]
	if headSum(b, p.key, p.meta) != h.headCRC {
		return parsed{}, fmt.Errorf("%w: header checksum mismatch", errCorrupt)
	}
	if err := checkTable(p.table, h); err != nil {
		return parsed{}, err
	}
	return p, nil
}

// parseWhole verifies a whole object file held in b, body included, and
// returns its parts; body and the parts alias b.
func parseWhole(b []byte) (p parsed, body []byte, err error) {
	if p, err = parseFile(b); err != nil {
		return parsed{}, nil, err
	}
	body = b[p.hdr.bodyOff():p.hdr.tableOff()]
	if err := p.verify(body, 0); err != nil {
		return parsed{}, nil, err
	}
	return p, body, nil
}

// parseFile verifies the header, key, meta and block table of a whole
// object file held (or mapped) in b; the body is not checked. The parts
// alias b.
func parseFile(b []byte) (p parsed, err error) {
	h, err := parseHeader(b)
	if err != nil {
		return parsed{}, err
	}
	if h.fileSize() != int64(len(b)) {
		return parsed{}, fmt.Errorf("%w: file is %d bytes, header says %d", errCorrupt, len(b), h.fileSize())
	}
	p.hdr = h
	p.key = b[headerSize:h.bodyOff()]
	p.meta = b[h.metaOff():]
	if headSum(b, p.key, p.meta) != h.headCRC {
		return parsed{}, fmt.Errorf("%w: header checksum mismatch", errCorrupt)
	}
	p.table = b[h.tableOff():h.metaOff()]
	if err := checkTable(p.table, h); err != nil {
		return parsed{}, err
	}
	return p, nil
}

// blockReader streams body bytes [off, end) of a large file, verifying each
// block before returning any of its bytes. On a checksum mismatch it calls
// the file corrupt once and returns an error wrapping errCorrupt, so corrupt bytes
// never reach the caller.
//
// The body comes from a read-only mapping of the file (mb) or, where the
// file could not be mapped, through f with pread into buffers. From the
// mapping, a step is verified in place and written from there: one copy
// (into the socket) instead of two (pread, then the socket). The bytes
// written are the page-cache bytes just hashed, so every byte served was
// verified on this read. (Unlike a pread copy, this trusts that nobody
// writes into the file in the microseconds between the hash and the write:
// the tier never does, its files are renamed in and unlinked, which leaves
// a mapping intact.) A mapped page faults only when it cannot be read (an
// I/O error) or the file was truncated by another process; the fault is
// caught (debug.SetPanicOnFault) and handled as corruption instead of
// crashing the process.
//
// Besides Read and Seek it has a bulk path for serving a hit: WriteTo (used
// by io.Copy) verifies and writes up to chunkSize bytes at a time.
type blockReader struct {
	f        *os.File  // pread source, or nil
	mf       *openFile // the file's mapping (a reference), or nil
	m        []byte    // mf.m
	mb       []byte    // the body within m
	p        parsed
	start    int64 // body offset of the window's start
	off, end int64 // body offsets still to deliver
	buf      []byte
	pending  []byte // verified bytes not yet returned
	err      error
	file     fileRef    // reported corrupt once, on the first bad block
	bufs     *sync.Pool // where bufp goes back on Close
	bufp     *[]byte
	closed   bool
	// chunks hands out chunkSize buffers for WriteTo from f.
	chunks *sync.Pool
}

// catchFault, deferred with the previous SetPanicOnFault setting, turns a
// fault on the mapping into a corruption error in *err; other panics go on.
func (r *blockReader) catchFault(old bool, err *error) {
	debug.SetPanicOnFault(old)
	if ferr := faultError(recover(), r.m); ferr != nil {
		r.pending = nil
		r.err = ferr
		r.corrupt()
		*err = ferr
	}
}

// faultError returns an error for v, a recovered fault (with
// debug.SetPanicOnFault) at an address inside mapping m, or nil when v is
// nil; any other panic goes on. A mapped file faults when its page cannot be
// read (an I/O error) or no longer exists (the file was truncated).
func faultError(v any, m []byte) error {
	if v == nil {
		return nil
	}
	f, ok := v.(interface{ Addr() uintptr })
	base := uintptr(unsafe.Pointer(unsafe.SliceData(m)))
	if !ok || len(m) == 0 || f.Addr() < base || f.Addr()-base >= uintptr(len(m)) {
		panic(v)
	}
	return fmt.Errorf("%w: reading the mapped file faulted (an I/O error, or truncated by another process): %v", errCorrupt, v)
}

// mappedBody serves a small or mid-size body from its file's mapping; the
// whole file was verified by the Get that made it, so what it serves was
// verified on this read. A fault on the mapping (the file truncated by an
// outside hand) is an error, and the file is reported corrupt.
type mappedBody struct {
	r    bytes.Reader
	mf   *openFile
	m    []byte  // mf.m, kept after Close for catchFault
	file fileRef // reported corrupt on a fault
	// at is the file offset of the reader's first byte (for sendfile).
	at int64
}

// mappedObject is a hit served from a mapping: the object and its body in
// one allocation.
type mappedObject struct {
	obj  tier.Object
	body mappedBody
}

func (b *mappedBody) catchFault(old bool, err *error) {
	debug.SetPanicOnFault(old)
	if ferr := faultError(recover(), b.m); ferr != nil {
		*err = ferr
		b.r.Reset(nil)
		b.file.corrupt()
		b.file = fileRef{}
	}
}

func (b *mappedBody) Read(p []byte) (n int, err error) {
	defer b.catchFault(debug.SetPanicOnFault(true), &err)
	return b.r.Read(p)
}

// WriteTo hands the rest of the body to w in one Write, straight from the
// mapping, or, when w is a tier.FileWriter, as a range of the file: the
// same bytes (the file is never written in place), already verified, and
// not copied by the process.
func (b *mappedBody) WriteTo(w io.Writer) (n int64, err error) {
	if fw := b.mf.fileWriter(w); fw != nil && b.r.Len() > 0 {
		pos := b.r.Size() - int64(b.r.Len())
		n, err = fw.WriteFile(b.mf.fd, b.at+pos, int64(b.r.Len()))
		_, _ = b.r.Seek(pos+n, io.SeekStart)
		return n, err
	}
	defer b.catchFault(debug.SetPanicOnFault(true), &err)
	return b.r.WriteTo(w)
}

func (b *mappedBody) Seek(offset int64, whence int) (int64, error) {
	return b.r.Seek(offset, whence)
}

func (b *mappedBody) Close() error {
	if b.mf != nil {
		b.mf.release()
		b.mf = nil
		b.r.Reset(nil)
	}
	return nil
}

func (r *blockReader) Read(dst []byte) (n int, err error) {
	if r.closed {
		return 0, errClosed
	}
	if r.m != nil {
		defer r.catchFault(debug.SetPanicOnFault(true), &err)
	}
	if r.f != nil && len(r.pending) == 0 && r.err == nil && r.off < r.end && r.off&(blockSize-1) == 0 {
		// A whole block wanted and room for it: read and verify it in the
		// caller's buffer, saving a copy. Corrupt bytes are cleared and
		// reported as an error (n = 0), so they never count as returned.
		hi := min(r.off+blockSize, int64(r.p.hdr.bodyLen))
		if hi <= r.end && int64(len(dst)) >= hi-r.off {
			b := dst[:hi-r.off]
			if err := r.readVerified(b, r.off); err != nil {
				return 0, err
			}
			r.off = hi
			return len(b), nil
		}
	}
	for len(r.pending) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if r.off >= r.end {
			r.err = io.EOF
			return 0, io.EOF
		}
		r.fill()
	}
	n = copy(dst, r.pending)
	r.pending = r.pending[n:]
	return n, nil
}

// fill reads and verifies the block holding r.off.
func (r *blockReader) fill() {
	bi := r.off >> blockShift
	lo := bi << blockShift
	hi := min(lo+blockSize, int64(r.p.hdr.bodyLen))
	if r.m == nil && r.buf == nil {
		r.buf = make([]byte, blockSize)
	}
	b, err := r.step(lo, hi, r.buf)
	if err != nil {
		return
	}
	start := r.off - lo
	stop := min(hi, r.end) - lo
	r.pending = b[start:stop]
	r.off = lo + stop
}

// Seek implements io.Seeker within the body window the reader was opened
// with (offsets are relative to the window's start), so a caller can serve a
// Range from a whole-object Get: only the blocks read afterwards are read
// and verified.
func (r *blockReader) Seek(offset int64, whence int) (int64, error) {
	if r.closed {
		return 0, errClosed
	}
	switch whence {
	case io.SeekStart:
		offset += r.start
	case io.SeekCurrent:
		offset += r.off - int64(len(r.pending))
	case io.SeekEnd:
		offset += r.end
	default:
		return 0, errors.New("l2: bad whence")
	}
	if offset < r.start {
		return 0, errors.New("l2: seek before the start of the body")
	}
	r.off = min(offset, r.end)
	r.pending = nil
	if r.err == io.EOF {
		r.err = nil
	}
	return r.off - r.start, nil
}

var errClosed = errors.New("l2: read after Close")

// chunkSize is the largest read (and verification) of a WriteTo step: big
// enough that a 1 MiB body takes 4 preads and writes instead of 32, small
// enough to stay in the CPU cache between the read, the hash and the write
// (measured per 1 MiB hit: 64 KiB steps about 5 % and 1 MiB steps about 25 %
// more CPU than 256 KiB; from a mapping, 64 KiB +20 % and 1 MiB +12 %).
const chunkSize = 256 << 10

// sendChunk is the step of a WriteTo that sends file ranges
// (tier.FileWriter): nothing is copied, so a step only has to bound how
// much is verified before its first byte leaves (4 MiB: about 100 µs of
// hashing), and fewer, longer sendfile calls measured cheaper than 256 KiB
// ones on 1 MiB hits (bench/l2proxy/compare.sh with -sendfile).
const sendChunk = 4 << 20

// readVerified fills b with body bytes from body offset lo (block-aligned)
// through f and verifies every block in it; on a mismatch b is cleared, the
// file is reported corrupt and an error is returned.
// step returns the verified body bytes [lo, hi), whole blocks: from the
// mapping, or read into buf. A failure is recorded (r.err, and the file
// reported corrupt) and returned.
func (r *blockReader) step(lo, hi int64, buf []byte) ([]byte, error) {
	if r.m == nil {
		b := buf[:hi-lo]
		return b, r.readVerified(b, lo)
	}
	b := r.mb[lo:hi]
	if err := r.p.verify(b, lo); err != nil {
		r.err = err
		r.corrupt()
		return nil, err
	}
	return b, nil
}

func (r *blockReader) readVerified(b []byte, lo int64) error {
	if _, err := r.f.ReadAt(b, r.p.hdr.bodyOff()+lo); err != nil {
		clear(b)
		r.err = fmt.Errorf("%w: read body at %d: %v", errCorrupt, lo, err)
		r.corrupt()
		return r.err
	}
	if err := r.p.verify(b, lo); err != nil {
		clear(b)
		r.err = err
		r.corrupt()
		return r.err
	}
	return nil
}

// WriteTo implements io.WriterTo: io.Copy(w, body) streams the rest of the
// window in steps of up to chunkSize bytes, each verified block by block and
// then written (from the mapping, or from a pooled buffer filled by one
// pread), so what is written is exactly what was verified. A block that
// fails its checksum stops the stream with an error after the steps before
// it were written: the response is cut short (the caller closes a
// connection whose body is shorter than its Content-Length), and the bad
// bytes are never written.
func (r *blockReader) WriteTo(w io.Writer) (n int64, err error) {
	if r.closed {
		return 0, errClosed
	}
	if r.m != nil {
		defer r.catchFault(debug.SetPanicOnFault(true), &err)
	}
	for len(r.pending) > 0 {
		k, err := w.Write(r.pending)
		n += int64(k)
		r.pending = r.pending[k:]
		if err != nil {
			return n, err
		}
	}
	if r.err != nil {
		if r.err == io.EOF {
			return n, nil
		}
		return n, r.err
	}
	var buf []byte
	if r.m == nil {
		bp := r.chunks.Get().(*[]byte)
		defer r.chunks.Put(bp)
		buf = *bp
	}
	// From a mapping with its descriptor, a step verified in the mapping
	// goes out as a file range (sendfile): the same bytes, not copied.
	fw := r.mf.fileWriter(w)
	step := int64(chunkSize)
	if fw != nil {
		step = sendChunk
	}
	size := int64(r.p.hdr.bodyLen)
	for r.off < r.end {
		lo := r.off &^ (blockSize - 1)
		// Whole blocks up to the one holding the window's last byte.
		hi := min(lo+step, (r.end+blockSize-1)&^(blockSize-1), size)
		b, err := r.step(lo, hi, buf)
		if err != nil {
			return n, err
		}
		from, to := r.off, min(hi, r.end)
		var k int64
		if fw != nil {
			k, err = fw.WriteFile(r.mf.fd, r.p.hdr.bodyOff()+from, to-from)
		} else {
			var kw int
			kw, err = w.Write(b[from-lo : to-lo])
			k = int64(kw)
		}
		n += k
		r.off = from + k
		if err == nil && k < to-from {
			err = io.ErrShortWrite
		}
		if err != nil {
			return n, err
		}
	}
	r.err = io.EOF
	return n, nil
}

func (r *blockReader) corrupt() {
	r.file.corrupt()
	r.file = fileRef{}
}

func (r *blockReader) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	var err error
	if r.f != nil {
		err = r.f.Close()
		r.f = nil
	}
	r.pending = nil
	if r.mf != nil {
		r.mf.release()
		r.mf, r.m, r.mb = nil, nil, nil
	}
	r.buf = nil
	if r.bufp != nil {
		r.bufs.Put(r.bufp)
		r.bufp = nil
	}
	return err
}

// tableWriter accumulates a new file's block table as the body streams in.
type tableWriter struct {
	h     *xxh3.Hasher
	n     int64 // body bytes so far
	table []byte
}

func (t *tableWriter) write(p []byte) {
	if t.h == nil {
		t.h = xxh3.New()
	}
	for len(p) > 0 {
		room := blockSize - int(t.n&(blockSize-1))
		k := min(room, len(p))
		_, _ = t.h.Write(p[:k])
		t.n += int64(k)
		p = p[k:]
		if k == room {
			t.table = binary.LittleEndian.AppendUint64(t.table, t.h.Sum64())
			t.h.Reset()
		}
	}
}

// finish adds the last partial block's checksum and returns the table.
func (t *tableWriter) finish() []byte {
	if t.n&(blockSize-1) != 0 {
		t.table = binary.LittleEndian.AppendUint64(t.table, t.h.Sum64())
	}
	return t.table
}

func crc32Sum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }
