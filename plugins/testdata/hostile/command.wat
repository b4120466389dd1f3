;; A WASI command: exports _start (and on_request) but not _initialize, as
;; Go's default build mode does. Refused at upload: the host never runs
;; _start, so a real command's exports would trap.
(module
  (func (export "_start"))
  (func (export "on_request") (result i32)
    (i32.const 0)))
