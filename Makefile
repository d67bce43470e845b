GO ?= go
BIN := bin/outbound
# Fuzz budgets count executions, not seconds: a duration races Go 1.26's
# fuzz coordinator and fails spuriously with "context deadline exceeded"
# on a loaded machine (golang/go#75804, fixed in Go 1.27).
FUZZTIME ?= 500000x

.PHONY: build test vet cross unit examples fuzz bench bench-go bench-load hey demo lint soak ui-screenshot clean

# Stamp the commit for `outbound version` where git can read the checkout;
# elsewhere (no .git, or a checkout git calls of dubious ownership) build
# without it rather than fail.
build:
	@$(GO) build -buildvcs=auto -o $(BIN) ./cmd/outbound 2>/dev/null || $(GO) build -buildvcs=false -o $(BIN) ./cmd/outbound

vet:
	$(GO) vet ./...

# Everything must build on macOS too (Intel and Apple silicon); vet also
# type-checks the tests there. Linux-only features compile to a stub that
# says so (internal/platform).
cross:
	GOOS=darwin GOARCH=amd64 $(GO) build ./...
	GOOS=darwin GOARCH=arm64 $(GO) build ./...
	GOOS=darwin GOARCH=arm64 $(GO) vet ./...

unit:
	$(GO) test -race -count=1 -timeout 10m ./...

# Every example script must compile and list its classes, and its handler
# tests (NAME.test.js beside it) must pass through the built binary.
examples: build
	@for f in examples/*.js examples/*.ts; do \
		case $$f in *.test.js|*.test.ts) continue;; esac; \
		./$(BIN) check $$f >/dev/null || { echo "example $$f does not check"; exit 1; }; \
	done; echo "examples: all scripts check"
	cd examples && ../$(BIN) test

# `unit` also runs every fuzz target, on its seeds and on the inputs
# committed under testdata/fuzz: CI stays deterministic. Exploring for new
# inputs is `make fuzz`, and what it finds is committed as corpus.
test: vet cross unit examples

# Every fuzz target explores FUZZTIME executions past its corpus; all run
# even when one fails, and a failing input is left under testdata/fuzz.
fuzz:
	@fail=0; for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
			echo "fuzz $$pkg $$f ($(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg >/tmp/outbound-fuzz.log 2>&1 || { cat /tmp/outbound-fuzz.log; fail=1; }; \
		done; \
	done; exit $$fail

STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt: $$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

bench: bench-go bench-load

bench-go:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# The outside load generator the harness reports beside its own: hey, from
# the Go module proxy, unless one is on PATH already.
HEY_MODULE := github.com/rakyll/hey@v0.1.5
HEY ?= $(shell command -v hey 2>/dev/null || echo $$($(GO) env GOPATH)/bin/hey)

hey:
	@test -x "$(HEY)" || GOFLAGS= $(GO) install $(HEY_MODULE)

bench-load: build hey
	$(GO) run ./cmd/outbound-bench -outbound $(BIN) -hey $(HEY) $(BENCHFLAGS)

# Not in CI: 1,000 keep-alive clients over 100 instances for 10 minutes,
# mixing HTTP, HTTPS, WebSocket and reloads (SOAKFLAGS=-duration 1m for less).
soak: build
	$(GO) run ./cmd/outbound-soak -outbound $(BIN) $(SOAKFLAGS)

# The README's picture of the live view, taken by its browser test (needs chromium).
ui-screenshot:
	OUTBOUND_UI_SCREENSHOT=$(CURDIR)/docs/live-view.png $(GO) test -count=1 -run '^TestLiveViewInABrowser$$' ./proxy/control/ui/

demo: build
	./$(BIN) demo

clean:
	rm -rf bin
