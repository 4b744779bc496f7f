# iotgate's entry points. On a fresh Debian 12 machine `make test` and
# `make dev` install what is missing themselves (scripts/deps.sh).
#
#   make test    vet, check api/openapi/, run every test (integration tests start
#                real PostgreSQL, Prosody and ejabberd on 127.0.0.1)
#   make dev     run iotgate with a throwaway PostgreSQL and Prosody
#   make build   build the commands into bin/
#   make docs    regenerate the OpenAPI description in api/openapi/ (and
#                the client, as make client does)
#   make client  regenerate the OpenAPI 3 form (api/openapi/openapi3.json)
#                and the Go client (api/client/client.gen.go) from
#                api/openapi/swagger.json
#   make fuzz    run each fuzz target for FUZZTIME
#   make bench   measure iotgate on this machine (cmd/iotgate-bench; the
#                table goes to stdout, progress to stderr; ~6 minutes)
#   make clean   remove bin/ and the dev runner's state (.dev/)
#   make screenshots  regenerate docs/console/*.png from a real run of the
#                web console (TestE2EConsole: chromium, PostgreSQL, Prosody,
#                simulated thermostats)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build

# Our machines have Go in /usr/local/go, which a non-login shell (CI) may
# not have on PATH.
export PATH := $(PATH):/usr/local/go/bin

GO ?= go
# The whole CI run must stay well under its 90 minutes on 2 cores.
TEST_TIMEOUT ?= 20m
# Integration tests (real servers, started by internal/servers) sit
# behind this build tag so that a bare `go test ./...` stays quick; `make
# test` always runs them, and they fail, never skip, without their servers.
TAGS ?= integration
# More `go test` flags, e.g. make test TESTFLAGS='-run TestX -v'.
TESTFLAGS ?=
FUZZTIME ?= 20s
# make test fuzzes each target this long, so parsers of untrusted input
# get some fuzzing on every CI run (0 skips it).
TEST_FUZZTIME ?= 15s
# Flags for the dev runner, e.g. make dev DEV_ARGS='-xmpp ejabberd'.
DEV_ARGS ?=
# Flags for the benchmark, e.g. make bench BENCH_ARGS='-server ejabberd'
# or BENCH_ARGS='-scenarios ingest,reads -runs 5'.
BENCH_ARGS ?=

# Where the generated OpenAPI description lives: a package of its own
# beside the api package that owns its annotations and serves it, so that
# docs/ holds only hand-written pages. swag names the Go package after the
# output directory's last element (openapi).
SWAG_DIR := api/openapi
# How swag generates $(SWAG_DIR) from the annotations in api/. Keep it in
# step with the command in api/doc.go (the api package owns it); the output
# directory is added by the targets. swag walks ./api recursively, so its
# own output is excluded from its input.
SWAG_ARGS ?= --generalInfo doc.go --dir ./api --exclude ./$(SWAG_DIR) --outputTypes go,json,yaml --parseDependencyLevel 1 --parseInternal=false
# The files swag writes, which docs-check compares.
SWAG_FILES := docs.go swagger.json swagger.yaml

.PHONY: build deps test vet docs docs-check client fuzz dev clean bench screenshots

build:
	$(GO) build -o bin/ ./cmd/...

deps:
	@bash scripts/deps.sh

vet:
	$(GO) vet -tags '$(TAGS)' ./...

test: deps
	@echo "==> go vet -tags '$(TAGS)' ./..."
	@$(GO) vet -tags '$(TAGS)' ./...
	@echo "==> make docs-check"
	@$(MAKE) --no-print-directory docs-check
	@echo "==> go test -race -tags '$(TAGS)' ./... (integration tests start real PostgreSQL, Prosody and ejabberd)"
	IOTGATE_INTEGRATION=1 CGO_ENABLED=1 $(GO) test -race -tags '$(TAGS)' -count=1 -timeout $(TEST_TIMEOUT) $(TESTFLAGS) ./...
	@if [ "$(TEST_FUZZTIME)" != "0" ]; then $(MAKE) --no-print-directory fuzz FUZZTIME=$(TEST_FUZZTIME); fi
	@echo "==> make test: all passed"

