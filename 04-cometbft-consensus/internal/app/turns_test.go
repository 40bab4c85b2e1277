package app

import "testing"

func TestTurnsRemembersMissedTurns(t *testing.T) {
	var p turns
	a, b, c := []byte{1}, []byte{2}, []byte{3}
	p.decided(a, a) // a proposed in round 0
	if p.lastLate {
		t.Fatal("decided in round 0 but counted late")
	}
	p.decided(b, c) // b's round 0 failed: c's round decided
	if p.looksDown(a) || !p.looksDown(b) || p.looksDown(c) || !p.lastLate {
		t.Fatalf("after b missed its turn: %v, late %v", p.missed, p.lastLate)
	}
	p.decided(a, b) // b proposes again (a's round 0 failed): b is back
	if !p.looksDown(a) || p.looksDown(b) {
		t.Fatalf("after b proposed: %v", p.missed)
	}
}
