# The tutorial's commands. `make run` and `make test` are the two to know.

SHELL       := /bin/bash
MODULES     := devnet $(wildcard 0*-*)
BIN         := $(CURDIR)/bin
DEVNET      := $(BIN)/devnet
# staticcheck 2026.2.2
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
GOTEST      := go test -count=1 -timeout 30m

.PHONY: test-faults build-darwin reset run run-stage1 run-stage3 run-stage4 test test-unit diff-stats lint bench bench-burst bench-soak devnet-up devnet-down devnet-status compose-up compose-down clean

$(DEVNET): $(shell find devnet -name '*.go') devnet/go.mod
	go build -o $(DEVNET) ./devnet/cmd/devnet

## run: start the local network (no Docker) and the default stage (2), with transfers to include
run: $(DEVNET)
	$(DEVNET) up --geth 2
	go build -o $(BIN)/single-node ./02-single-node/cmd
	@echo "--- sending transfers to geth (RPC 8545) while stage 2 makes a block per second; Ctrl-C stops it;"
	@echo "--- metrics on http://localhost:8080/metrics; stop the network with: make devnet-down"
	$(DEVNET) send --rpc-url http://localhost:8545 --count 0 --interval 250ms >/dev/null & \
	  trap 'kill $$! 2>/dev/null' EXIT; \
	  $(BIN)/single-node --instance-id node-1 --jwt-secret jwt.hex --genesis genesis.json --data-dir .devnet/cl

## run-stage1: stage 1 against the same network: 8 blocks, every Engine API call printed
run-stage1: $(DEVNET)
	$(DEVNET) up --geth 2
	go build -o $(BIN)/engine-api ./01-engine-api
	$(DEVNET) send --rpc-url http://localhost:8545 --count 20 --interval 250ms >/dev/null & \
	  trap 'kill $$! 2>/dev/null' EXIT; \
	  $(BIN)/engine-api --jwt-secret jwt.hex --genesis genesis.json --blocks 8 --interval 700ms

## run-stage3: stage 3 without Docker: two leader candidates on the cluster PostgreSQL (5432)
## and two members with their own (5433, 5434), each node with its own geth; transfers go to
## member-1's geth. leader-1 runs in the foreground: Ctrl-C it and leader-2 takes over; a
## second Ctrl-C stops the rest (scripts/run-cluster.sh).
## (A network left by stage 2 holds another chain: `bin/devnet down --wipe` first.)
run-stage3: $(DEVNET)
	scripts/run-cluster.sh stage3

## run-stage4: stage 4 without Docker: four validators, each with its own geth (Engine API
## 8551-8554, geth rebuilding payloads every 100 ms for optimistic building), and a full node,
## validator-4 (8555), that `validator add` can make a validator; transfers go to
## validator-1's geth. validator-0 runs in the foreground: Ctrl-C it and the other three go
## on; a second Ctrl-C stops them (scripts/run-cluster.sh).
## (A network left by another stage holds another chain: `bin/devnet down --wipe` first.)
run-stage4: $(DEVNET)
	scripts/run-cluster.sh stage4

## test: every module's tests, integration tests against real geth/Redis/PostgreSQL included,
## each module built and tested on its own (GOWORK=off) as a reader who copies it out would
test: build-darwin
	@for m in $(MODULES); do \
	  echo "=== $$m"; \
	  (cd $$m && GOWORK=off go build -o /dev/null ./... && GOWORK=off GOFLAGS= $(GOTEST) ./...) || exit 1; \
	done

