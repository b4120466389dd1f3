;; Endless loop in on_request: must be stopped by the call deadline.
(module
  (func (export "on_request") (result i32)
    (loop $l (br $l))
    (i32.const 0)))
