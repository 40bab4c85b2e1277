# syntax=docker/dockerfile:1
# The stage-3 image, candidates and members alike (docker-compose's "cluster" profile).
# Built from the repository root (its go.mod points at ../devnet, its tests'
# local network, so both directories go into the build):
#   docker build -f docker/stage3.Dockerfile --build-arg VERSION=$(git describe --always) --build-arg COMMIT=$(git rev-parse HEAD) .
FROM golang:1.26-alpine AS build
WORKDIR /src
# Dependencies first: this layer is rebuilt only when go.mod or go.sum change,
# and the module and build caches persist across builds.
COPY devnet/go.mod devnet/go.sum ./devnet/
COPY 03-member-nodes/go.mod 03-member-nodes/go.sum ./03-member-nodes/
WORKDIR /src/03-member-nodes
RUN --mount=type=cache,target=/go/pkg/mod GOWORK=off go mod download
WORKDIR /src
COPY devnet ./devnet
COPY 03-member-nodes ./03-member-nodes
WORKDIR /src/03-member-nodes
ARG VERSION=dev
ARG COMMIT=
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    GOWORK=off CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w -X github.com/geth-consensus/tutorial/03-member-nodes/internal/version.release=${VERSION} -X github.com/geth-consensus/tutorial/03-member-nodes/internal/version.revision=${COMMIT}" \
    -o /out/member-nodes ./cmd

FROM alpine:3.22
# A user of its own: the node needs no privilege.
RUN adduser -D -H -u 10001 node && mkdir -p /homes /data && chown node /homes /data
COPY --from=build /out/member-nodes /usr/local/bin/member-nodes
USER node
ENTRYPOINT ["member-nodes"]
