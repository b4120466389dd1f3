;; Exports no on_request: refused at upload.
(module
  (func (export "handle") (result i32) (i32.const 0)))
