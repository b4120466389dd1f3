package native

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Metering: instead of wazero's WithCloseOnContextDone, which leaves the
// wasm code for Go at every loop iteration (about 13 ns each; 80% of a Go
// plugin's call time) and starts a goroutine per call, the native host
// rewrites each plugin once, at compile time, so that it counts its own work
// in a budget global and calls the host only when the budget runs out:
//
//   - every function entry and every loop header subtract 1 + n/64, n being
//     the static instruction count of the function or loop body;
//   - every bulk memory or table operation subtracts 1 + len/65536 (len is
//     the operation's length operand, read at run time);
//   - when the budget drops below zero the code calls the host's yield,
//     which calls runtime.Gosched (a Go safe point: the scheduler and a
//     stop-the-world GC proceed), ends the call if its deadline passed, and
//     returns a fresh budget.
//
// Why a plugin can then never hold the Go process: between two charges the
// code runs at most the instructions of one function or loop body once
// (straight-line code, forward branches, or calls, which charge at the
// callee's entry); every backward branch targets a loop header, which
// charges. So between two yields a plugin runs at most 64*meterBudget
// instructions plus bulk operations bounded by its memory cap: a few
// milliseconds. TestNativeLoopDoesNotStopTheWorld and the hostile loop
// plugins check it; the rewritten module is validated by wazero like any.
//
// The rewrite also turns every memory.grow into a call to the host's grow,
// which grows the memory the same way and notes a refusal: at the memory
// cap wazero's memory.grow returns -1 and says nothing else, and a guest
// whose allocator then traps (AssemblyScript's, hand-written wasm) prints
// nothing either. The note is how the host tells such a trap from others
// (instance.classify).

const (
	// meterModule, meterYield and meterGrow name the imports the rewrite
	// adds: yield, then grow, after the module's own imported functions.
	meterModule = "meridian:host/meter"
	meterYield  = "yield"
	meterGrow   = "grow"
	// meterBudget is what yield hands back: about 6.4M instructions.
	meterBudget = 100_000
	// meterUnit is how many instructions one budget unit stands for.
	meterUnit = 64
	// maxLocals bounds a function's locals (wazero's own limit is not
	// checked before it panics).
	maxLocals = 50_000
)

// errUnsupported says a module uses something the rewrite cannot meter.
var errUnsupported = errors.New("uses a wasm feature the native host cannot meter")

// errReservedImport refuses a plugin importing the metering function.
var errReservedImport = errors.New("the module is reserved for the host's metering")

type section struct {
	id   byte
	body []byte
}

// CheckBinary reports a module whose declared lengths exceed its size, or
// that wazero v1.9 would otherwise allocate gigabytes for or panic on before
// refusing it (a 20-byte module declaring a 4 GiB data segment, a function
// with 2^28 locals). It reads the module once and allocates in proportion to
// its size. The native engine runs it on every Compile; run it before
// plugins.SDKEngine.Compile too (for example on the upload path), which
// hands the bytes to wazero directly.
func CheckBinary(wasm []byte) error {
	_, err := meterModuleBytes(wasm)
	if err == nil || errors.Is(err, errUnsupported) || errors.Is(err, errReservedImport) {
		return nil
	}
	return fmt.Errorf("plugin is not a valid wasm module: %w", err)
}

