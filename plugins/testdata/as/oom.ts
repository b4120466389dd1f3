// Allocates 100 MiB at once, more than any cap the tests set: the
// AssemblyScript allocator's memory.grow gets -1 and it traps with
// unreachable, printing nothing. The host must report it as memory.
export function on_request(): i32 {
  const b = new ArrayBuffer(100 << 20);
  store<u8>(changetype<usize>(b) + 5, 1);
  return 0;
}
