// Holds 13 MiB (over three quarters of the tests' 16 MiB cap), which the
// allocator gets, and then fails for another reason (a failed check
// traps: built with --use abort=). The host must report it as a trap.
let kept: ArrayBuffer | null = null;

export function on_request(): i32 {
  kept = new ArrayBuffer(13 << 20);
  store<u8>(changetype<usize>(kept) + 5, 1);
  throw new Error("not a memory problem");
}
