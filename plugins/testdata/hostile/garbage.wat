;; Writes output that is not a v1 action list.
(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output (param i64 i64)))
  (func (export "on_request") (result i32)
    (local $p i64)
    (local.set $p (call $alloc (i64.const 4)))
    (call $store (local.get $p) (i32.const 0x01))            ;; version ok
    (call $store (i64.add (local.get $p) (i64.const 1)) (i32.const 0x03)) ;; set path...
    (call $store (i64.add (local.get $p) (i64.const 2)) (i32.const 0xff)) ;; ...of 65535 bytes
    (call $store (i64.add (local.get $p) (i64.const 3)) (i32.const 0xff))
    (call $output (local.get $p) (i64.const 4))
    (i32.const 0)))
