// Package devnet runs a local network for the tutorial stages without Docker:
// geth nodes built from the pinned go-ethereum module, initialised from
// genesis.json with a shared JWT secret and peered with each other, plus
// throwaway Redis and PostgreSQL servers started from the Debian binaries.
//
// The same library backs the `devnet` CLI (up, down, status) and the
// integration tests and benchmarks of every stage. Every process it starts is
// a *Process, which a test can stop, SIGKILL, SIGSTOP/SIGCONT and restart, and
// every geth datadir can be wiped and re-initialised.
//
// Ports default to the ones docker-compose.yml publishes (see Defaults); tests
// ask for free loopback ports instead so that several networks can run at
// once.
package devnet
