# The two commands of the README:
#   go run ./cmd/meridian dev     run the whole stack on loopback
#   make test                     install what the tests need, then run them all
.PHONY: test deps check build bench

GO ?= go

# The plugin kit and the example plugins are modules of their own (plugins
# build them for wasip1), so ./... does not reach them.
NESTED := plugins/kit plugins/examples

test: deps check
	$(GO) test -race -count=1 -timeout 30m ./...
	# Allocation counts and RSS bounds mean nothing under the race detector
	# (middleware/plugin/allocs_test.go, plugins/race_test.go): checked here without it.
	$(GO) test -count=1 -run 'Allocations|BoundedMemory' ./middleware/plugin/ ./plugins/
	cd plugins/kit && $(GO) test -race -count=1 ./...

# Everything the tests use that is not a Go module: installed when missing.
deps:
	./scripts/test-deps.sh

# Formatting and vet, the first things CI looks at.
check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	# Developers run the PoP and the CLI on macOS and Windows too: the code
	# and its tests must build there (the fast socket paths are Linux's).
	GOOS=darwin $(GO) vet ./...
	GOOS=windows $(GO) vet ./...
	for m in $(NESTED); do (cd $$m && GOOS=wasip1 GOARCH=wasm $(GO) vet ./...) || exit 1; done
	cd plugins/kit && $(GO) vet ./...

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o meridian ./cmd/meridian

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...