docs:
	$(GO) tool swag init $(SWAG_ARGS) --output $(SWAG_DIR)
	@$(MAKE) --no-print-directory client

# The client and the OpenAPI 3 form are made from swagger.json by
# api/client's TestGenerated (kin-openapi converts, oapi-codegen generates;
# no network): with -update it writes them, and without it, in make test,
# it fails when the committed ones are stale.
client:
	$(GO) test -count=1 -run '^TestGenerated$$' ./api/client -update

# Regenerates $(SWAG_DIR) into a temporary directory and fails if it
# differs from the committed one. The temporary directory has the same last
# element, because swag names the Go package after it.
docs-check:
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	out="$$tmp/$(notdir $(SWAG_DIR))"; \
	if ! $(GO) tool swag init $(SWAG_ARGS) --output "$$out" >"$$tmp/swag.log" 2>&1; then \
		cat "$$tmp/swag.log" >&2; echo "docs-check: swag init failed" >&2; exit 1; \
	fi; \
	stale=0; \
	for f in $(SWAG_FILES); do \
		if ! cmp -s "$(SWAG_DIR)/$$f" "$$out/$$f"; then \
			stale=1; diff -u "$(SWAG_DIR)/$$f" "$$out/$$f" | head -n 40 || true; \
		fi; \
	done; \
	if [ $$stale -ne 0 ]; then \
		echo "docs-check: $(SWAG_DIR)/ is stale: run 'make docs' and commit $(SWAG_DIR)/" >&2; exit 1; \
	fi; \
	echo "docs-check: $(SWAG_DIR)/ is up to date"

# Lists the fuzz targets of every package (go test -list prints their names,
# then "ok <package>"), and fuzzes each for FUZZTIME.
fuzz:
	@targets=$$($(GO) test -tags '$(TAGS)' -list '^Fuzz' ./... | \
		awk '/^Fuzz/ { names[n++] = $$1; next } /^ok/ { for (i = 0; i < n; i++) print $$2, names[i]; n = 0 }'); \
	if [ -z "$$targets" ]; then echo "fuzz: no fuzz targets"; exit 0; fi; \
	log=$$(mktemp); trap 'rm -f "$$log"' EXIT; \
	while read -r pkg name; do \
		echo "==> fuzz $$pkg $$name for $(FUZZTIME)"; \
		if ! $(GO) test -tags '$(TAGS)' -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) "$$pkg" 2>&1 | tee "$$log"; then \
			if grep -q 'context deadline exceeded' "$$log" && ! grep -q 'Failing input written to' "$$log"; then \
				echo "fuzz: $$name: not a failure: Go 1.26's fuzz coordinator races its own -fuzztime deadline (go.dev/issue/75804, fixed in Go 1.27); no failing input was found"; \
			else \
				exit 1; \
			fi; \
		fi; \
	done <<< "$$targets"

# Runs every scenario of cmd/iotgate-bench (3 runs each) against
# throwaway servers on 127.0.0.1 and prints the table of medians; see
# docs/benchmarks.md. make test runs its -quick smoke mode
# (cmd/iotgate-bench's TestQuick).
bench: deps
	$(GO) build -o bin/iotgate-bench ./cmd/iotgate-bench
	bin/iotgate-bench $(BENCH_ARGS)

# Built and exec'd rather than `go run`, which exits 1 on Ctrl-C even when
# the runner shut down cleanly.
dev: deps
	$(GO) build -o bin/iotgate-dev ./cmd/iotgate-dev
	exec bin/iotgate-dev $(DEV_ARGS)

# The screenshots of docs/console.md and the README are taken by the
# console's end-to-end test, against the real binary and servers, when
# IOTGATE_SCREENSHOTS names a directory.
screenshots: deps
	IOTGATE_INTEGRATION=1 IOTGATE_SCREENSHOTS=$(CURDIR)/docs/console CGO_ENABLED=1 \
		$(GO) test -race -tags '$(TAGS)' -count=1 -timeout 10m -run '^TestE2EConsole$$' ./cmd/iotgate

# The dev runner's -clean also stops servers a killed runner left behind.
clean:
	$(GO) run ./cmd/iotgate-dev -clean
	rm -rf bin
