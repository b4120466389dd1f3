;; on_request is right, on_response returns i64: refused at upload.
(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output (param i64 i64)))
  (func (export "on_request") (result i32)
    (local $p i64)
    (local.set $p (call $alloc (i64.const 1)))
    (call $store (local.get $p) (i32.const 0x01))
    (call $output (local.get $p) (i64.const 1))
    (i32.const 0))
  (func (export "on_response") (result i64)
    (i64.const 0)))
