package node

import (
	"testing"
	"time"
)

func TestBuildWaitLearns(t *testing.T) {
	const ms = time.Millisecond
	type step struct {
		do   func(w *buildWait)
		n    int    // pending transactions for the wait checked after do
		gas  uint64 // busy: gas expected
		want time.Duration
	}
	// transfers is the wait's gas term for gas at the initial perMgas.
	transfers := func(gas float64) time.Duration { return time.Duration(float64(initialPerMgas) * gas / 1e6) }
	// A gas limit of 60 Mgas is seen first in every case, as geth's first payload shows it.
	limit := func(w *buildWait) { w.payload(60_000_000) }
	hit := func(txs int, gas uint64) func(*buildWait) { return func(w *buildWait) { w.hit(txs, gas) } }
	missed := func(wait, took time.Duration, txs int, gas uint64) func(*buildWait) {
		return func(w *buildWait) { w.missed(wait, took, txs, gas) }
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"nothing pending waits the least", []step{{do: limit, n: 0, want: ms}}},
		{"transfers: 30 µs each over the base", []step{{do: limit, n: 1000, want: ms + 30*ms}}},
		{"a block's worth caps the gas", []step{{do: limit, n: 100_000, want: ms + transfers(60e6)}}},
		{"busy: the last block's gas when more than the count", []step{{do: limit, n: 0, gas: 21_000_000, want: ms + 30*ms}}},
		{"the largest wait is max", []step{{do: limit}, {do: missed(2000*ms, 3000*ms, 49, 60_000_000), n: 60, want: 2500 * ms}}},
		{
			// The case that halted the chain: 60 transactions of 120 KB
			// calldata (1.22 Mgas each), a wait sized for transfers, and a
			// pending block geth took 40 ms to build. The pending block
			// shows the gas per transaction, and the wait for a block's
			// worth of it is enough; a slower geth raises perMgas.
			"large transactions: the pending block sets the wait",
			[]step{
				{do: limit, n: 60, want: ms + transfers(60*21000)},
				{do: missed(ms+transfers(60*21000), 40*ms, 49, 59_829_000), n: 60, want: ms + transfers(60e6)},
				{do: hit(49, 59_829_000), n: 11, want: ms + transfers(11*1_221_000)*3/4},
			},
		},
		{
			"large transactions on a slow geth: perMgas rises to the pending block's time",
			[]step{
				{do: limit}, {do: missed(3*ms, 200*ms, 49, 60_000_000), n: 49, want: 300 * ms},
			},
		},
		{
			"a miss raises the base when few transactions are pending",
			[]step{{do: limit}, {do: missed(ms, 0, 1, 21_000), n: 1, want: 2 * ms}},
		},
		{
			"a miss raises perMgas when the gas dominates",
			[]step{{do: limit}, {do: missed(ms+30*ms, 0, 1000, 21_000_000), n: 1000, want: 2 * (ms + 30*ms)}},
		},
		{
			"hits shrink the wait back to the base",
			[]step{
				{do: limit}, {do: missed(31*ms, 0, 1000, 21_000_000)},
				{do: hit(1000, 21_000_000)}, {do: hit(1000, 21_000_000)}, {do: hit(1000, 21_000_000)},
				{do: hit(1000, 21_000_000)}, {do: hit(1000, 21_000_000)}, {do: hit(1000, 21_000_000), n: 0, want: ms},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newBuildWait(ms, 2500*ms)
			for i, s := range tc.steps {
				s.do(w)
				if s.want == 0 {
					continue
				}
				if got := w.next(s.n, s.gas); !near(got, s.want) {
					t.Errorf("step %d: next(%d, %d) = %s, want %s", i, s.n, s.gas, got, s.want)
				}
			}
		})
	}
}

// The wait never falls below min, however low perMgas gets.
func TestBuildWaitFloor(t *testing.T) {
	w := newBuildWait(5*time.Millisecond, time.Second)
	w.payload(60_000_000)
	for range 100 {
		w.hit(1, 21_000)
	}
	if w.perMgas != minPerMgas || w.base != 5*time.Millisecond {
		t.Errorf("after 100 hits: perMgas %s base %s, want %s and the floor", w.perMgas, w.base, minPerMgas)
	}
	if got := w.next(0, 0); got != 5*time.Millisecond {
		t.Errorf("next = %s, want the floor", got)
	}
}

func near(a, b time.Duration) bool {
	d := a - b
	return d < time.Microsecond && d > -time.Microsecond
}
