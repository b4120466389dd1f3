;; Writes a Go-style panic to stderr (WASI fd 2) and traps: the host must
;; name the reason in the error it logs.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; iovec at 0: buf 16, len 59
  (data (i32.const 0) "\10\00\00\00\3b\00\00\00")
  (data (i32.const 16) "panic: index out of range\n\ngoroutine 1 [running]:\nmain.f()\n")
  (func (export "on_request") (result i32)
    (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
    unreachable))