## test-faults: the fault tests, in files built with -tags netfaults: stages 3 and 4 with a
## devnet fault point on every link (partitions, a link cut, latency), and each stage's lone
## geth on its default storage SIGKILLed; apart from make test, which they would push past
## 25 minutes on two cores. CI runs both. Each stage must have at least its count of them.
test-faults:
	@for m in 01-engine-api:1 02-single-node:1 03-member-nodes:5 04-cometbft-consensus:4; do \
	  mod=$${m%%:*}; want=$${m##*:}; \
	  echo "=== $$mod (faults)"; \
	  n=$$(cd $$mod && GOWORK=off go test -tags netfaults -list '^TestFault' ./... | grep -c '^TestFault'); \
	  [ "$$n" -ge "$$want" ] || { echo "$$mod: $$n fault tests found, want $$want or more (-tags netfaults, names TestFault*)"; exit 1; }; \
	  (cd $$mod && GOWORK=off GOFLAGS= $(GOTEST) -tags netfaults -run '^TestFault' ./...) || exit 1; \
	done

## build-darwin: every module builds for macOS (the docker-free path runs there
## untested; see README.md, Platforms)
build-darwin:
	@for m in $(MODULES); do \
	  (cd $$m && GOWORK=off GOOS=darwin GOARCH=arm64 go build ./...) || exit 1; \
	done

## test-unit: the tests that need no real process (fakes only), every module:
## go test -short skips the integration tests (devnet.SkipIfShort)
test-unit:
	@for m in $(MODULES); do \
	  echo "=== $$m"; \
	  (cd $$m && GOWORK=off go test -short ./...) || exit 1; \
	done

## diff-stats: changed lines per file between consecutive stages (scripts/stage-diff.sh)
diff-stats:
	@scripts/stage-diff.sh

## lint: gofmt, go vet and staticcheck on every module
lint:
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	@for m in $(MODULES); do \
	  echo "=== $$m"; \
	  (cd $$m && GOWORK=off go vet ./... && GOWORK=off go vet -tags "byzantine faults netfaults" ./... && GOWORK=off GOFLAGS= go run $(STATICCHECK) ./... && GOWORK=off GOFLAGS= go run $(STATICCHECK) -tags netfaults ./...) || exit 1; \
	done

## bench: benchmarks that print figures (stages 2-4 add theirs), then bench-burst
bench:
	@found=0; for m in $(MODULES); do \
	  if grep -rqs --include='*_test.go' '^func Benchmark' $$m; then \
	    found=1; (cd $$m && GOWORK=off go test -run '^$$' -bench . -skip '^(BenchmarkBurst|BenchmarkStandbySoak)$$' -benchtime 1x -timeout 60m ./...) || exit 1; \
	  fi; \
	done; [ $$found = 1 ] || echo "no benchmarks yet: stage 2 adds the first ones"
	@$(MAKE) --no-print-directory bench-burst

## bench-soak: stage 3's standby candidate under 200 tx/s for 10 minutes (STAGE3_SOAK=2m
## for a shorter run), then promoted: writes 03-member-nodes/BENCHMARKS-soak.md
bench-soak:
	cd 03-member-nodes && GOWORK=off go test -run '^$$' -bench '^BenchmarkStandbySoak$$' -benchtime 1x -timeout 60m ./e2e

## bench-burst: stage 2's burst, then stage 4's compared with it, in one run
bench-burst:
	@out=$$(cd 02-single-node && GOWORK=off go test -run '^$$' -bench '^BenchmarkBurst$$' -benchtime 1x -timeout 30m ./e2e) || { echo "$$out"; exit 1; }; \
	echo "$$out"; \
	txs=$$(echo "$$out" | awk '{for (i = 2; i <= NF; i++) if ($$i == "stage2-burst-tx/s") print $$(i-1)}'); \
	[ -n "$$txs" ] || { echo "stage 2's BenchmarkBurst reported no stage2-burst-tx/s"; exit 1; }; \
	cd 04-cometbft-consensus && STAGE2_BURST_TXS=$$txs GOWORK=off go test -run '^$$' -bench '^BenchmarkBurst$$' -benchtime 1x -timeout 30m ./e2e

## devnet-up / devnet-down: the local network on docker-compose's ports, without Docker
devnet-up: $(DEVNET)
	$(DEVNET) up --geth 2 --redis --postgres 2

devnet-down: $(DEVNET)
	$(DEVNET) down

devnet-status: $(DEVNET)
	$(DEVNET) status

## compose-up / compose-down: the same network with Docker
compose-up:
	docker compose up -d

compose-down:
	docker compose down

## reset: a fresh chain everywhere: the devnet's processes and data (.devnet), and the
## compose containers and volumes when Docker is installed
reset: $(DEVNET)
	$(DEVNET) down --wipe
	@if docker compose version >/dev/null 2>&1; then \
	  docker compose --profile validators down -v --remove-orphans || echo "compose volumes not removed (is the Docker engine running?)"; \
	else echo "no docker compose here: only the devnet was reset"; fi

clean: devnet-down
	rm -rf $(BIN) .devnet
