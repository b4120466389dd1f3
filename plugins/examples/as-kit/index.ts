// as-kit: a small AssemblyScript module for Meridian plugins (contract v1,
// plugins/README.md) that talks to the Extism kernel directly through the
// standard extism:host/env imports, the same ones @extism/as-pdk declares,
// so a plugin built with it is an ordinary Extism plugin that runs on any
// Extism host (Meridian's native host and the go-sdk reference alike).
//
// It owns reading the call's input, writing its output and reading config.
// It does not know any plugin's logic and keeps no per-request state between
// calls other than its reusable buffers.
//
// Why not @extism/as-pdk: every import call leaves wasm for the host, which
// dominates a small plugin's time, and the PDK reads the whole input (8
// bytes per call), builds strings and arrays on every request and writes the
// output's last partial word byte by byte. This module instead:
//
//   - reads only the records the plugin asks for: one input_load_u64 per
//     record header (which also brings the first five value bytes), and the
//     words of the values it wants; the words land in a mirror of the input
//     at their own offsets, so a Span points straight at the bytes;
//   - allocates nothing per request: the mirror and the output buffer are
//     grown once to the largest size seen and reused, so a plugin whose
//     request path uses only Spans and Output never runs the collector;
//   - writes the output as one block rounded up to whole words (zero
//     padding, output_set names the exact length): alloc, one store_u64 per
//     word, output_set;
//   - reads config the ordinary way (one key at a time, decoded as UTF-8);
//     Meridian binds an instance to one config, so read it once and keep it
//     in globals.
//
// Limits of the design: a Span is valid until the next Input.begin (the
// mirror is reused); values are bytes, not strings (decode with Span.toString
// only where a string is really needed, which allocates); Input.find keeps
// the first record of each tag below 32, which covers every tag of contract
// version 1 (header records, tags 0x05 and 0x11, can repeat: walk them with
// Input.next instead).

// ---- extism:host/env imports (the Extism kernel ABI) ----

// @ts-ignore: decorator
@external("extism:host/env", "input_length")
declare function input_length(): u64;
// @ts-ignore: decorator
@external("extism:host/env", "input_load_u64")
declare function input_load_u64(off: u64): u64;
// @ts-ignore: decorator
@external("extism:host/env", "input_load_u8")
declare function input_load_u8(off: u64): u8;
// @ts-ignore: decorator
@external("extism:host/env", "alloc")
declare function alloc(n: u64): u64;
// @ts-ignore: decorator
@external("extism:host/env", "free")
declare function free(off: u64): void;
// @ts-ignore: decorator
@external("extism:host/env", "length")
declare function length(off: u64): u64;
// @ts-ignore: decorator
@external("extism:host/env", "load_u64")
declare function load_u64(off: u64): u64;
// @ts-ignore: decorator
@external("extism:host/env", "load_u8")
declare function load_u8(off: u64): u8;
// @ts-ignore: decorator
@external("extism:host/env", "store_u64")
declare function store_u64(off: u64, v: u64): void;
// @ts-ignore: decorator
@external("extism:host/env", "store_u8")
declare function store_u8(off: u64, v: u8): void;
// @ts-ignore: decorator
@external("extism:host/env", "output_set")
declare function output_set(off: u64, n: u64): void;
// @ts-ignore: decorator
@external("extism:host/env", "error_set")
declare function error_set(off: u64): void;
// @ts-ignore: decorator
@external("extism:host/env", "config_get")
declare function config_get(off: u64): u64;

// ---- contract version 1 ----

/** VERSION is the contract version, the first byte of input and output. */
export const VERSION: u8 = 1;
/** PHASE_REQUEST is the input's second byte in on_request. */
export const PHASE_REQUEST: u8 = 1;
/** PHASE_RESPONSE is the input's second byte in on_response. */
export const PHASE_RESPONSE: u8 = 2;

// Input field tags.
export const TAG_METHOD: u8 = 0x01;
export const TAG_PATH: u8 = 0x02;
export const TAG_QUERY: u8 = 0x03;
export const TAG_HOST: u8 = 0x04;
export const TAG_HEADER: u8 = 0x05;
export const TAG_CLIENT_IP: u8 = 0x06;
export const TAG_COUNTRY: u8 = 0x07;
export const TAG_REGION: u8 = 0x08;
export const TAG_POP: u8 = 0x09;
export const TAG_POP_REGION: u8 = 0x0a;
export const TAG_TIME: u8 = 0x0b;
export const TAG_STATUS: u8 = 0x10;
export const TAG_RESPONSE_HEADER: u8 = 0x11;

