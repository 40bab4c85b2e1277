package node

import (
	"testing"
	"time"
)

func TestBuildWaitLearns(t *testing.T) {
	const ms = time.Millisecond
	// at is the wait's gas term for gas at the initial perMgas.
	at := func(gas float64) time.Duration { return time.Duration(float64(initialPerMgas) * gas / 1e6) }
	type step struct {
		do   func(w *buildWait)
		n    int    // pending transactions for the wait checked after do
		gas  uint64 // busy: gas expected
		want time.Duration
	}
	// Every case first sees a gas limit of 60 Mgas, as geth's first payload shows it.
	limit := func(w *buildWait) { w.payload(60_000_000) }
	hit := func(txs int, gas uint64) func(*buildWait) { return func(w *buildWait) { w.hit(txs, gas) } }
	pending := func(txs int, gas uint64) func(*buildWait) { return func(w *buildWait) { w.pending(txs, gas) } }
	missed := func(wait time.Duration, gas uint64) func(*buildWait) {
		return func(w *buildWait) { w.missed(wait, gas) }
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"nothing pending waits the least", []step{{do: limit, n: 0, want: ms}}},
		{"transfers: 30 µs each over the base", []step{{do: limit, n: 1000, want: ms + 30*ms}}},
		{"a block's worth caps the gas", []step{{do: limit, n: 100_000, want: ms + at(60e6)}}},
		{"busy: the last block's gas when more than the count", []step{{do: limit, n: 0, gas: 21_000_000, want: ms + 30*ms}}},
		{"a miss of few transactions doubles the wait through the base", []step{{do: limit}, {do: missed(ms+at(21_000), 21_000), n: 1, want: 2 * (ms + at(21_000))}}},
		{"a miss of many doubles it through perMgas", []step{{do: limit}, {do: missed(31*ms, 21_000_000), n: 1000, want: 62 * ms}}},
		{"a miss with --build-wait 0 still waits", []step{{do: func(w *buildWait) { w.min, w.base = 0, 0; limit(w) }}, {do: missed(0, 0), n: 0, want: minMissedWait}}},
		{"the largest wait is max", []step{{do: limit}, {do: missed(2000*ms, 60_000_000), n: 3000, want: 2500 * ms}}},
		{
			// The case that halted the chain: 60 transactions of 120 KB
			// calldata (1.22 Mgas each) waited for as 60 transfers. The
			// pending block shows their gas, and a block's worth of it is
			// waited for; the next blocks are sized by the gas per
			// transaction of the last one, not their count.
			"large transactions: the pending block shows their gas",
			[]step{
				{do: limit, n: 60, want: ms + at(60*21_000)},
				{do: pending(49, 59_829_000), n: 60, want: ms + at(60e6)},
				{do: missed(ms+at(60*21_000), 60e6), n: 60, want: ms + at(60e6)},
				{do: hit(49, 59_829_000), n: 11, want: ms + at(11*1_221_000)*3/4},
			},
		},
		{
			"hits shrink the wait back to the base",
			[]step{
				{do: limit}, {do: missed(31*ms, 21_000_000)},
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
				if got := w.next(w.expected(s.n, s.gas)); !near(got, s.want) {
					t.Errorf("step %d: wait for %d pending (at least %d gas) = %s, want %s", i, s.n, s.gas, got, s.want)
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
	if got := w.next(w.expected(0, 0)); got != 5*time.Millisecond {
		t.Errorf("next = %s, want the floor", got)
	}
}

func near(a, b time.Duration) bool {
	d := a - b
	return d < time.Microsecond && d > -time.Microsecond
}
