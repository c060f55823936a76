# personad: build, run, test and the house checks.
#
# Needs nothing but Go: buf, protoc-gen-go, protoc-gen-go-grpc, staticcheck
# and benchstat are pinned as `tool` lines in go.mod and run with `go tool`
# (the first build of buf takes about 80 s, then it is cached).
#
#   make run     build and serve the demo world (seeded into ./data if empty)
#   make test    race tests, plus every benchmark once so none can rot
#   make check   gofmt, vet, staticcheck, tidy go.mod, proto in sync, guards
#   make bench   benchmarks for benchstat (bench.txt), then load scenarios
#   make proto   regenerate proto/personad/v1 from the .proto files

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build
.DELETE_ON_ERROR:

GO ?= go
# -mod=mod lets a build add a missing go.sum line instead of stopping; a
# go.mod that needs changing is still caught, by `go mod tidy -diff` in check.
GOFLAGS ?= -mod=mod
export GOFLAGS

BIN := bin
# Packages for test, test-bench-once and bench, e.g. make test PKGS=./rules/...
PKGS ?= ./...
DATA_DIR ?= ./data
RUN_FLAGS ?=

# go test -timeout applies per test binary. The whole of `make test` must
# stay under ~10 minutes on 2 cores.
TEST_TIMEOUT ?= 5m
TEST_FLAGS ?=
# Benchmarks also run once in `make test` (-benchtime=1x) so they cannot
# rot; keep their setup cheap enough for that (size big worlds lazily).
BENCH_SMOKE_TIMEOUT ?= 5m

BENCH ?= .
BENCH_COUNT ?= 10
BENCH_TIMEOUT ?= 60m
BENCH_OUT ?= bench.txt
# The load-test harness scenarios (personabench against a real server).
# Override with BENCH_SCENARIOS= to skip them.
BENCH_SCENARIOS ?= bench/scenarios.sh

FUZZTIME ?= 30s

.PHONY: build
build:
	$(GO) build -o $(BIN)/ ./cmd/...

# run: the embedded default, no external service. --demo seeds a generated,
# deterministic demo world (rules file plus segment data) into $(DATA_DIR)
# when it is empty, then serves gRPC on 127.0.0.1:9090 and /metrics,
# /healthz on 127.0.0.1:8080. A second run reuses the same files.
.PHONY: run
run: build
	./$(BIN)/personad --demo --data-dir $(DATA_DIR) $(RUN_FLAGS)

.PHONY: test
test: test-race test-mapped test-norace test-bench-once

.PHONY: test-race
test-race:
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $(TEST_FLAGS) $(PKGS)

# The segment store's tests, and the engine's and bidder's over it, again
# without the race detector: race builds keep the user dictionary on the
# heap (the detector does not watch mapped memory, segments/offheap.go),
# so this run covers its memory mappings.
.PHONY: test-mapped
test-mapped:
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) $(TEST_FLAGS) ./segments/... ./engine/... ./bidder/...

# The pacing simulation at the size its goals are checked at (delivery,
# pacing error): ~10x slower under the race detector, where TestSimulate
# runs a smaller one and checks the invariants only.
.PHONY: test-norace
test-norace:
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) $(TEST_FLAGS) ./ledger/pacesim/...

# Every benchmark once, without the race detector, so benchmarks compile
# and run in CI.
.PHONY: test-bench-once
test-bench-once:
	$(GO) test -run '^$$' -bench . -benchtime=1x -count=1 -timeout $(BENCH_SMOKE_TIMEOUT) $(PKGS)

# check: the house rules, in this order (without -j): go.mod first of all,
# before any other go command gets a chance to touch it; cheap checks next.
.PHONY: check
check: check-mod check-fmt vet staticcheck check-proto guard

.PHONY: check-mod
check-mod:
	$(GO) mod tidy -diff
	$(GO) mod verify

