// Package engine is a client for geth's authenticated Engine API endpoint:
// forkchoiceUpdated, getPayload and newPayload in the versions the chain's
// fork schedule requires, the eth_* reads the CL needs, and the
// newPendingTransactions subscription, all over one URL (geth serves the
// "eth" and "engine" namespaces on --authrpc.port, over HTTP and WebSocket).
//
// Every failure is classified: callers tell a permanent verdict (INVALID)
// from a transient one (geth unreachable, SYNCING) with errors.Is on the
// sentinels in errors.go, never by matching strings.
package engine
