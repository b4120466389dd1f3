# The two commands of the README:
#   go run ./cmd/meridian dev     run the whole stack on loopback
#   make test                     install what the tests need, then run them all
.PHONY: test deps check build bench

GO ?= go

test: deps check
	$(GO) test -race -count=1 -timeout 30m ./...

# Everything the tests use that is not a Go module: installed when missing.
deps:
	./scripts/test-deps.sh

# Formatting and vet, the first things CI looks at.
check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o meridian ./cmd/meridian

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...
