;; Grows memory until the cap refuses, then traps: a memory overrun.
(module
  (memory 1)
  (func (export "on_request") (result i32)
    (loop $l
      (if (i32.eq (memory.grow (i32.const 16)) (i32.const -1))
        (then unreachable))
      (br $l))
    (i32.const 0)))
