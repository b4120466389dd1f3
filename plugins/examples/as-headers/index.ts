// Meridian example plugin in AssemblyScript, written from plugins/README.md
// (contract v1) alone, to show the contract is language-neutral.
//
// on_request: sets x-meridian-pop to the PoP id; sets the request headers
// listed in config "request" and the response headers listed in config
// "response" ("name: value" lines); when the path starts with config
// "rewrite_prefix", replaces that prefix with config "rewrite_to" and adds
// rewritten=1 to the query; config "cache_ttl" (seconds) sets the cache TTL
// and config "no_store" = "true" forbids storing the response.
//
// It uses ../as-kit (the Extism kernel imports used directly, see there
// why) and is written to cost as little as an AssemblyScript plugin can:
// the config is read and encoded into output bytes once per instance, and a
// request reads only the records it needs into reused buffers and appends
// bytes to a reused output buffer, so it allocates nothing and never runs
// the collector. Request values (PoP id, path, query) are copied as bytes;
// the earlier @extism/as-pdk version decoded and re-encoded them as UTF-8,
// which dropped invalid bytes (valid UTF-8 gives the same output).
import {
  Bytes, Span, Input, Output, configGet,
  PHASE_REQUEST, TAG_PATH, TAG_QUERY, TAG_POP,
  ACT_SET_REQUEST_HEADER, ACT_SET_PATH, ACT_SET_QUERY, ACT_CACHE_TTL,
  ACT_NO_STORE, ACT_SET_RESPONSE_HEADER,
} from "../as-kit/index";

// An instance's config never changes (Meridian binds each instance to one
// chain entry's config, as Extism fixes a plugin's config when it is made),
// so it is read on the first request and kept in globals, already encoded
// as the output records it produces.
let loaded = false;
// The header records from configs "request" and "response", in that order.
const headers = new Bytes();
// The cache TTL and no-store records.
const cacheRecords = new Bytes();
let rewrite = false;
const rewritePrefix = new Bytes();
const rewriteTo = new Bytes();

// Reused per request.
const pop = new Span();
const path = new Span();
const query = new Span();

const POP_HEADER = "x-meridian-pop";
const popHeader = new Bytes();
const REWRITTEN = "rewritten=1";
const rewritten = new Bytes();

function header(dst: Bytes, tag: u8, name: string, value: string): void {
  const nb = String.UTF8.encode(name);
  const vb = String.UTF8.encode(value);
  dst.header(tag, changetype<usize>(nb), nb.byteLength, changetype<usize>(vb), vb.byteLength);
}

// parseLines encodes the "name: value" lines of config key as header
// records with tag; lines without a name before a colon are skipped.
function parseLines(key: string, tag: u8): void {
  const cfg = configGet(key);
  if (cfg === null) return;
  const lines = cfg.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    header(headers, tag, line.substring(0, colon).trim(), line.substring(colon + 1).trim());
  }
}

function load(): void {
  popHeader.string(POP_HEADER);
  rewritten.string(REWRITTEN);
  parseLines("request", ACT_SET_REQUEST_HEADER);
  parseLines("response", ACT_SET_RESPONSE_HEADER);
  const prefix = configGet("rewrite_prefix");
  const to = configGet("rewrite_to");
  if (prefix !== null && to !== null) {
    rewrite = true;
    rewritePrefix.string(prefix);
    rewriteTo.string(to);
  }
  const ttl = configGet("cache_ttl");
  if (ttl !== null) {
    cacheRecords.recordHead(ACT_CACHE_TTL, 4);
    cacheRecords.u32le(<u32>I32.parseInt(ttl));
  }
  const noStore = configGet("no_store");
  if (noStore !== null && noStore == "true") {
    cacheRecords.recordHead(ACT_NO_STORE, 0);
  }
  loaded = true;
}

export function on_request(): i32 {
  if (Input.begin() != PHASE_REQUEST) return 1;
  if (!loaded) load();
  const out = Output.begin();
  Input.find(TAG_POP, pop);
  out.header(ACT_SET_REQUEST_HEADER, popHeader.ptr, popHeader.len, pop.ptr, pop.len);
  out.bytes(headers);
  if (rewrite && Input.find(TAG_PATH, path) && path.startsWith(rewritePrefix)) {
    const rest = path.len - rewritePrefix.len;
    out.recordHead(ACT_SET_PATH, rewriteTo.len + rest);
    out.bytes(rewriteTo);
    out.mem(path.ptr + <usize>rewritePrefix.len, rest);
    if (Input.find(TAG_QUERY, query) && query.len > 0) {
      out.recordHead(ACT_SET_QUERY, query.len + 1 + rewritten.len);
      out.span(query);
      out.byte(0x26); // '&'
      out.bytes(rewritten);
    } else {
      out.record(ACT_SET_QUERY, rewritten.ptr, rewritten.len);
    }
  }
  out.bytes(cacheRecords);
  Output.send();
  return 0;
}
