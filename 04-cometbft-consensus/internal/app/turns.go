package app

import "bytes"

// turns remembers which validators missed their last round-0 turn as
// proposer: a height whose round-0 proposer looks down will likely need
// round 1, so round 1's proposer builds its payload early too (startNext).
//
// A round-0 proposer missed its turn when its height was decided by
// another round's proposer: it was down, late, or proposed something the
// others rejected.
type turns struct {
	missed   map[string]bool // validators whose last round-0 turn failed, by address
	lastLate bool            // the last height was decided after its round 0
}

// decided records who proposed a decided block, and who was the round-0
// proposer of its height.
func (p *turns) decided(roundZero, proposer []byte) {
	if p.missed == nil {
		p.missed = map[string]bool{}
	}
	p.lastLate = !bytes.Equal(roundZero, proposer)
	if p.lastLate {
		p.missed[string(roundZero)] = true
	}
	delete(p.missed, string(proposer))
}

// looksDown reports whether validator addr missed its last round-0 turn.
func (p *turns) looksDown(addr []byte) bool { return p.missed[string(addr)] }