// Output action tags.
export const ACT_SET_REQUEST_HEADER: u8 = 0x01;
export const ACT_REMOVE_REQUEST_HEADER: u8 = 0x02;
export const ACT_SET_PATH: u8 = 0x03;
export const ACT_SET_QUERY: u8 = 0x04;
export const ACT_ORIGIN: u8 = 0x05;
export const ACT_CACHE_KEY: u8 = 0x06;
export const ACT_CACHE_TTL: u8 = 0x07;
export const ACT_NO_STORE: u8 = 0x08;
export const ACT_RESPOND: u8 = 0x09;
export const ACT_RESPOND_HEADER: u8 = 0x0a;
export const ACT_RESPOND_BODY: u8 = 0x0b;
export const ACT_SET_RESPONSE_HEADER: u8 = 0x0c;
export const ACT_REMOVE_RESPONSE_HEADER: u8 = 0x0d;

// ---- bytes ----

/**
 * Span is a view of bytes in linear memory. A plugin makes its Spans once
 * (globals) and lets Input fill them, so no request allocates.
 */
// @ts-ignore: decorator
@unmanaged
export class Span {
  ptr: usize = 0;
  len: i32 = 0;

  /** startsWith reports whether the span begins with the bytes of b. */
  startsWith(b: Bytes): bool {
    return this.len >= b.len && memory.compare(this.ptr, b.ptr, b.len) == 0;
  }

  /** toString decodes the bytes as UTF-8 (allocates a string). */
  toString(): string {
    return String.UTF8.decodeUnsafe(this.ptr, this.len);
  }
}

/**
 * Bytes is a growable byte buffer outside the managed heap: it grows to the
 * largest size it was asked for and is reused after reset, so steady-state
 * requests do not allocate.
 */
// @ts-ignore: decorator
@unmanaged
export class Bytes {
  ptr: usize = 0;
  len: i32 = 0;
  cap: i32 = 0;

  /** reset empties the buffer, keeping its memory. */
  reset(): void {
    this.len = 0;
  }

  /** reserve makes room for n more bytes. */
  reserve(n: i32): void {
    const need = this.len + n;
    if (need <= this.cap) return;
    let c = this.cap < 64 ? 64 : this.cap;
    while (c < need) c <<= 1;
    this.ptr = this.ptr == 0 ? heap.alloc(<usize>c) : heap.realloc(this.ptr, <usize>c);
    this.cap = c;
  }

  /** byte appends one byte. */
  byte(b: u8): void {
    this.reserve(1);
    store<u8>(this.ptr + <usize>this.len, b);
    this.len++;
  }

  /** mem appends n bytes from ptr. */
  mem(ptr: usize, n: i32): void {
    if (n <= 0) return;
    this.reserve(n);
    memory.copy(this.ptr + <usize>this.len, ptr, <usize>n);
    this.len += n;
  }

  /** span appends the bytes of s. */
  span(s: Span): void {
    this.mem(s.ptr, s.len);
  }

  /** bytes appends the contents of b. */
  bytes(b: Bytes): void {
    this.mem(b.ptr, b.len);
  }

  /** string appends s encoded as UTF-8 (allocates; for set-up code). */
  string(s: string): void {
    const n = String.UTF8.byteLength(s);
    this.reserve(n);
    String.UTF8.encodeUnsafe(changetype<usize>(s), s.length, this.ptr + <usize>this.len);
    this.len += n;
  }

  /**
   * recordHead appends a record's tag and u16 length. Like the contract's
   * encoders it keeps only the low 16 bits of n: a longer value is not
   * representable, and the host refuses the output.
   */
  recordHead(tag: u8, n: i32): void {
    this.reserve(3);
    const p = this.ptr + <usize>this.len;
    store<u8>(p, tag);
    store<u8>(p, <u8>(n & 0xff), 1);
    store<u8>(p, <u8>((n >> 8) & 0xff), 2);
    this.len += 3;
  }

  /** record appends a whole record: tag, length, the n bytes at ptr. */
  record(tag: u8, ptr: usize, n: i32): void {
    this.recordHead(tag, n);
    this.mem(ptr, n);
  }

