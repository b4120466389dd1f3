;; Reports failure through error_set and a non-zero return.
(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store (param i64 i32)))
  (import "extism:host/env" "error_set" (func $error (param i64)))
  (func (export "on_request") (result i32)
    (local $p i64)
    (local.set $p (call $alloc (i64.const 2)))
    (call $store (local.get $p) (i32.const 0x6e)) ;; n
    (call $store (i64.add (local.get $p) (i64.const 1)) (i32.const 0x6f)) ;; o
    (call $error (local.get $p))
    (i32.const 1)))
