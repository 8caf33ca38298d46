# The chat: one Go workspace (go.work) over pkg, services/* and cmd.
# `make` lists the targets.

SHELL := /bin/bash
GO    ?= go
PKGS  := ./pkg/... ./services/edge/... ./services/router/... ./services/history/... ./services/analytics/... ./cmd/... ./deploy/...
MODULES := pkg services/edge services/router services/history services/analytics cmd deploy
FUZZTIME ?= 10s
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-18s %s\n", $$1, $$2}'

.PHONY: build
build: ## Build bin/chat and bin/chatctl
	$(GO) build -o bin/chat ./cmd/chat
	$(GO) build -o bin/chatctl ./cmd/chatctl

.PHONY: run
run: build ## Run everything in one process (single-machine mode); honours CHAT_* variables
	./bin/chat -target=all

.PHONY: test
test: ## Run every test with the race detector, then a short fuzz run
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 15m $(PKGS)
	$(GO) test -run '^$$' -fuzz FuzzDecodeFrame -fuzztime $(FUZZTIME) ./pkg/chatevent
	$(GO) test -run '^$$' -fuzz FuzzParseEvent -fuzztime $(FUZZTIME) ./services/analytics

.PHONY: test-integration
test-integration: ## Run the tests against the Kafka named by TEST_KAFKA_BROKERS
	@test -n "$$TEST_KAFKA_BROKERS" || { echo "set TEST_KAFKA_BROKERS=host:port"; exit 2; }
	$(GO) test -race -count=1 ./services/edge/...

.PHONY: fuzz
fuzz: ## Fuzz frame decoding for longer (FUZZTIME=5m)
	$(GO) test -run '^$$' -fuzz FuzzDecodeFrame -fuzztime $(FUZZTIME) ./pkg/chatevent

.PHONY: bench
bench: build ## Fan-out: K=1000 in one room, stepped rates, chat vs gorilla's chat example (see bench/README.md)
	$(GO) run ./cmd/chatbench fanout -chat bin/chat $(BENCHFLAGS)

.PHONY: bench-fanout5k
bench-fanout5k: build ## Fan-out at K=5000, 50 msg/s: loss and p99, chat vs gorilla's chat example
	$(GO) run ./cmd/chatbench fanout -chat bin/chat -k 5000 -rates 50 $(BENCHFLAGS)

.PHONY: bench-setup
bench-setup: build ## Connection setup rate (5000 connections, 50 dialers, JWT included), chat vs the example
	$(GO) run ./cmd/chatbench setup -chat bin/chat $(BENCHFLAGS)

.PHONY: bench-idle
bench-idle: build ## Memory per idle connection at 10 000 connections (whole process tree), chat vs the example
	$(GO) run ./cmd/chatbench idle -chat bin/chat $(BENCHFLAGS)

.PHONY: bench-rooms
bench-rooms: build ## 1000 rooms × 10 subscribers, 2k-20k msg/s, chat vs Centrifugo v6.9.1: ack and delivery p99, CPU (target: 10k msg/s, 50/100 ms)
	$(GO) run ./cmd/chatbench rooms -chat bin/chat $(BENCHFLAGS)

.PHONY: bench-unserved
bench-unserved: build ## Edge CPU per log record of a room it does not serve (200 000 records; target ≤ 2 µs)
	$(GO) run ./cmd/chatbench unserved -chat bin/chat $(BENCHFLAGS)

.PHONY: bench-ingest
bench-ingest: build ## History: log → PostgreSQL ingest rate vs a bare COPY (1M events), API page latency
	$(GO) run ./cmd/chatbench ingest $(BENCHFLAGS)

.PHONY: bench-analytics
bench-analytics: build ## Analytics: JSON lines and log vs an encoding/json baseline (1M and 5M events)
	$(GO) run ./cmd/chatbench analytics -chat bin/chat $(BENCHFLAGS)

.PHONY: bench-dm
bench-dm: build ## Router: DM latency (two log hops) vs room latency at 100, 1000 and 2000 msg/s, 1000 users; DMs/s per router core
	$(GO) run ./cmd/chatbench dm -chat bin/chat $(BENCHFLAGS)

.PHONY: bench-storm
bench-storm: build ## Reconnect storm: SIGTERM drains edge A, 5000 clients resume on edge B with since; gaps, duplicates, edge B memory and CPU
	$(GO) run ./cmd/chatbench -timeout 10m storm -chat bin/chat $(BENCHFLAGS)

.PHONY: lint
lint: ## gofmt, go vet, staticcheck
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) run $(STATICCHECK) $(PKGS)

.PHONY: tidy
tidy: ## go mod tidy in each module, then go work sync
	for m in $(MODULES); do (cd $$m && $(GO) mod tidy) || exit 1; done
	$(GO) work sync

.PHONY: generate
generate: ## Regenerate the contract's golden files after an intended wire change
	$(GO) test ./pkg/chatevent -run TestEventWireFormat -update

.PHONY: compose-up
compose-up: ## Start the multi-process deployment with Docker Compose
	docker compose -f deploy/compose/compose.yaml up --build

.PHONY: compose-down
compose-down: ## Stop the Docker Compose deployment
	docker compose -f deploy/compose/compose.yaml down

.PHONY: check
check: lint test ## What CI runs

.PHONY: clean
clean: ## Remove build outputs (not ./data)
	rm -rf bin
