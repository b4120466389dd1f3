;; Grows its memory to 240 of 256 pages (all granted) and then traps for
;; another reason: a plugin that holds much memory is not out of memory.
(module
  (memory 1)
  (func (export "on_request") (result i32)
    (if (i32.eq (memory.grow (i32.const 239)) (i32.const -1))
      (then (return (i32.const 1))))
    unreachable))
