package node

import "time"

// buildWait is how long the producer lets geth fill a payload between
// forkchoiceUpdated and getPayload, learnt from what geth does.
//
// geth starts filling a payload at forkchoiceUpdated, and getPayload stops
// the build and returns the best version so far: until geth's first full
// build is done, that is the empty one (miner/payload_building.go). A wait
// shorter than that build gets an empty block every time. The build takes
// time in proportion to the gas it packs (BENCHMARKS-design.md, Build
// wait), so for n pending transactions the wait is
//
//	base + perMgas × min(gas limit, n × gasPerTx)
//
// and each term is measured:
//
//   - gasPerTx: the gas per transaction of the last block that had any, or
//     of geth's pending block when a payload came back empty (a pool of
//     120 KB transactions holds 1.22 Mgas each, not a transfer's 21,000);
//   - base and perMgas: a miss (an empty payload while transactions are
//     pending) makes the wait for as much gas at least twice the one that
//     missed, raising the term that dominated. A hit shrinks base by 1/16
//     (no lower than min, --build-wait) and perMgas by a quarter: a miss
//     under load is mostly the builder waiting for the pool's lock, and a
//     burst lasts a few dozen blocks, so a raised perMgas must fade within
//     a few of them (a quarter, not 1/16: BENCHMARKS-design.md).
//
// The wait never exceeds max (--max-build-wait): geth stops filling a
// payload after --miner.recommit (2 s by default) and seals what it has, so
// a wait a little longer than that always gets every transaction geth can
// include.
type buildWait struct {
	min, max time.Duration
	base     time.Duration
	perMgas  time.Duration
	gasPerTx uint64
	gasLimit uint64 // of the last payload; 0 until one is seen
}

// Starting points: what a plain transfer takes geth to build on an idle
// machine (BENCHMARKS-design.md), and the bounds the terms keep to.
const (
	transferGas    = 21_000
	initialPerMgas = 30 * time.Microsecond * 1_000_000 / transferGas
	minPerMgas     = 10 * time.Microsecond * 1_000_000 / transferGas
	maxPerMgas     = 100 * time.Millisecond
	minMissedWait  = 100 * time.Microsecond // the least wait after a miss, when --build-wait is 0
)

func newBuildWait(min, max time.Duration) *buildWait {
	return &buildWait{min: min, max: max, base: min, perMgas: initialPerMgas, gasPerTx: transferGas}
}

// expected is the gas a build packs with n transactions pending, or, when
// more, atLeastGas (a busy node expects about as much as its last block).
func (w *buildWait) expected(n int, atLeastGas uint64) uint64 {
	gas := max(uint64(n)*w.gasPerTx, atLeastGas)
	if w.gasLimit > 0 {
		gas = min(gas, w.gasLimit)
	}
	return gas
}

// next is the wait for a build of gas.
func (w *buildWait) next(gas uint64) time.Duration {
	return min(w.max, max(w.min, w.base+w.gasTerm(gas)))
}

// gasTerm is the part of the wait for building gas worth of transactions.
func (w *buildWait) gasTerm(gas uint64) time.Duration {
	return time.Duration(float64(w.perMgas) * float64(gas) / 1e6)
}

// payload records the gas limit of a payload geth built, full or empty.
func (w *buildWait) payload(gasLimit uint64) { w.gasLimit = gasLimit }

// pending records geth's pending block: txs transactions and gas, what
// the pool offers now.
func (w *buildWait) pending(txs int, gas uint64) {
	if txs > 0 {
		w.gasPerTx = max(1, gas/uint64(txs))
	}
}

// hit learns from a payload that held txs transactions and gas.
func (w *buildWait) hit(txs int, gas uint64) {
	w.pending(txs, gas)
	w.perMgas = max(minPerMgas, w.perMgas-w.perMgas/4)
	w.base = max(w.min, w.base-w.base/16)
}

// missed learns from a payload fetched after wait that came back empty
// while gas worth of transactions were expected: the next wait for as much
// gas is at least twice as long, unless what the pool holds was
// misjudged (pending) and the wait for it is that long already.
func (w *buildWait) missed(wait time.Duration, gas uint64) {
	need := min(w.max, max(2*wait, minMissedWait))
	gasTerm := w.gasTerm(gas)
	switch {
	case w.base+gasTerm >= need:
	case gasTerm > w.base:
		w.perMgas = min(maxPerMgas, time.Duration(float64(need-w.base)*1e6/float64(gas)))
	default:
		w.base = need - gasTerm
	}
}