  /** header appends a header record: tag, length, name length, name, value. */
  header(tag: u8, name: usize, nameLen: i32, value: usize, valueLen: i32): void {
    this.recordHead(tag, 1 + nameLen + valueLen);
    this.byte(<u8>nameLen);
    this.mem(name, nameLen);
    this.mem(value, valueLen);
  }

  /** u32le appends v as 4 little-endian bytes. */
  u32le(v: u32): void {
    this.reserve(4);
    store<u32>(this.ptr + <usize>this.len, v);
    this.len += 4;
  }
}

// ---- input ----

// mirror holds the input bytes that were read, each at its own offset.
const mirror = new Bytes();
// first[tag] is 1 + the offset of the first record of tag (0: not seen)
// among the records walked so far, for tags below 32.
const first = new StaticArray<i32>(32);
let inLen: i32 = 0; // input length
let walked: i32 = 0; // offset of the next record not yet walked
let seen: u32 = 0; // bit t: first[t] is set
let winLo: i32 = 0; // the last word read covers [winLo, winHi) of the mirror
let winHi: i32 = 0;

// fill makes the mirror hold the input bytes [from, to), reading whole
// words; the last word overlaps the previous one instead of reading past
// the input (the go-sdk returns what follows the input, Meridian zeroes).
function fill(from: i32, to: i32): void {
  if (from >= winLo && to <= winHi) return;
  if (from >= winLo && from < winHi) from = winHi;
  let p = from;
  while (p < to) {
    const at = p + 8 <= inLen ? p : inLen - 8;
    store<u64>(mirror.ptr + <usize>at, input_load_u64(<u64>at));
    p = at + 8;
  }
  // The window is the last word read (all of it is in the mirror).
  winLo = p - 8;
  winHi = p;
}

/**
 * Input reads the call's input (contract v1): the version and phase, then
 * the records the plugin asks for, each value read from the host once.
 */
export class Input {
  /**
   * begin starts reading a call's input and returns its phase
   * (PHASE_REQUEST, PHASE_RESPONSE), or 0 if the input is shorter than two
   * bytes or not contract version 1. Spans from the previous call become
   * invalid.
   */
  static begin(): u8 {
    inLen = <i32>input_length();
    walked = 2;
    seen = 0;
    winLo = 0;
    winHi = 0;
    mirror.len = 0;
    if (inLen < 2) return 0;
    // Room for the input rounded up to a word (a short input is read whole).
    mirror.reserve(inLen + 8);
    if (inLen < 8) {
      // Too short for a word: read it byte by byte, once.
      for (let i = 0; i < inLen; i++) {
        store<u8>(mirror.ptr + <usize>i, input_load_u8(<u64>i));
      }
      winHi = inLen;
    } else {
      fill(0, 2);
    }
    if (load<u8>(mirror.ptr) != VERSION) return 0;
    const phase = load<u8>(mirror.ptr, 1);
    return phase == PHASE_REQUEST || phase == PHASE_RESPONSE ? phase : 0;
  }

  /**
   * next walks one more record: it returns its tag and sets into to its
   * value (not yet read: call Input.read), or returns -1 at the end of the
   * input or at a truncated record (nothing after it is read).
   */
  static next(into: Span): i32 {
    const i = walked;
    if (i + 3 > inLen) return -1;
    fill(i, i + 3);
    const p = mirror.ptr + <usize>i;
    const tag = <i32>load<u8>(p);
    const n = <i32>load<u8>(p, 1) | (<i32>load<u8>(p, 2) << 8);
    if (i + 3 + n > inLen) {
      walked = inLen;
      return -1;
    }
    walked = i + 3 + n;
    if (tag < 32 && (seen & (1 << tag)) == 0) {
      seen |= 1 << tag;
      unchecked((first[tag] = i + 1));
    }
    into.ptr = p + 3;
    into.len = n;
    return tag;
  }

