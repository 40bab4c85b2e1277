#!/usr/bin/env bash
# The multi-node demos behind `make run-stage3` and `make run-stage4`: the
# local network, the nodes, a stream of transfers, one node in the foreground.
#
# Ctrl-C stops the foreground node only, so you can watch the others carry
# on (stage 3: leader-2 takes the lease; stage 4: three of four validators go
# on deciding heights); a second Ctrl-C stops everything. The other nodes run
# in a session of their own (setsid), where the terminal's Ctrl-C does not
# reach them, and are stopped (SIGTERM) when this script exits.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
devnet=$root/bin/devnet
logs=$root/.devnet/cl
pids=()

for tool in setsid curl; do
  command -v "$tool" >/dev/null || {
    echo "$0 needs $tool (Debian: apt-get install util-linux curl)" >&2
    exit 1
  }
done

# background NAME CMD...: run CMD in its own session, logging to NAME.log.
background() {
  local name=$1
  shift
  setsid "$@" >"$logs/$name.log" 2>&1 &
  pids+=($!)
}

stop_background() {
  ((${#pids[@]})) || return 0
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}

# foreground NOTE CMD...: run CMD until Ctrl-C, say NOTE, and wait for the
# second Ctrl-C.
foreground() {
  local note=$1
  shift
  trap stop_background EXIT
  trap : INT # the first Ctrl-C is the foreground node's; the script goes on
  "$@" || true
  echo "--- $note; Ctrl-C stops the rest"
  wait || true
}

stage3() {
  # Redis requires a password, as a shared one would; every node reads the
  # URL from the environment.
  "$devnet" up --geth 4 --redis --redis-password devnet --postgres 3
  export REDIS_URL=redis://:devnet@localhost:6379/0
  go build -o "$root/bin/member-nodes" ./03-member-nodes/cmd
  mkdir -p "$logs"
  cd 03-member-nodes # the nodes' defaults: ../jwt.hex, ../genesis.json
  local m=$root/bin/member-nodes
  background member-1 "$m" --instance-id member-1 --mode member --eth-client-url http://localhost:8552 \
    --health-addr :8081 --postgres-url "postgres://postgres:postgres@localhost:5433/consensus?sslmode=disable"
  background member-2 "$m" --instance-id member-2 --mode member --eth-client-url http://localhost:8553 \
    --health-addr :8082 --postgres-url "postgres://postgres:postgres@localhost:5434/consensus?sslmode=disable"
  # leader-2 joins once leader-1 holds the lease, so that stopping leader-1
  # shows a failover.
  background leader-2 bash -c 'until curl -sf localhost:8080/status | grep -q "\"role\":\"leader\""; do sleep 0.2; done; exec "$@"' \
    _ "$m" --instance-id leader-2 --mode leader --eth-client-url http://localhost:8554 --health-addr :8083
  # Transfers go to member-1's geth once two blocks exist: a geth drops the
  # transactions gossiped to it before its first forkchoiceUpdated, and one
  # lost nonce would hold back every later transfer.
  background sender "$devnet" send --rpc-url http://localhost:8546 --count 0 --interval 250ms --wait-block 2
  echo "--- leader-2, member-1, member-2 log to .devnet/cl/*.log; /status on :8080 to :8083; Ctrl-C stops leader-1"
  foreground "leader-1 stopped: leader-2 takes over within the lease TTL (.devnet/cl/leader-2.log, curl localhost:8083/status)" \
    "$m" --instance-id leader-1 --mode leader
}

stage4() {
  # Five geths: four validators' and a full node's (validator-4), which
  # follows the chain outside the genesis set until `validator add` makes
  # it a validator (README: Changing the validator set).
  "$devnet" up --geth 5 --geth-arg=--miner.recommit=100ms
  go build -o "$root/bin/cometbft-consensus" ./04-cometbft-consensus/cmd
  mkdir -p "$logs"
  local v=$root/bin/cometbft-consensus
  [ -d .devnet/testnet ] || "$v" testnet --validators 4 --full-nodes 1 --output .devnet/testnet
  cd 04-cometbft-consensus
  for i in 1 2 3 4; do
    if [ ! -d "$root/.devnet/testnet/validator-$i" ]; then
      echo "--- .devnet/testnet has no validator-$i (made before full nodes were): bin/devnet down --wipe, then again" >&2
      continue
    fi
    background "validator-$i" "$v" --cmt-home "$root/.devnet/testnet/validator-$i" \
      --eth-client-url "http://localhost:$((8551 + i))" --health-addr ":$((8080 + i))"
  done
  background sender "$devnet" send --rpc-url http://localhost:8546 --count 0 --interval 250ms --wait-block 2
  echo "--- validator-1..3 and the full node validator-4 log to .devnet/cl/validator-*.log; /status on :8080 to :8084; Ctrl-C stops validator-0"
  foreground "validator-0 stopped: the other three go on (curl localhost:8081/status)" \
    "$v" --cmt-home "$root/.devnet/testnet/validator-0"
}

case "${1:-}" in
stage3 | stage4) "$1" ;;
*)
  echo "usage: $0 stage3|stage4" >&2
  exit 2
  ;;
esac