// meterModuleBytes returns wasm rewritten with metering.
func meterModuleBytes(wasm []byte) ([]byte, error) {
	if len(wasm) < 8 || string(wasm[:4]) != "\x00asm" || binary.LittleEndian.Uint32(wasm[4:8]) != 1 {
		return nil, errors.New("not a wasm module (bad magic or version)")
	}
	var secs []section
	r := reader{b: wasm[8:]}
	for !r.done() {
		id := r.byte()
		n := r.u32()
		body := r.bytes(int(n))
		if r.err != nil {
			return nil, fmt.Errorf("section %d: %w", id, r.err)
		}
		secs = append(secs, section{id, body})
	}
	m := &meter{}
	if err := m.scan(secs); err != nil {
		return nil, err
	}
	out := append([]byte(nil), wasm[:8]...)
	have := map[byte]bool{}
	for _, s := range secs {
		have[s.id] = true
	}
	emit := func(id byte, body []byte) {
		out = append(out, id)
		out = appendU32(out, uint32(len(body)))
		out = append(out, body...)
	}
	// Sections we must add when absent, placed before the first section
	// that follows them in the standard order.
	order := func(id byte) int { // standard order (datacount sits before code)
		switch id {
		case 12:
			return 95
		case 10:
			return 100
		case 11:
			return 110
		}
		return int(id) * 10
	}
	missing := []byte{}
	for _, id := range []byte{1, 2, 6} {
		if !have[id] {
			missing = append(missing, id)
		}
	}
	for _, s := range secs {
		for len(missing) > 0 && s.id != 0 && order(missing[0]) < order(s.id) {
			b, err := m.rewrite(section{id: missing[0]})
			if err != nil {
				return nil, err
			}
			emit(missing[0], b)
			missing = missing[1:]
		}
		if s.id == 0 {
			if n := customName(s.body); n == "name" || strings.HasPrefix(n, ".debug") {
				continue // function indices and code offsets change: drop debug info
			}
		}
		b, err := m.rewrite(s)
		if err != nil {
			return nil, err
		}
		emit(s.id, b)
	}
	for _, id := range missing {
		b, err := m.rewrite(section{id: id})
		if err != nil {
			return nil, err
		}
		emit(id, b)
	}
	return out, nil
}

// meter holds what the rewrite needs to know about the module.
type meter struct {
	types        [][2]int // params, results per type
	importFuncs  uint32   // imported functions (indices below stay)
	importGlobal uint32
	defGlobals   uint32
	funcTypes    []uint32 // type of each defined function
	yieldType    uint32   // index of the () -> i32 type we add; (i32) -> i32 (grow's) follows
	budget       uint32   // index of the budget global we add
	// hasMemory: the module imports or defines a memory. Without one its
	// memory.grow is left alone, for wazero to refuse as before.
	hasMemory bool
}

func (m *meter) scan(secs []section) error {
	for _, s := range secs {
		r := reader{b: s.body}
		switch s.id {
		case 1:
			n := r.vec()
			for range n {
				if r.byte() != 0x60 {
					return fmt.Errorf("type section: %w (not a function type)", errUnsupported)
				}
				p := r.u32()
				r.bytes(int(p))
				q := r.u32()
				r.bytes(int(q))
				m.types = append(m.types, [2]int{int(p), int(q)})
			}
		case 2:
			n := r.vec()
			for range n {
				mod, name := r.name(), r.name()
				if mod == meterModule {
					return fmt.Errorf("it imports %s.%s, which Meridian does not provide (%w)", mod, name, errReservedImport)
				}
				switch kind := r.byte(); kind {
				case 0:
					r.u32()
					m.importFuncs++
				case 1:
					r.byte()
					r.limits()
				case 2:
					r.limits()
					m.hasMemory = true
				case 3:
					r.byte()
					r.byte()
					m.importGlobal++
				default:
					return fmt.Errorf("import kind %d: %w", kind, errUnsupported)
				}
			}
		case 3:
			n := r.vec()
			for range n {
				m.funcTypes = append(m.funcTypes, r.u32())
			}
		case 6:
			m.defGlobals = r.vec()
		case 4, 5:
			// Not rewritten, but their vector lengths are checked here:
			// wazero v1.9 allocates a slice of the declared length before
			// reading the elements, so a 100-byte module declaring 2^29
			// exports or data segments makes it allocate gigabytes.
			if n := r.vec(); s.id == 5 && n > 0 {
				m.hasMemory = true
			}
		case 11:
			// Data segments: wazero also allocates each segment's declared
			// size before reading it (4 GiB for a 20-byte module).
			m.budget = m.importGlobal + m.defGlobals // for constExpr's check
			n := r.vec()
			for range n {
				switch flags := r.u32(); flags {
				case 0, 2:
					if flags == 2 {
						r.u32()
					}
					if _, err := m.constExpr(&r, nil); err != nil {
						return err
					}
				case 1:
				default:
					return fmt.Errorf("%w: data segment flags %d", errMalformed, flags)
				}
				r.bytes(int(r.vec()))
			}
		}
		if r.err != nil {
			return fmt.Errorf("section %d: %w", s.id, r.err)
		}
	}
	m.yieldType = uint32(len(m.types))
	m.budget = m.importGlobal + m.defGlobals
	return nil
}

