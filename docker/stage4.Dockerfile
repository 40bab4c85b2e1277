# The stage-4 validator image for docker-compose's "validators" profile:
#   docker compose --profile validators up -d
# Built from the repository root: stage 4's go.mod points at ../devnet (its
# tests' local network), so both directories go into the build.
FROM golang:1.26-alpine AS build
WORKDIR /src
COPY devnet ./devnet
COPY 04-cometbft-consensus ./04-cometbft-consensus
WORKDIR /src/04-cometbft-consensus
RUN GOWORK=off CGO_ENABLED=0 go build -trimpath -o /out/cometbft-consensus ./cmd

FROM alpine:3.22
COPY --from=build /out/cometbft-consensus /usr/local/bin/cometbft-consensus
ENTRYPOINT ["cometbft-consensus"]
