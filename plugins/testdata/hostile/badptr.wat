;; Calls a host function with pointers that are not blocks from alloc.
(module
  (import "extism:host/user" "meridian_kv_counter_add" (func $add (param i64 i64) (result i64)))
  (func (export "on_request") (result i32)
    (drop (call $add (i64.const 0x7fffffffffff) (i64.const 1)))
    (i32.const 0)))