// fn maps an old function index to the new one (our two imports come
// last among the imported functions: yield at importFuncs, grow after it).
func (m *meter) fn(i uint32) uint32 {
	if i >= m.importFuncs {
		return i + 2
	}
	return i
}

func (m *meter) rewrite(s section) ([]byte, error) {
	r := reader{b: s.body}
	var out []byte
	switch s.id {
	case 1: // types: add () -> i32 and (i32) -> i32
		n := r.count() // 0 for a section we add
		out = appendU32(out, n+2)
		out = append(out, r.rest()...)
		out = append(out, 0x60, 0x00, 0x01, 0x7f)
		out = append(out, 0x60, 0x01, 0x7f, 0x01, 0x7f)
	case 2: // imports: add the yield and grow functions last
		n := r.count() // 0 for a section we add
		out = appendU32(out, n+2)
		out = append(out, r.rest()...)
		out = appendName(out, meterModule)
		out = appendName(out, meterYield)
		out = append(out, 0x00)
		out = appendU32(out, m.yieldType)
		out = appendName(out, meterModule)
		out = appendName(out, meterGrow)
		out = append(out, 0x00)
		out = appendU32(out, m.yieldType+1)
	case 6: // globals: add the budget, a mutable i32
		n := r.count() // 0 for a section we add
		out = appendU32(out, n+1)
		for range n {
			out = append(out, r.byte(), r.byte()) // valtype, mut
			var err error
			if out, err = m.constExpr(&r, out); err != nil {
				return nil, err
			}
		}
		out = append(out, 0x7f, 0x01, 0x41)
		out = appendS64(out, meterBudget)
		out = append(out, 0x0b)
	case 7: // exports
		n := r.vec()
		out = appendU32(out, n)
		for range n {
			out = appendName(out, r.name())
			kind := r.byte()
			idx := r.u32()
			if kind == 0 {
				idx = m.fn(idx)
			}
			out = append(out, kind)
			out = appendU32(out, idx)
		}
	case 8: // start
		out = appendU32(out, m.fn(r.u32()))
	case 9:
		var err error
		if out, err = m.elements(&r); err != nil {
			return nil, err
		}
	case 10:
		n := r.vec()
		if int(n) != len(m.funcTypes) {
			return nil, errors.New("code and function sections disagree")
		}
		out = appendU32(out, n)
		for i := range n {
			size := r.u32()
			body := r.bytes(int(size))
			if r.err != nil {
				break
			}
			nb, err := m.body(body, m.funcTypes[i])
			if err != nil {
				return nil, fmt.Errorf("function %d: %w", m.importFuncs+i, err)
			}
			out = appendU32(out, uint32(len(nb)))
			out = append(out, nb...)
		}
	default:
		return s.body, nil
	}
	if r.err != nil {
		return nil, fmt.Errorf("section %d: %w", s.id, r.err)
	}
	if s.id != 1 && s.id != 2 && !r.done() {
		return nil, fmt.Errorf("section %d: trailing bytes", s.id)
	}
	return out, nil
}

// constExpr copies a constant expression, shifting ref.func.
func (m *meter) constExpr(r *reader, out []byte) ([]byte, error) {
	for r.err == nil {
		op := r.byte()
		out = append(out, op)
		switch op {
		case 0x0b:
			return out, nil
		case 0x41:
			out = appendS64(out, r.s64())
		case 0x42:
			out = appendS64(out, r.s64())
		case 0x43:
			out = append(out, r.bytes(4)...)
		case 0x44:
			out = append(out, r.bytes(8)...)
		case 0x23:
			idx := r.u32()
			if idx >= m.budget {
				return nil, fmt.Errorf("%w: constant expression names global %d, which does not exist", errMalformed, idx)
			}
			out = appendU32(out, idx)
		case 0xd0:
			out = append(out, r.byte())
		case 0xd2:
			out = appendU32(out, m.fn(r.u32()))
		case 0x6a, 0x6b, 0x6c, 0x7c, 0x7d, 0x7e: // extended constant expressions
		case 0xfd:
			sub := r.u32()
			if sub != 12 {
				return nil, fmt.Errorf("constant expression: %w", errUnsupported)
			}
			out = appendU32(out, sub)
			out = append(out, r.bytes(16)...)
		default:
			return nil, fmt.Errorf("constant expression opcode 0x%x: %w", op, errUnsupported)
		}
	}
	return out, r.err
}

