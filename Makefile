GO ?= go
BIN := bin/outbound
FUZZTIME ?= 5s

.PHONY: build test vet unit examples fuzz-ci fuzz bench demo lint soak clean

build:
	$(GO) build -o $(BIN) ./cmd/outbound

vet:
	$(GO) vet ./...

unit:
	$(GO) test -race -count=1 -timeout 10m ./...

# Every example script must compile and list its classes.
examples: build
	@for f in examples/*.js examples/*.ts; do \
		./$(BIN) check $$f >/dev/null || { echo "example $$f does not check"; exit 1; }; \
	done; echo "examples: all scripts check"

test: vet unit examples

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt: $$out"; exit 1; fi
	$(GO) vet ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

demo: build
	./$(BIN) demo

clean:
	rm -rf bin
