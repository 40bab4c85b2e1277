#!/bin/sh
# Entrypoint of the geth services in docker-compose.yml: initialise the datadir
# from genesis.json on first start, write the static peer list, run geth.
#
# NODEKEY      devp2p key (hex); fixed so that other nodes can name this one.
# STATIC_PEERS comma-separated, quoted enode URLs to keep connected.
# GETH_EXTRA_ARGS more geth flags, e.g. --miner.recommit=100ms for stage 4.
# GETH_HTTP_API   the HTTP API's namespaces (default eth,net,web3,txpool: no
#                 admin or debug, which let any caller reconfigure the node).
# GETH_CORS       origins a browser page may call from (default: none).
# GETH_HTTP_VHOSTS Host names the HTTP API answers (default: localhost and
#                 the compose service names).
#
# Metrics for Prometheus (the monitoring profile) on 6060, path
# /debug/metrics/prometheus, reached by service name and never published.
#
# Like the devnet's geths, these run crash-safe (--gcmode archive
# --state.scheme hash): after `docker kill` (SIGKILL) a lone geth comes back
# at its last block on disk instead of stuck in snap sync. See the README's
# troubleshooting.
set -eu

if [ ! -d /data/geth/chaindata ]; then
  geth init --datadir /data --state.scheme hash /config/genesis.json
fi

printf '[Node.P2P]\nStaticNodes = [%s]\nTrustedNodes = [%s]\n' "${STATIC_PEERS:-}" "${STATIC_PEERS:-}" > /data/peers.toml

exec geth \
  --datadir /data \
  --config /data/peers.toml \
  --networkid 1337 \
  --syncmode full \
  --gcmode archive --state.scheme hash \
  --nodekeyhex "$NODEKEY" \
  --http --http.addr 0.0.0.0 --http.port 8545 --http.vhosts "${GETH_HTTP_VHOSTS:-localhost,geth,geth-member,geth-2,geth-3}" \
  --http.api "${GETH_HTTP_API:-eth,net,web3,txpool}" \
  ${GETH_CORS:+--http.corsdomain "$GETH_CORS" --ws.origins "$GETH_CORS"} \
  --ws --ws.addr 0.0.0.0 --ws.port 8545 --ws.api eth,net,web3,txpool \
  --authrpc.addr 0.0.0.0 --authrpc.port 8551 --authrpc.vhosts '*' \
  --authrpc.jwtsecret /config/jwt.hex \
  --port 30303 --nodiscover \
  --metrics --metrics.addr 0.0.0.0 --metrics.port 6060 \
  --verbosity 3 \
  ${GETH_EXTRA_ARGS:-}
