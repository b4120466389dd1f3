;; on_request without a result (the Extism convention allows it: success):
;; accepted, continues the request.
(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output (param i64 i64)))
  (func (export "on_request")
    (local $p i64)
    (local.set $p (call $alloc (i64.const 1)))
    (call $store (local.get $p) (i32.const 0x01))
    (call $output (local.get $p) (i64.const 1))))