  /**
   * find sets into to the value of the first record of tag and reads it;
   * it returns false (into empty) if there is none, or if tag is 32 or
   * more (use next for those). It walks only as far as that record,
   * reading one word per record header, and remembers what it walked past,
   * so finding several fields costs one walk.
   */
  static find(tag: u8, into: Span): bool {
    if (tag >= 32) { // not tracked: walk with next
      into.ptr = 0;
      into.len = 0;
      return false;
    }
    while ((seen & (1 << tag)) == 0) {
      if (Input.next(into) < 0) {
        into.ptr = 0;
        into.len = 0;
        return false;
      }
    }
    const i = unchecked(first[tag]) - 1;
    const p = mirror.ptr + <usize>i;
    into.ptr = p + 3;
    into.len = <i32>load<u8>(p, 1) | (<i32>load<u8>(p, 2) << 8);
    Input.read(into);
    return true;
  }

  /** read makes sure the bytes of a span from next or find are read. */
  static read(s: Span): void {
    if (s.len == 0) return;
    const from = <i32>(s.ptr - mirror.ptr);
    fill(from, from + s.len);
  }
}

// ---- output ----

/**
 * Output is the call's output (contract v1): begin writes the version byte,
 * the plugin appends actions to Output.buf, and send hands it to the host.
 */
export class Output {
  /** buf is the output being built; reused across calls. */
  static buf: Bytes = new Bytes();

  /** begin starts the output with the version byte. */
  static begin(): Bytes {
    const b = Output.buf;
    b.reset();
    b.byte(VERSION);
    return b;
  }

  /**
   * send makes the buffer the call's output: one kernel block rounded up
   * to whole words, one store_u64 per word.
   */
  static send(): void {
    const b = Output.buf;
    const n = b.len;
    const words = (n + 7) >> 3;
    b.reserve(8);
    store<u64>(b.ptr + <usize>n, 0); // zero padding up to the next word
    const off = alloc(<u64>(words * 8));
    for (let w = 0; w < words; w++) {
      store_u64(off + <u64>(w * 8), load<u64>(b.ptr + <usize>(w * 8)));
    }
    output_set(off, <u64>n);
  }
}

// ---- config and errors ----

// writeBlock copies n bytes at ptr into a new kernel block of exactly n
// bytes (the host reads a key's or message's whole block).
function writeBlock(ptr: usize, n: i32): u64 {
  const off = alloc(<u64>n);
  if (off == 0) return 0;
  let i = 0;
  for (; i + 8 <= n; i += 8) store_u64(off + <u64>i, load<u64>(ptr + <usize>i));
  if (i < n) {
    if (n >= 8) {
      store_u64(off + <u64>(n - 8), load<u64>(ptr + <usize>(n - 8)));
    } else {
      for (; i < n; i++) store_u8(off + <u64>i, load<u8>(ptr + <usize>i));
    }
  }
  return off;
}

/**
 * configGet returns the config value of key decoded as UTF-8, or null if
 * it is not set or empty (as @extism/as-pdk's Config.get). It allocates:
 * call it once per instance and keep what it returns.
 */
export function configGet(key: string): string | null {
  const kb = String.UTF8.encode(key);
  const kn = kb.byteLength;
  const k = kn > 0 ? writeBlock(changetype<usize>(kb), kn) : 0;
  const v = config_get(k);
  if (k != 0) free(k);
  if (v == 0) return null;
  const n = <i32>length(v);
  if (n == 0) return null;
  const buf = new ArrayBuffer(n);
  const p = changetype<usize>(buf);
  let i = 0;
  for (; i + 8 <= n; i += 8) store<u64>(p + <usize>i, load_u64(v + <u64>i));
  if (i < n) {
    if (n >= 8) {
      store<u64>(p + <usize>(n - 8), load_u64(v + <u64>(n - 8)));
    } else {
      for (; i < n; i++) store<u8>(p + <usize>i, load_u8(v + <u64>i));
    }
  }
  return String.UTF8.decode(buf);
}

/**
 * fail sets the call's error message; return a non-zero value from the
 * export after it.
 */
export function fail(msg: string): void {
  const b = String.UTF8.encode(msg);
  error_set(writeBlock(changetype<usize>(b), b.byteLength));
}

/**
 * kitAbort is the module's abort: a failed assertion or bounds check traps
 * instead of importing env.abort, which no Extism host provides. Build with
 * `--use abort=<this file's internal path>/kitAbort`, e.g. from a plugin
 * next to this directory: `--use abort=../as-kit/index/kitAbort`.
 */
export function kitAbort(
  message: string | null,
  fileName: string | null,
  lineNumber: u32,
  columnNumber: u32
): void {
  unreachable();
}
