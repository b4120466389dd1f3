;; Traps at once.
(module
  (func (export "on_request") (result i32)
    unreachable))
