;; Returns success without writing any output.
(module
  (func (export "on_request") (result i32)
    (i32.const 0)))
