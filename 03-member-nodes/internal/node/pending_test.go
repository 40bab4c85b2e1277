package node

import (
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/crypto"
)

// A round that included nothing parks only what geth's pool had when the
// last build started; a transaction announced during that build stays
// counted, so the next block starts at once for it.
func TestSettleParksOnlyWhatTheLastBuildSaw(t *testing.T) {
	p := newPendingSet()
	t0 := time.Unix(1_000_000, 0)
	old, fresh := crypto.Keccak256Hash([]byte("old")), crypto.Keccak256Hash([]byte("fresh"))
	p.add(old, t0)
	p.add(fresh, t0.Add(2*time.Millisecond))
	p.settle(t0.Add(time.Millisecond))
	if parked := p.parkedCount(); parked != 1 {
		t.Fatalf("parked %d, want 1", parked)
	}
	if n, _ := p.count(); n != 1 {
		t.Fatalf("counted %d after settle, want 1 (the fresh one)", n)
	}
	p.recheck()
	if _, unknown := p.count(); !unknown {
		t.Fatal("recheck did not ask for a build")
	}
	p.included([][]byte{[]byte("old"), []byte("fresh")}, t0.Add(time.Second))
	if parked := p.parkedCount(); parked != 0 {
		t.Fatalf("%d parked after the block included it", parked)
	}
	p.recheck()
	if n, unknown := p.count(); n != 0 || unknown {
		t.Fatalf("counted %d (unknown %v) after the block: nothing is left to recheck", n, unknown)
	}
}

// An included transaction's announcement is ignored for one to two
// lateWindows; after that the hash is forgotten.
func TestLateAnnouncementsAreRecognised(t *testing.T) {
	p := newPendingSet()
	t0 := time.Unix(1_000_000, 0)
	h := crypto.Keccak256Hash([]byte("tx"))
	p.included([][]byte{[]byte("tx")}, t0)
	if p.add(h, t0.Add(time.Millisecond)) {
		t.Fatal("late announcement counted")
	}
	p.included(nil, t0.Add(lateWindow+time.Second)) // rotates: h is in the previous window
	if p.add(h, t0.Add(lateWindow+2*time.Second)) {
		t.Fatal("late announcement counted one window later")
	}
	p.included(nil, t0.Add(2*lateWindow+3*time.Second)) // rotates again: h is forgotten
	if !p.add(h, t0.Add(2*lateWindow+4*time.Second)) {
		t.Fatal("a hash included two windows ago is still refused")
	}
	if n, _ := p.count(); n != 1 {
		t.Fatalf("counted %d, want 1", n)
	}
}
