;; Imports Extism's http_request: refused at upload (plugins get no network).
(module
  (import "extism:host/env" "http_request" (func $http (param i64 i64) (result i64)))
  (func (export "on_request") (result i32)
    (drop (call $http (i64.const 0) (i64.const 0)))
    (i32.const 0)))
