package e2e

import (
	"testing"
	"time"
)

// Four validators, each with its own geth: heights are decided and every
// geth holds the same block at every height, final.
func TestFourValidatorsFinalizeTheSameChain(t *testing.T) {
	nw := newNetwork(t, 4, 200*time.Millisecond, nil)
	nw.waitHeads(10, 90*time.Second)
	if low := nw.checkSameChain(); low < 10 {
		t.Fatalf("lowest head %d", low)
	}
	for _, v := range nw.vals {
		s, ok := v.status()
		if !ok || !s.Ready || s.Height < 10 || s.ExecutionHead != uint64(s.Height) {
			t.Fatalf("validator-%d status %+v (ok %v)", v.i, s, ok)
		}
	}
}
