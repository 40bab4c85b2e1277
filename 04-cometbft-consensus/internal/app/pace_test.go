package app

import (
	"testing"
	"time"
)

func TestPacerHolds(t *testing.T) {
	const ms = time.Millisecond
	p := pacer{blockTime: 1000 * ms, minGap: 250 * ms, lostRound: 450 * ms}
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	for i, step := range []struct {
		commit       time.Duration // when Commit runs, from t0
		voted, down  bool
		need         time.Duration // what the next proposer's geth needs
		want         time.Duration
		plannedAfter time.Duration // the planned start of the next height
	}{
		{commit: 0, voted: true, want: 0, plannedAfter: 0},                                    // the first height: no plan yet
		{commit: 200 * ms, voted: true, want: 800 * ms, plannedAfter: 1000 * ms},              // decided in 200 ms: held to the plan
		{commit: 1150 * ms, voted: true, down: true, want: 400 * ms, plannedAfter: 2000 * ms}, // next proposer down: released 450 ms early
		{commit: 2200 * ms, voted: true, want: 800 * ms, plannedAfter: 3000 * ms},             // (its lost round absorbed) the plan did not move
		{commit: 3900 * ms, voted: true, want: 250 * ms, plannedAfter: 4150 * ms},             // late: the next proposer still gets minGap
		{commit: 5300 * ms, voted: true, want: 250 * ms, plannedAfter: 5550 * ms},             // took longer than the block time: plan from now
		{commit: 5500 * ms, voted: false, want: 0, plannedAfter: 5500 * ms},                   // not voted (catching up): never held
		{commit: 5700 * ms, voted: true, want: 800 * ms, plannedAfter: 6500 * ms},
		{commit: 6900 * ms, voted: true, need: 1200 * ms, want: 1200 * ms, plannedAfter: 8100 * ms}, // late, a full block next: its proposer's need
		{commit: 8300 * ms, voted: true, need: 300 * ms, want: 800 * ms, plannedAfter: 9100 * ms},   // on time: the plan, the need within it
		{commit: 9800 * ms, voted: true, need: 100 * ms, want: 300 * ms, plannedAfter: 10100 * ms},  // on time, short of the plan: nothing more
	} {
		if got := p.hold(at(step.commit), step.voted, step.down, step.need); got != step.want {
			t.Errorf("step %d: held %s, want %s", i, got, step.want)
		}
		if got := p.planned.Sub(t0); got != step.plannedAfter {
			t.Errorf("step %d: next height planned at %s, want %s", i, got, step.plannedAfter)
		}
	}

	off := pacer{lostRound: 450 * ms}
	if got := off.hold(t0, true, true, time.Second); got != 0 {
		t.Fatalf("without a block time: held %s", got)
	}
}

func TestPacerRemembersMissedTurns(t *testing.T) {
	var p pacer
	a, b, c := []byte{1}, []byte{2}, []byte{3}
	p.decided(a, a) // a proposed in round 0
	p.decided(b, c) // b's round 0 failed: c's round decided
	if p.looksDown(a) || !p.looksDown(b) || p.looksDown(c) {
		t.Fatalf("after b missed its turn: %v", p.missed)
	}
	p.decided(a, b) // b proposes again (a's round 0 failed): b is back
	if !p.looksDown(a) || p.looksDown(b) {
		t.Fatalf("after b proposed: %v", p.missed)
	}
}
