// Meridian example plugin in AssemblyScript, written from plugins/README.md
// (contract v1) alone, to show the contract is language-neutral.
//
// on_request: sets x-meridian-pop to the PoP id; sets the request headers
// listed in config "request" and the response headers listed in config
// "response" ("name: value" lines); when the path starts with config
// "rewrite_prefix", replaces that prefix with config "rewrite_to" and adds
// rewritten=1 to the query; config "cache_ttl" (seconds) sets the cache TTL
// and config "no_store" = "true" forbids storing the response.
import { Host, Config } from "@extism/as-pdk";

const VERSION: u8 = 1;

// Input field tags.
const TAG_PATH: u8 = 0x02;
const TAG_QUERY: u8 = 0x03;
const TAG_POP: u8 = 0x09;

// Action tags.
const ACT_SET_REQUEST_HEADER: u8 = 0x01;
const ACT_SET_PATH: u8 = 0x03;
const ACT_SET_QUERY: u8 = 0x04;
const ACT_CACHE_TTL: u8 = 0x07;
const ACT_NO_STORE: u8 = 0x08;
const ACT_SET_RESPONSE_HEADER: u8 = 0x0c;

class Actions {
  buf: u8[] = [VERSION];

  record(tag: u8, value: Uint8Array, prefix: i32 = -1): void {
    const n = value.length + (prefix >= 0 ? 1 : 0);
    this.buf.push(tag);
    this.buf.push(<u8>(n & 0xff));
    this.buf.push(<u8>(n >> 8));
    if (prefix >= 0) this.buf.push(<u8>prefix);
    for (let i = 0; i < value.length; i++) this.buf.push(value[i]);
  }

  text(tag: u8, s: string): void {
    this.record(tag, Uint8Array.wrap(String.UTF8.encode(s)));
  }

  header(tag: u8, name: string, value: string): void {
    const nb = Uint8Array.wrap(String.UTF8.encode(name));
    const vb = Uint8Array.wrap(String.UTF8.encode(value));
    const both = new Uint8Array(nb.length + vb.length);
    both.set(nb, 0);
    both.set(vb, nb.length);
    this.record(tag, both, nb.length);
  }

  bytes(): Uint8Array {
    const out = new Uint8Array(this.buf.length);
    for (let i = 0; i < this.buf.length; i++) out[i] = this.buf[i];
    return out;
  }
}

function field(input: Uint8Array, want: u8): string {
  let i = 2; // skip version and phase
  while (i + 3 <= input.length) {
    const tag = input[i];
    const n = <i32>input[i + 1] | (<i32>input[i + 2] << 8);
    if (i + 3 + n > input.length) break;
    if (tag == want) {
      return String.UTF8.decode(input.slice(i + 3, i + 3 + n).buffer);
    }
    i += 3 + n;
  }
  return "";
}

// An instance's config never changes (Meridian binds each instance to one
// chain entry's config, as Extism fixes a plugin's config when it is made),
// so it is read on the first request and kept in globals: each Config.get
// is a dozen host calls.
let loaded = false;
let reqNames: string[] = [];
let reqValues: string[] = [];
let respNames: string[] = [];
let respValues: string[] = [];
let rewritePrefix: string | null = null;
let rewriteTo: string | null = null;
let cacheTTL: string | null = null;
let noStore: string | null = null;

function parseLines(key: string, names: string[], values: string[]): void {
  const cfg = Config.get(key);
  if (cfg === null) return;
  const lines = cfg.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    names.push(line.substring(0, colon).trim());
    values.push(line.substring(colon + 1).trim());
  }
}

function load(): void {
  parseLines("request", reqNames, reqValues);
  parseLines("response", respNames, respValues);
  rewritePrefix = Config.get("rewrite_prefix");
  rewriteTo = Config.get("rewrite_to");
  cacheTTL = Config.get("cache_ttl");
  noStore = Config.get("no_store");
  loaded = true;
}

export function on_request(): i32 {
  const input = Host.input();
  if (input.length < 2 || input[0] != VERSION || input[1] != 1) {
    return 1;
  }
  if (!loaded) load();
  const act = new Actions();
  act.header(ACT_SET_REQUEST_HEADER, "x-meridian-pop", field(input, TAG_POP));
  for (let i = 0; i < reqNames.length; i++) {
    act.header(ACT_SET_REQUEST_HEADER, reqNames[i], reqValues[i]);
  }
  for (let i = 0; i < respNames.length; i++) {
    act.header(ACT_SET_RESPONSE_HEADER, respNames[i], respValues[i]);
  }

  const prefix = rewritePrefix;
  const to = rewriteTo;
  if (prefix !== null && to !== null) {
    const path = field(input, TAG_PATH);
    if (path.startsWith(prefix)) {
      act.text(ACT_SET_PATH, to + path.substring(prefix.length));
      const query = field(input, TAG_QUERY);
      act.text(ACT_SET_QUERY, query.length > 0 ? query + "&rewritten=1" : "rewritten=1");
    }
  }
  const ttl = cacheTTL;
  if (ttl !== null) {
    const secs = <u32>I32.parseInt(ttl);
    const le = new Uint8Array(4);
    le[0] = <u8>(secs & 0xff);
    le[1] = <u8>((secs >> 8) & 0xff);
    le[2] = <u8>((secs >> 16) & 0xff);
    le[3] = <u8>(secs >> 24);
    act.record(ACT_CACHE_TTL, le);
  }
  const ns = noStore;
  if (ns !== null && ns == "true") {
    act.record(ACT_NO_STORE, new Uint8Array(0));
  }
  Host.output(act.bytes());
  return 0;
}

// abort is wired with --use abort=index/myAbort so a failed assertion traps
// instead of importing env.abort, which the host does not provide.
export function myAbort(
  message: string | null,
  fileName: string | null,
  lineNumber: u32,
  columnNumber: u32
): void {
  unreachable();
}
