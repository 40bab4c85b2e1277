package node

import "time"

// buildWait is how long the producer lets geth fill a payload between
// forkchoiceUpdated and getPayload, learnt from what geth does.
//
// geth starts filling a payload at forkchoiceUpdated, and getPayload stops
// the build and returns the best version so far: until geth's first full
// build is done, that is the empty one (miner/payload_building.go). A wait
// shorter than that build gets an empty block every time. The build takes
// time in proportion to the gas it packs (two vCPUs: 60 Mgas of transfers in
// 80-100 ms under load, 60 Mgas of 120 KB calldata transactions in 30 ms
// idle), so for n pending transactions the wait is
//
//	base + perMgas × min(gas limit, n × gasPerTx)
//
// and each term is measured:
//
//   - gasPerTx: the gas per transaction of the last block that had any, or
//     of geth's pending block after a miss;
//   - base and perMgas: after a miss (an empty payload while geth's pending
//     block holds transactions) the wait for that block's gas must be at
//     least twice the wait that missed, and 3/2 of the time geth took to
//     build the pending block: the same build, run on request, so a
//     measurement of what the wait must cover. The term that dominated is
//     raised as far as that needs. A hit shrinks base by 1/16 (no lower than
//     min, --build-wait) and perMgas by a quarter: a miss under load is
//     mostly the builder waiting for the pool's lock, and a burst lasts a
//     few dozen blocks, so a raised perMgas must fade within a few of them
//     (measured: a 5,000-transfer burst ended 400-550 ms after its last send
//     with 1/16, 60-180 ms with 1/4).
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

// Starting points: a plain transfer, which an idle two-vCPU machine builds
// in 25-30 µs (30 µs per 21,000 gas is 1.43 ms per Mgas), and the bounds
// perMgas keeps to.
const (
	transferGas    = 21_000
	initialPerMgas = 30 * time.Microsecond * 1_000_000 / transferGas
	minPerMgas     = 10 * time.Microsecond * 1_000_000 / transferGas
	maxPerMgas     = 100 * time.Millisecond
)

func newBuildWait(min, max time.Duration) *buildWait {
	return &buildWait{min: min, max: max, base: min, perMgas: initialPerMgas, gasPerTx: transferGas}
}

// next is the wait for a build with n transactions pending, or, when more,
// atLeastGas (a busy node expects about as much as its last block held).
func (w *buildWait) next(n int, atLeastGas uint64) time.Duration {
	return min(w.max, max(w.min, w.base+w.gasTerm(max(uint64(n)*w.gasPerTx, atLeastGas))))
}

// gasTerm is the part of the wait for building gas worth of transactions.
func (w *buildWait) gasTerm(gas uint64) time.Duration {
	return time.Duration(float64(w.perMgas) * float64(w.capped(gas)) / 1e6)
}

// capped is how much of gas fits one block.
func (w *buildWait) capped(gas uint64) uint64 {
	if w.gasLimit > 0 {
		return min(gas, w.gasLimit)
	}
	return gas
}

// payload records the gas limit of a payload geth built, full or empty.
func (w *buildWait) payload(gasLimit uint64) { w.gasLimit = gasLimit }

// hit learns from a payload that held txs transactions and gas.
func (w *buildWait) hit(txs int, gas uint64) {
	w.gasPerTx = max(1, gas/uint64(txs))
	w.perMgas = max(minPerMgas, w.perMgas-w.perMgas/4)
	w.base = max(w.min, w.base-w.base/16)
}

// missed learns from a payload fetched after wait that came back empty,
// while geth's pending block, which geth took `took` to build, held txs
// transactions and gas: geth could fill the payload, but not that fast.
func (w *buildWait) missed(wait, took time.Duration, txs int, gas uint64) {
	if txs > 0 {
		w.gasPerTx = max(1, gas/uint64(txs))
	}
	need := min(w.max, max(2*wait, took+took/2))
	gasTerm := w.gasTerm(gas)
	switch {
	case w.base+gasTerm >= need: // the gas per transaction was wrong, now it is not
	case gasTerm > w.base:
		w.perMgas = min(maxPerMgas, time.Duration(float64(need-w.base)*1e6/float64(w.capped(gas))))
	default:
		w.base = need - gasTerm
	}
}
