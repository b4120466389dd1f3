package l2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"sync"
)

// bytesBody is an in-memory body that can seek (for Range) and close. Its
// buffer goes back to the tier's pool on Close; reading after Close is not
// allowed (as for any closed body).
type bytesBody struct {
	*bytes.Reader
	release func()
}

func (b *bytesBody) Close() error {
	if b.release != nil {
		b.release()
		b.release = nil
		b.Reader = bytes.NewReader(nil)
	}
	return nil
}

// One object is one file:
//
//	header (32 bytes) | key | body | block table | encoded tier.Meta
//
// The header holds the lengths, a CRC-32C over the header fields, key and
// meta (headCRC), and a CRC-32C over the block table (tableCRC). The block
// table is one CRC-32C per blockSize bytes of body, so a reader verifies each
// block before handing it out, and a ranged read verifies only the blocks it
// touches. A file is written under tmp/ and renamed into place only after the
// header is complete, so a crash leaves either the old file, the new file, or
// a temp file that Open removes; a torn or flipped file fails its checksums.
// The meta comes last so that it is encoded at Commit, when the body length
// is known, and so that UpdateMeta copies the body unchanged.
const (
	magic      = "MRL2"
	version    = 1
	headerSize = 32
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
	keyLen   uint32
	metaLen  uint32
	bodyLen  uint64
	tableCRC uint32
	headCRC  uint32
}

func (h *header) marshal(dst []byte) {
	copy(dst[0:4], magic)
	dst[4] = version
	dst[5] = blockShift
	dst[6], dst[7] = 0, 0
	binary.LittleEndian.PutUint32(dst[8:], h.keyLen)
	binary.LittleEndian.PutUint32(dst[12:], h.metaLen)
	binary.LittleEndian.PutUint64(dst[16:], h.bodyLen)
	binary.LittleEndian.PutUint32(dst[24:], h.tableCRC)
	binary.LittleEndian.PutUint32(dst[28:], h.headCRC)
}

