;; The native host's Extism kernel module (extism:host/env), one instance per
;; plugin instance. kernel.wasm is this file compiled with
;;
;;   wat2wasm kernel.wat -o kernel.wasm
;;
;; (TestKernelWasmIsBuiltFromSource checks they match.)
;;
;; Why a wasm module: a plugin calls the kernel for every 8 bytes it reads
;; or writes, and a call from wasm into a Go function costs about 45 ns in
;; wazero (it leaves the machine code for the Go scheduler's stack and comes
;; back), while a call into another wasm module is a plain call (about
;; 3 ns). So the functions a plugin calls per word or per request (input,
;; load, store, output, error, and alloc's common case) are here, in wasm,
;; and the rest (free, length, config, vars, logs, alloc's other cases) are
;; Go functions (kernel.go, env.go) that this module imports from
;; meridian:host/kernel and exports again under their Extism names; wazero
;; links a plugin's import of a re-exported function straight to the Go
;; function.
;;
;; The memory is this module's own (not exported: a plugin reaches it only
;; through the functions below) and Go owns its layout (kernel.go):
;;
;;   0   input length           24  output offset
;;   8   first block address    32  output length
;;   16  end of allocated bytes 40  error block offset
;;   48  alloc's limit          56  blocks alloc made that Go has not seen
;;   64  those blocks: 8 records of (address, size)
;;   192 the call's input, then zero padding up to the first block
;;
;; Block offsets handed to the plugin are addresses in this memory; every
;; load and store is checked against [first block, end), so a plugin can
;; read and write only the blocks of its own call.
;;
;; alloc is here too for its common case, a new block at the end: it
;; records the block for Go (which takes the records into its block table
;; before it next looks at the blocks) and moves end, within the limit Go
;; sets so that the kernel's cap holds even with all 8 records used. Go
;; sets the limit to end while freed blocks exist (to reuse them first) and
;; when the cap or the memory is near: then, and when the records are all
;; used, alloc calls Go's. Every function here is straight-line code.
(module
  (import "meridian:host/kernel" "alloc" (func $goalloc (param i64) (result i64)))
  (import "meridian:host/kernel" "free" (func $free (param i64)))
  (import "meridian:host/kernel" "length" (func $length (param i64) (result i64)))
  (import "meridian:host/kernel" "length_unsafe" (func $length_unsafe (param i64) (result i64)))
  (import "meridian:host/kernel" "config_get" (func $config_get (param i64) (result i64)))
  (import "meridian:host/kernel" "var_get" (func $var_get (param i64) (result i64)))
  (import "meridian:host/kernel" "var_set" (func $var_set (param i64 i64)))
  (import "meridian:host/kernel" "get_log_level" (func $get_log_level (result i32)))
  (import "meridian:host/kernel" "log_trace" (func $log_trace (param i64)))
  (import "meridian:host/kernel" "log_debug" (func $log_debug (param i64)))
  (import "meridian:host/kernel" "log_info" (func $log_info (param i64)))
  (import "meridian:host/kernel" "log_warn" (func $log_warn (param i64)))
  (import "meridian:host/kernel" "log_error" (func $log_error (param i64)))
  ;; fault fails the call with a message naming the function (0 load_u64,
  ;; 1 store_u64) and the offset; it does not return.
  (import "meridian:host/kernel" "fault" (func $fault (param i32 i64)))

  (memory 1)

  (export "free" (func $free))
  (export "length" (func $length))
  (export "length_unsafe" (func $length_unsafe))
  (export "config_get" (func $config_get))
  (export "var_get" (func $var_get))
  (export "var_set" (func $var_set))
  (export "get_log_level" (func $get_log_level))
  (export "log_trace" (func $log_trace))
  (export "log_debug" (func $log_debug))
  (export "log_info" (func $log_info))
  (export "log_warn" (func $log_warn))
  (export "log_error" (func $log_error))

  ;; alloc returns the address of a new block of n bytes, 0 for 0 bytes or
  ;; when the cap is reached.
  (func (export "alloc") (param $n i64) (result i64)
    (local $end i64) (local $limit i64) (local $p i64) (local $rec i32)
    (if (i64.eqz (local.get $n)) (then (return (i64.const 0))))
    (local.set $end (i64.load (i32.const 16)))
    (local.set $limit (i64.load (i32.const 48)))
    (local.set $p (i64.load (i32.const 56)))
    (if (i32.and
          (i32.and
            (i64.lt_u (local.get $p) (i64.const 8))
            (i64.ge_u (local.get $limit) (local.get $end)))
          (i64.le_u (local.get $n) (i64.sub (local.get $limit) (local.get $end))))
      (then
        (local.set $rec (i32.wrap_i64 (i64.shl (local.get $p) (i64.const 4))))
        (i64.store offset=64 (local.get $rec) (local.get $end))
        (i64.store offset=72 (local.get $rec) (local.get $n))
        (i64.store (i32.const 56) (i64.add (local.get $p) (i64.const 1)))
        (i64.store (i32.const 16) (i64.add (local.get $end) (local.get $n)))
        (return (local.get $end))))
    (call $goalloc (local.get $n)))

  ;; $in reports whether [off, off+n) lies within the allocated block bytes
  ;; [first block, end), without overflow for any 64-bit off and n.
  (func $in (param $off i64) (param $n i64) (result i32)
    (local $end i64)
    (local.set $end (i64.load (i32.const 16)))
    (i32.and
      (i32.and
        (i64.ge_u (local.get $off) (i64.load (i32.const 8)))
        (i64.le_u (local.get $off) (local.get $end)))
      (i64.le_u (local.get $n) (i64.sub (local.get $end) (local.get $off)))))

  ;; load_u8 reads one byte; outside the blocks it reads 0.
  (func (export "load_u8") (param $off i64) (result i32)
    (if (result i32) (call $in (local.get $off) (i64.const 1))
      (then (i32.load8_u (i32.wrap_i64 (local.get $off))))
      (else (i32.const 0))))

  ;; load_u64 reads 8 bytes little-endian; outside the blocks the call fails.
  (func (export "load_u64") (param $off i64) (result i64)
    (if (i32.eqz (call $in (local.get $off) (i64.const 8)))
      (then (call $fault (i32.const 0) (local.get $off)) (unreachable)))
    (i64.load (i32.wrap_i64 (local.get $off))))

  ;; store_u8 writes one byte; outside the blocks it is ignored.
  (func (export "store_u8") (param $off i64) (param $v i32)
    (if (call $in (local.get $off) (i64.const 1))
      (then (i32.store8 (i32.wrap_i64 (local.get $off)) (local.get $v)))))

  ;; store_u64 writes 8 bytes little-endian; outside the blocks the call fails.
  (func (export "store_u64") (param $off i64) (param $v i64)
    (if (i32.eqz (call $in (local.get $off) (i64.const 8)))
      (then (call $fault (i32.const 1) (local.get $off)) (unreachable)))
    (i64.store (i32.wrap_i64 (local.get $off)) (local.get $v)))

  (func (export "input_length") (result i64)
    (i64.load (i32.const 0)))

  ;; input_load_u8 reads input byte i, 0 past the end.
  (func (export "input_load_u8") (param $i i64) (result i32)
    (if (result i32) (i64.lt_u (local.get $i) (i64.load (i32.const 0)))
      (then (i32.load8_u offset=192 (i32.wrap_i64 (local.get $i))))
      (else (i32.const 0))))

  ;; input_load_u64 reads 8 input bytes from i; bytes past the end read as
  ;; 0 (Go keeps at least 8 zero bytes between the input and the blocks).
  (func (export "input_load_u64") (param $i i64) (result i64)
    (if (result i64) (i64.lt_u (local.get $i) (i64.load (i32.const 0)))
      (then (i64.load offset=192 (i32.wrap_i64 (local.get $i))))
      (else (i64.const 0))))

  ;; output_set records the output range; a range outside the blocks is
  ;; ignored (the call then keeps the range it had).
  (func (export "output_set") (param $off i64) (param $n i64)
    (if (call $in (local.get $off) (local.get $n))
      (then
        (i64.store (i32.const 24) (local.get $off))
        (i64.store (i32.const 32) (local.get $n)))))

  ;; error_set records the error block; 0 clears it, an offset outside the
  ;; blocks is ignored.
  (func (export "error_set") (param $off i64)
    (if (i64.eqz (local.get $off))
      (then (i64.store (i32.const 40) (i64.const 0)) (return)))
    (if (call $in (local.get $off) (i64.const 1))
      (then (i64.store (i32.const 40) (local.get $off)))))
)
