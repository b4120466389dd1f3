;; The header-injection example's output with no guest work: on_request
;; writes, as one constant block, the three header actions that
;; examples/headers produces for the benchmarks' config (x-meridian-pop:
;; fra1 and X-Site: shop on the request, X-Frame-Options: DENY on the
;; response). Benchmarks set it beside the examples to tell what the host
;; spends on applying actions from what a guest spends making them.
(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u64" (func $store (param i64 i64)))
  (import "extism:host/env" "output_set" (func $output (param i64 i64)))
  (memory 1)
  ;; 60 bytes of output, padded to 64 for word stores.
  (data (i32.const 0)
    "\01"
    "\01\13\00\0e" "x-meridian-pop" "fra1"
    "\01\0b\00\06" "X-Site" "shop"
    "\0c\14\00\0f" "X-Frame-Options" "DENY"
    "\00\00\00\00")
  (func (export "on_request") (result i32)
    (local $p i64)
    (local $i i32)
    (local.set $p (call $alloc (i64.const 64)))
    (loop $copy
      (call $store
        (i64.add (local.get $p) (i64.extend_i32_u (local.get $i)))
        (i64.load (local.get $i)))
      (local.set $i (i32.add (local.get $i) (i32.const 8)))
      (br_if $copy (i32.lt_u (local.get $i) (i32.const 64))))
    (call $output (local.get $p) (i64.const 60))
    (i32.const 0)))
