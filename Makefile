# vzd: run `make help` for the targets.
GO      ?= go
BIN     := bin/vzd
export GOFLAGS := -buildvcs=false
# Privileged tests fail instead of skipping when run as root (as CI does),
# so that a skipped kernel test is never reported as a pass.
PRIV    := $(shell [ "$$(id -u)" = 0 ] && echo 1 || echo 0)
DEMO_ROOT ?= /var/tmp/vzd-demo

.PHONY: help build deps test test-unit test-root acceptance acceptance-debian \
	bench run run-clean clean-test lint fmt-check fuzz

help: ## list targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

build: ## build bin/vzd
	$(GO) build -o $(BIN) ./cmd/vzd

deps: ## install the Debian packages and Go modules the tests need
	scripts/deps.sh test
	$(GO) mod download

fmt-check: ## fail when gofmt would change a file
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

lint: ## go vet
	$(GO) vet ./...

test-unit: ## pure tests with the race detector (any user)
	$(GO) test -race -count=1 ./spec/... ./reconciler/... ./systemd/...

test-root: ## every package, privileged tests included (root, real kernel)
	VZD_TEST_PRIVILEGED=$(PRIV) $(GO) test -count=1 -p 1 -timeout 25m ./...

test: deps fmt-check lint build test-unit test-root clean-test ## everything CI runs
	@echo "make test: all passed"

acceptance: build ## black-box tests of the real binary (root)
	VZD_TEST_PRIVILEGED=$(PRIV) $(GO) test -count=1 -p 1 -timeout 25m ./acceptance/...

acceptance-debian: build ## Debian template, systemd boot and nginx app template (slow; root)
	scripts/deps.sh debian
	VZD_TEST_DEBIAN=1 VZD_TEST_PRIVILEGED=$(PRIV) $(GO) test -count=1 -p 1 -timeout 60m -run Debian ./...

fuzz: ## run each fuzz target for 60 s
	$(GO) test ./spec -run '^$$' -fuzz '^FuzzHCL$$' -fuzztime 60s
	$(GO) test ./spec -run '^$$' -fuzz '^FuzzLegacy$$' -fuzztime 60s
	$(GO) test ./dedup -run '^$$' -fuzz '^FuzzSHA1x2$$' -fuzztime 60s

bench: build ## benchmarks against peers; writes docs/BENCHMARKS.md
	scripts/deps.sh bench
	scripts/bench.sh

run: build ## install what is needed, build, and run the agent on examples/demo under $(DEMO_ROOT)
	scripts/deps.sh run
	scripts/demo.sh run $(DEMO_ROOT)

run-clean: ## stop and remove the demo containers and their sandbox root
	scripts/demo.sh clean $(DEMO_ROOT)

clean-test: ## remove mounts, loop devices, netns and veths a failed test left behind
	scripts/clean-test.sh