.PHONY: check-fmt
check-fmt:
	@files="$$(find . -name '*.go' -not -path './.git/*' -not -path './$(BIN)/*' -not -path './data/*' -print0 | xargs -0 -r gofmt -l)"; \
	if [ -n "$$files" ]; then \
		echo "gofmt: these files need formatting (run gofmt -w):"; \
		echo "$$files"; \
		exit 1; \
	fi

.PHONY: vet
vet:
	$(GO) vet ./...

.PHONY: staticcheck
staticcheck:
	$(GO) tool staticcheck ./...

.PHONY: proto
proto:
	$(GO) tool buf generate

# check-proto: lint, then regenerate into a scratch directory and compare
# with the committed code, so the check does not touch the work tree and
# does not depend on what is committed yet. Catches stale, missing and
# orphaned generated files.
.PHONY: check-proto
check-proto:
	$(GO) tool buf lint
	@tmp="$$(mktemp -d)"; trap 'rm -rf "$$tmp"' EXIT; \
	$(GO) tool buf generate --output "$$tmp"; \
	status=0; \
	while IFS= read -r f; do \
		rel="$${f#"$$tmp"/}"; \
		if ! cmp -s "$$f" "$$rel"; then \
			echo "check-proto: $$rel is not what make proto generates:"; \
			diff -u "$$rel" "$$f" || true; \
			status=1; \
		fi; \
	done < <(find "$$tmp" -type f); \
	while IFS= read -r f; do \
		if [ ! -e "$$tmp/$$f" ]; then \
			echo "check-proto: $$f was generated from a .proto that no longer exists"; \
			status=1; \
		fi; \
	done < <(find proto -name '*.pb.go'); \
	if [ "$$status" -ne 0 ]; then echo "check-proto: run make proto"; fi; \
	exit "$$status"

# guard: the architecture tests (import direction, no vague package names,
# a doc comment on every package). They run in make test too.
.PHONY: guard
guard:
	$(GO) test -count=1 ./internal/deptest/

# bench: proper runs for benchstat, e.g.
#   make bench BENCH_OUT=old.txt; (change); make bench BENCH_OUT=new.txt
#   make benchstat OLD=old.txt NEW=new.txt
# then the load-harness scenarios, when bench/scenarios.sh exists.
.PHONY: bench
bench:
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchmem -count=$(BENCH_COUNT) -timeout $(BENCH_TIMEOUT) $(PKGS) | tee $(BENCH_OUT)
	@if [ -z "$(BENCH_SCENARIOS)" ]; then \
		echo "make bench: load scenarios skipped (BENCH_SCENARIOS is empty)"; \
	elif [ -f "$(BENCH_SCENARIOS)" ]; then \
		bash "$(BENCH_SCENARIOS)"; \
	else \
		echo "make bench: $(BENCH_SCENARIOS) does not exist yet; load scenarios skipped"; \
	fi

OLD ?= old.txt
NEW ?= $(BENCH_OUT)
.PHONY: benchstat
benchstat:
	$(GO) tool benchstat $(OLD) $(NEW)

# fuzz: each native fuzz target for $(FUZZTIME) (go test -fuzz takes one
# target of one package at a time). Found inputs land in testdata/fuzz.
.PHONY: fuzz
fuzz:
	@found=0; \
	for pkg in $$($(GO) list -e -f '{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}}{{end}}' ./...); do \
		for target in $$($(GO) test -list '^Fuzz' "$$pkg" | grep '^Fuzz' || true); do \
			found=1; \
			echo "== $$pkg $$target"; \
			$(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) "$$pkg"; \
		done; \
	done; \
	if [ "$$found" -eq 0 ]; then echo "make fuzz: no Fuzz targets found"; fi

# clean removes build and benchmark output; it leaves $(DATA_DIR) alone,
# since it may hold uploaded segments (rm -rf ./data to reseed the demo).
.PHONY: clean
clean:
	rm -rf $(BIN) $(BENCH_OUT) *.test *.prof *.pprof
