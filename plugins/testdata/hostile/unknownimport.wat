;; Imports a host function Meridian does not provide: refused at upload.
(module
  (import "extism:host/user" "meridian_exec" (func $exec (param i64) (result i64)))
  (func (export "on_request") (result i32)
    (drop (call $exec (i64.const 0)))
    (i32.const 0)))