func parseHeader(b []byte) (header, error) {
	if len(b) < headerSize || string(b[0:4]) != magic || b[4] != version || b[5] != blockShift {
		return header{}, fmt.Errorf("%w: bad magic or version", errCorrupt)
	}
	h := header{
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

// headSum is the CRC-32C of the header's first 28 bytes, the key and the meta.
func headSum(hdr, key, meta []byte) uint32 {
	c := crc32.Update(0, castagnoli, hdr[:28])
	c = crc32.Update(c, castagnoli, key)
	return crc32.Update(c, castagnoli, meta)
}

func blocks(bodyLen uint64) int { return int((bodyLen + blockSize - 1) >> blockShift) }

// fileSize is the length of a complete object file.
func (h *header) fileSize() int64 { return h.metaOff() + int64(h.metaLen) }

func (h *header) bodyOff() int64  { return headerSize + int64(h.keyLen) }
func (h *header) tableOff() int64 { return h.bodyOff() + int64(h.bodyLen) }
func (h *header) metaOff() int64  { return h.tableOff() + 4*int64(blocks(h.bodyLen)) }

// parsed is an object file whose header, key, meta and block table have been
// verified; the body is verified block by block as it is read.
type parsed struct {
	hdr   header
	key   []byte
	meta  []byte
	table []uint32
}

// readHead reads and verifies an object file's header, key, block table and
// meta. size is the file's length from Stat; the file is rejected when it
// does not match the header. When the whole file is at most inline bytes it
// is read in one call and its body is verified and returned too.
func readHead(f *os.File, size, inline int64) (p parsed, body []byte, err error) {
	var b []byte
	if size <= inline {
		b = make([]byte, size)
	} else {
		b = make([]byte, min(size, 4096))
	}
	if _, err := f.ReadAt(b, 0); err != nil {
		return parsed{}, nil, fmt.Errorf("%w: read: %v", errCorrupt, err)
	}
	if size <= inline {
		return parseWhole(b)
	}
	h, err := parseHeader(b)
	if err != nil {
		return parsed{}, nil, err
	}
	if h.fileSize() != size {
		return parsed{}, nil, fmt.Errorf("%w: file is %d bytes, header says %d", errCorrupt, size, h.fileSize())
	}
	p.hdr = h
	tail := b // holds [tableOff, end) at offset h.tableOff() when inline
	if int64(len(b)) < h.bodyOff() {
		kb := make([]byte, h.keyLen)
		if _, err := f.ReadAt(kb, headerSize); err != nil {
			return parsed{}, nil, fmt.Errorf("%w: read key: %v", errCorrupt, err)
		}
		p.key = kb
	} else {
		p.key = b[headerSize:h.bodyOff()]
	}
	tailOff := h.tableOff()
	if size > inline {
		tail = make([]byte, size-tailOff)
		if _, err := f.ReadAt(tail, tailOff); err != nil {
			return parsed{}, nil, fmt.Errorf("%w: read table: %v", errCorrupt, err)
		}
	} else {
		tail = b[tailOff:]
		body = b[h.bodyOff():tailOff]
	}
	tb := tail[:h.metaOff()-tailOff]
	p.meta = tail[h.metaOff()-tailOff:]
	if headSum(b, p.key, p.meta) != h.headCRC {
		return parsed{}, nil, fmt.Errorf("%w: header checksum mismatch", errCorrupt)
	}
	if p.table, err = parseTable(tb, h); err != nil {
		return parsed{}, nil, err
	}
	if body != nil {
		if err := verifyBody(body, p.table); err != nil {
			return parsed{}, nil, err
		}
	}
	return p, body, nil
}

// parseWhole verifies a whole object file held in b and returns its parts;
// body aliases b.
func parseWhole(b []byte) (p parsed, body []byte, err error) {
	h, err := parseHeader(b)
	if err != nil {
		return parsed{}, nil, err
	}
	if h.fileSize() != int64(len(b)) {
		return parsed{}, nil, fmt.Errorf("%w: file is %d bytes, header says %d", errCorrupt, len(b), h.fileSize())
	}
	p.hdr = h
	p.key = b[headerSize:h.bodyOff()]
	body = b[h.bodyOff():h.tableOff()]
	p.meta = b[h.metaOff():]
	if headSum(b, p.key, p.meta) != h.headCRC {
		return parsed{}, nil, fmt.Errorf("%w: header checksum mismatch", errCorrupt)
	}
	// The table is checked in place, not decoded: the body is verified
	// here and now, so the hit allocates nothing for it.
	tb := b[h.tableOff():h.metaOff()]
	if len(tb) != 4*blocks(h.bodyLen) {
		return parsed{}, nil, fmt.Errorf("%w: short block table", errCorrupt)
	}
	if crc32.Checksum(tb, castagnoli) != h.tableCRC {
		return parsed{}, nil, fmt.Errorf("%w: block table checksum mismatch", errCorrupt)
	}
	for i := 0; i < len(tb)/4; i++ {
		lo := i << blockShift
		hi := min(lo+blockSize, len(body))
		if crc32.Checksum(body[lo:hi], castagnoli) != binary.LittleEndian.Uint32(tb[4*i:]) {
			return parsed{}, nil, fmt.Errorf("%w: body block %d checksum mismatch", errCorrupt, i)
		}
	}
	return p, body, nil
}

// verifyBody checks every block of body (held in memory) against the table.
func verifyBody(body []byte, table []uint32) error {
	for i, want := range table {
		lo := i << blockShift
		hi := min(lo+blockSize, len(body))
		if crc32.Checksum(body[lo:hi], castagnoli) != want {
			return fmt.Errorf("%w: body block %d checksum mismatch", errCorrupt, i)
		}
	}
	return nil
}

// blockReader streams body bytes [off, end) from f, reading whole blocks and
// verifying each one before returning any of its bytes. On a checksum
// mismatch it calls onCorrupt once and returns an error wrapping errCorrupt,
// so corrupt bytes never reach the caller.
//
// Besides Read and Seek it has a bulk path for serving a hit: WriteTo (used
// by io.Copy) reads and verifies chunks of up to chunkSize bytes at a time.
type blockReader struct {
	f         *os.File
	p         parsed
	start     int64 // body offset of the window's start
	off, end  int64 // body offsets still to deliver
	buf       []byte
	pending   []byte // verified bytes not yet returned
	err       error
	onCorrupt func()
	onClose   func()
	// chunks hands out chunkSize buffers for WriteTo.
	chunks *sync.Pool
}

func (r *blockReader) Read(dst []byte) (int, error) {
	if r.f == nil {
		return 0, errClosed
	}
	if len(r.pending) == 0 && r.err == nil && r.off < r.end && r.off&(blockSize-1) == 0 {
		// A whole block wanted and room for it: read and verify it in the
		// caller's buffer, saving a copy. Corrupt bytes are overwritten by
		// nothing and reported as an error (n = 0), so they never count as
		// returned.
		bi := r.off >> blockShift
		hi := min(r.off+blockSize, int64(r.p.hdr.bodyLen))
		if hi <= r.end && int64(len(dst)) >= hi-r.off {
			b := dst[:hi-r.off]
			if _, err := r.f.ReadAt(b, r.p.hdr.bodyOff()+r.off); err != nil {
				r.err = fmt.Errorf("%w: read block %d: %v", errCorrupt, bi, err)
				r.corrupt()
				return 0, r.err
			}
			if crc32.Checksum(b, castagnoli) != r.p.table[bi] {
				clear(b)
				r.err = fmt.Errorf("%w: body block %d checksum mismatch", errCorrupt, bi)
				r.corrupt()
				return 0, r.err
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
	n := copy(dst, r.pending)
	r.pending = r.pending[n:]
	return n, nil
}

// fill reads and verifies the block holding r.off.
func (r *blockReader) fill() {
	bi := r.off >> blockShift
	lo := bi << blockShift
	hi := min(lo+blockSize, int64(r.p.hdr.bodyLen))
	if r.buf == nil {
		r.buf = make([]byte, blockSize)
	}
	b := r.buf[:hi-lo]
	if _, err := r.f.ReadAt(b, r.p.hdr.bodyOff()+lo); err != nil {
		r.err = fmt.Errorf("%w: read block %d: %v", errCorrupt, bi, err)
		r.corrupt()
		return
	}
	if crc32.Checksum(b, castagnoli) != r.p.table[bi] {
		r.err = fmt.Errorf("%w: body block %d checksum mismatch", errCorrupt, bi)
		r.corrupt()
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
	if r.f == nil {
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
// enough to stay in the CPU cache between the read, the CRC and the write
// (measured per 1 MiB hit: 64 KiB steps about 5 % and 1 MiB steps about 25 %
// more CPU than 256 KiB).
const chunkSize = 256 << 10

// readVerified fills b with body bytes from body offset lo (block-aligned)
// and verifies every block in it; on a mismatch b is cleared, the file is
// reported corrupt and an error is returned.
func (r *blockReader) readVerified(b []byte, lo int64) error {
	if _, err := r.f.ReadAt(b, r.p.hdr.bodyOff()+lo); err != nil {
		clear(b)
		r.err = fmt.Errorf("%w: read body at %d: %v", errCorrupt, lo, err)
		r.corrupt()
		return r.err
	}
	for i := 0; i < len(b); i += blockSize {
		bi := (lo + int64(i)) >> blockShift
		if crc32.Checksum(b[i:min(i+blockSize, len(b))], castagnoli) != r.p.table[bi] {
			clear(b)
			r.err = fmt.Errorf("%w: body block %d checksum mismatch", errCorrupt, bi)
			r.corrupt()
			return r.err
		}
	}
	return nil
}

// WriteTo implements io.WriterTo: io.Copy(w, body) streams the rest of the
// window in steps of up to chunkSize bytes, each read with one pread into a
// pooled buffer, verified block by block, and written from that buffer, so
// what is written is exactly what was verified. A block that fails its
// checksum stops the stream with an error after the steps before it were
// written: the response is cut short (net/http closes a connection whose
// body is shorter than its Content-Length), and the bad bytes are never
// written.
func (r *blockReader) WriteTo(w io.Writer) (int64, error) {
	if r.f == nil {
		return 0, errClosed
	}
	var n int64
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
	bp := r.chunks.Get().(*[]byte)
	defer r.chunks.Put(bp)
	size := int64(r.p.hdr.bodyLen)
	for r.off < r.end {
		lo := r.off &^ (blockSize - 1)
		hi := min(lo+int64(len(*bp)), size)
		// Whole blocks up to the one holding the window's last byte.
		hi = min(hi, (r.end+blockSize-1)&^(blockSize-1), size)
		b := (*bp)[:hi-lo]
		if err := r.readVerified(b, lo); err != nil {
			return n, err
		}
		from, to := r.off, min(hi, r.end)
		k, err := w.Write(b[from-lo : to-lo])
		n += int64(k)
		r.off = from + int64(k)
		if err == nil && int64(k) < to-from {
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
	if r.onCorrupt != nil {
		r.onCorrupt()
		r.onCorrupt = nil
	}
}

func (r *blockReader) Close() error {
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f = nil
	r.pending = nil
	r.buf = nil
	if r.onClose != nil {
		r.onClose()
	}
	return err
}

func crc32Update(c uint32, b []byte) uint32 { return crc32.Update(c, castagnoli, b) }

func crc32Sum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

func le32(dst []byte, v uint32) []byte { return binary.LittleEndian.AppendUint32(dst, v) }

func parseTable(b []byte, h header) ([]uint32, error) {
	n := blocks(h.bodyLen)
	if len(b) != 4*n {
		return nil, fmt.Errorf("%w: short block table", errCorrupt)
	}
	if crc32.Checksum(b, castagnoli) != h.tableCRC {
		return nil, fmt.Errorf("%w: block table checksum mismatch", errCorrupt)
	}
	t := make([]uint32, n)
	for i := range t {
		t[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	return t, nil
}
