;; Asks for 1000 pages at once (over the cap) and traps when refused, as
;; an allocator does (AssemblyScript's): out of memory with its memory
;; nowhere near the cap.
(module
  (memory 1)
  (func (export "on_request") (result i32)
    (if (i32.eq (memory.grow (i32.const 1000)) (i32.const -1))
      (then unreachable))
    (i32.const 0)))