// elements copies the element section, shifting function indices.
func (m *meter) elements(r *reader) ([]byte, error) {
	n := r.vec()
	out := appendU32(nil, n)
	var err error
	for range n {
		flags := r.u32()
		out = appendU32(out, flags)
		if flags > 7 {
			return nil, fmt.Errorf("element segment flags %d: %w", flags, errUnsupported)
		}
		if flags&1 == 0 { // active
			if flags&2 != 0 {
				out = appendU32(out, r.u32()) // table index
			}
			if out, err = m.constExpr(r, out); err != nil {
				return nil, err
			}
		}
		exprs := flags&4 != 0
		if flags&3 != 0 { // elemkind or reftype
			out = append(out, r.byte())
		}
		k := r.vec()
		out = appendU32(out, k)
		for range k {
			if exprs {
				if out, err = m.constExpr(r, out); err != nil {
					return nil, err
				}
			} else {
				out = appendU32(out, m.fn(r.u32()))
			}
		}
	}
	return out, r.err
}

// body rewrites one function body.
func (m *meter) body(b []byte, typ uint32) ([]byte, error) {
	if int(typ) >= len(m.types) {
		return nil, errors.New("bad type index")
	}
	r := reader{b: b}
	groups := r.vec()
	locals := uint64(m.types[typ][0])
	var decl []byte
	for range groups {
		c := r.u32()
		t := r.byte()
		locals += uint64(c)
		decl = appendU32(decl, c)
		decl = append(decl, t)
	}
	if r.err != nil {
		return nil, r.err
	}
	if locals+1 > maxLocals {
		// wazero v1.9 panics compiling a function with 2^28 locals.
		return nil, fmt.Errorf("%w: the function declares %d locals, at most %d are allowed", errMalformed, locals, maxLocals-1)
	}
	tmp := uint32(locals) // the i32 local we add for bulk lengths
	code := r.rest()

	// Pass 1: instruction counts of the function and of each loop body.
	var loops []int // per loop, in order of appearance
	var stack []int // open blocks: index into loops, or -1
	total := 0
	if err := walk(code, func(op byte, sub uint32, at, _ int) error {
		total++
		switch op {
		case 0x02, 0x04:
			stack = append(stack, -1)
		case 0x03:
			loops = append(loops, total)
			stack = append(stack, len(loops)-1)
		case 0x0b:
			if len(stack) > 0 {
				if i := stack[len(stack)-1]; i >= 0 {
					loops[i] = total - loops[i]
				}
				stack = stack[:len(stack)-1]
			}
		}
		return nil
	}); err != nil {
		return nil, err
	}

	// The original code must not name the local, global or function the
	// rewrite adds: an index one past the end is invalid in the original
	// but would be valid after the rewrite (a plugin could refill its own
	// budget and never yield).
	if err := walk(code, func(op byte, _ uint32, at, end int) error {
		if op < 0x20 || op > 0x24 {
			return nil
		}
		ir := reader{b: code[at+1 : end]}
		idx := ir.u32()
		if op <= 0x22 && uint64(idx) >= locals || op >= 0x23 && idx >= m.budget {
			return fmt.Errorf("%w: instruction 0x%x names index %d, which does not exist", errMalformed, op, idx)
		}
		return nil
	}); err != nil {
		return nil, err
	}

	out := appendU32(nil, groups+1)
	out = append(out, decl...)
	out = append(out, 0x01, 0x7f) // one i32
	out = m.charge(out, 1+total/meterUnit)
	loop := 0
	last := 0
	err := walk(code, func(op byte, sub uint32, at, end int) error {
		switch {
		case op == 0x10 || op == 0x12 || op == 0xd2: // call, return_call, ref.func
			ir := reader{b: code[at+1 : end]}
			idx := ir.u32()
			out = append(out, code[last:at]...)
			out = append(out, op)
			out = appendU32(out, m.fn(idx))
			last = end
		case op == 0x03:
			out = append(out, code[last:end]...)
			out = m.charge(out, 1+loops[loop]/meterUnit)
			loop++
			last = end
		case op == 0x40 && m.hasMemory: // memory.grow: call the host's grow
			out = append(out, code[last:at]...)
			out = append(out, 0x10)
			out = appendU32(out, m.importFuncs+1)
			last = end
		case op == 0xfc && (sub == 8 || sub == 10 || sub == 11 || sub == 12 || sub == 14 || sub == 17):
			// The length is on top of the stack: charge len/64Ki first.
			out = append(out, code[last:at]...)
			out = append(out, 0x22) // local.tee tmp
			out = appendU32(out, tmp)
			out = append(out, 0x23)
			out = appendU32(out, m.budget)
			out = append(out, 0x20)
			out = appendU32(out, tmp)
			out = append(out, 0x41, 0x10, 0x76, 0x6b, 0x24) // i32.const 16, shr_u, sub, global.set
			out = appendU32(out, m.budget)
			out = m.check(out)
			last = at
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out = append(out, code[last:]...)
	return out, nil
}

// charge subtracts w from the budget and yields when it runs out.
func (m *meter) charge(out []byte, w int) []byte {
	out = append(out, 0x23)
	out = appendU32(out, m.budget)
	out = append(out, 0x41)
	out = appendS64(out, int64(min(w, 1<<30)))
	out = append(out, 0x6b, 0x24) // i32.sub, global.set
	out = appendU32(out, m.budget)
	return m.check(out)
}

// check: if budget < 0 { budget = yield() }.
func (m *meter) check(out []byte) []byte {
	out = append(out, 0x23)
	out = appendU32(out, m.budget)
	out = append(out, 0x41, 0x00, 0x48, 0x04, 0x40, 0x10) // i32.const 0, lt_s, if, call
	out = appendU32(out, m.importFuncs)                   // yield's index
	out = append(out, 0x24)
	out = appendU32(out, m.budget)
	return append(out, 0x0b)
}

// walk decodes code instruction by instruction, calling fn with the
// opcode, the 0xFC/0xFD sub-opcode, and the instruction's byte range.
func walk(code []byte, fn func(op byte, sub uint32, at, end int) error) error {
	r := reader{b: code}
	for !r.done() {
		at := r.off
		op := r.byte()
		var sub uint32
		switch {
		case op == 0x02 || op == 0x03 || op == 0x04:
			r.blockType()
		case op == 0x0c || op == 0x0d || op == 0x10 || op == 0x12 || (op >= 0x20 && op <= 0x26) || op == 0xd2:
			r.u32()
		case op == 0x0e:
			n := r.vec()
			for range n + 1 {
				r.u32()
			}
		case op == 0x11 || op == 0x13:
			r.u32()
			r.u32()
		case op == 0x1c:
			n := r.u32()
			r.bytes(int(n))
		case op >= 0x28 && op <= 0x3e:
			r.memarg()
		case op == 0x3f || op == 0x40:
			r.byte()
		case op == 0x41:
			r.s64()
		case op == 0x42:
			r.s64()
		case op == 0x43:
			r.bytes(4)
		case op == 0x44:
			r.bytes(8)
		case op == 0xd0:
			r.byte()
		case op == 0xfc:
			sub = r.u32()
			switch {
			case sub <= 7:
			case sub == 8:
				r.u32()
				r.byte()
			case sub == 9 || sub == 13 || sub == 15 || sub == 16 || sub == 17:
				r.u32()
			case sub == 10:
				r.byte()
				r.byte()
			case sub == 11:
				r.byte()
			case sub == 12 || sub == 14:
				r.u32()
				r.u32()
			default:
				return fmt.Errorf("opcode 0xfc %d: %w", sub, errUnsupported)
			}
		case op == 0xfd:
			sub = r.u32()
			switch {
			case sub <= 11 || sub == 92 || sub == 93:
				r.memarg()
			case sub == 12 || sub == 13:
				r.bytes(16)
			case sub >= 21 && sub <= 34:
				r.byte()
			case sub >= 84 && sub <= 91:
				r.memarg()
				r.byte()
			case sub > 255:
				return fmt.Errorf("opcode 0xfd %d: %w", sub, errUnsupported)
			}
		case op <= 0x01 || op == 0x05 || op == 0x0b || op == 0x0f || op == 0x1a || op == 0x1b ||
			(op >= 0x45 && op <= 0xc4) || op == 0xd1:
		default:
			return fmt.Errorf("opcode 0x%x: %w", op, errUnsupported)
		}
		if r.err != nil {
			return r.err
		}
		if err := fn(op, sub, at, r.off); err != nil {
			return err
		}
	}
	return nil
}

// reader reads the wasm binary format; the first error sticks.
type reader struct {
	b   []byte
	off int
	err error
}

// errMalformed marks input that is not wasm at the binary level; every
// reader error wraps it.
var (
	errMalformed = errors.New("malformed wasm")
	errTruncated = fmt.Errorf("%w: unexpected end", errMalformed)
)

func (r *reader) done() bool { return r.err != nil || r.off >= len(r.b) }

func (r *reader) byte() byte {
	if r.err != nil || r.off >= len(r.b) {
		r.err = errTruncated
		return 0
	}
	c := r.b[r.off]
	r.off++
	return c
}

func (r *reader) bytes(n int) []byte {
	if r.err != nil || n < 0 || n > len(r.b)-r.off {
		r.err = errTruncated
		return nil
	}
	b := r.b[r.off : r.off+n]
	r.off += n
	return b
}

func (r *reader) rest() []byte {
	if r.err != nil {
		return nil
	}
	b := r.b[r.off:]
	r.off = len(r.b)
	return b
}

func (r *reader) u32() uint32 {
	var v uint64
	for shift := 0; shift < 35; shift += 7 {
		c := r.byte()
		v |= uint64(c&0x7f) << shift
		if c&0x80 == 0 {
			if v > 0xffffffff {
				r.err = fmt.Errorf("%w: u32 out of range", errMalformed)
			}
			return uint32(v)
		}
	}
	r.err = fmt.Errorf("%w: u32 too long", errMalformed)
	return 0
}

func (r *reader) s64() int64 {
	var v int64
	shift := 0
	for shift < 70 {
		c := r.byte()
		if r.err != nil {
			return 0
		}
		v |= int64(c&0x7f) << shift
		shift += 7
		if c&0x80 == 0 {
			if shift < 64 && c&0x40 != 0 {
				v |= -1 << shift
			}
			return v
		}
	}
	r.err = fmt.Errorf("%w: s64 too long", errMalformed)
	return 0
}

// count reads a vector length; an empty body (a section we add) is 0.
func (r *reader) count() uint32 {
	if len(r.b) == 0 {
		return 0
	}
	return r.vec()
}

// vec reads a vector length. Every element takes at least one byte, so a
// length beyond the bytes left is an error (and never a long loop).
func (r *reader) vec() uint32 {
	n := r.u32()
	if r.err != nil {
		return 0
	}
	if int64(n) > int64(len(r.b)-r.off) {
		r.err = errTruncated
		return 0
	}
	return n
}

func (r *reader) name() string { return string(r.bytes(int(r.u32()))) }

func (r *reader) limits() {
	if f := r.byte(); f&1 != 0 {
		r.u32()
		r.u32()
	} else {
		r.u32()
	}
}

func (r *reader) memarg() {
	r.u32()
	r.u32()
}

// blockType skips a block type: 0x40, a value type, or an s33 type index.
func (r *reader) blockType() {
	if r.off < len(r.b) {
		switch c := r.b[r.off]; {
		case c == 0x40 || (c >= 0x6f && c <= 0x7f):
			r.off++
			return
		}
	}
	r.s64()
}

func customName(body []byte) string {
	r := reader{b: body}
	n := r.name()
	if r.err != nil {
		return ""
	}
	return n
}

func appendU32(b []byte, v uint32) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v != 0 {
			b = append(b, c|0x80)
			continue
		}
		return append(b, c)
	}
}

func appendS64(b []byte, v int64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

func appendName(b []byte, s string) []byte {
	b = appendU32(b, uint32(len(s)))
	return append(b, s...)
}
