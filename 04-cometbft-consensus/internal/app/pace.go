package app

import (
	"bytes"
	"time"
)

// pacer keeps a height starting every block time.
//
// CometBFT (the v0.38 line) starts height h+1 at the later of two moments:
// timeout_commit after the +2/3 precommits for h arrived, and the return of
// the app's Commit for h. With a short timeout_commit, Commit decides: held
// until the next planned start, it starts a height every block time, and a
// height that cost more (a round lost to a dead proposer) is absorbed by a
// shorter hold instead of being added to the block time.
//
// Even so, a height whose round-0 proposer is down ends later than the
// others (timeout_propose and a nil round come first), so its block would
// arrive late and the next one early. When that proposer missed its last
// turn (the height was decided by another round's proposer), the height
// before it is released early by the round it will likely lose: blocks
// then arrive every block time. The plan itself does not move, so a wrong
// guess costs one early block and one late one.
//
// A height committed late (one that carried a thousand transfers, say)
// would leave none of the block time to the next: its proposer's geth would
// have only PrepareProposal's budget to build, and on a busy machine it
// then hands out an empty payload while transactions wait. So the next
// height is never planned less than minGap (a quarter of the block time)
// after a commit.
type pacer struct {
	blockTime time.Duration
	minGap    time.Duration
	lostRound time.Duration
	planned   time.Time       // planned start of the height being committed; zero: none
	missed    map[string]bool // validators whose last round-0 turn failed, by address
	lastLate  bool            // the last height was decided after its round 0
}

// hold returns how long Commit should wait at now. voted: this validator
// took part in the height (its ProcessProposal ran), so the chain is live
// and it is not catching up. proposerDown: the next height's round-0
// proposer looks down. need: how long a proposer's geth needs to have
// the next payload ready; the next height is planned no sooner.
func (p *pacer) hold(now time.Time, voted, proposerDown bool, need time.Duration) time.Duration {
	if p.blockTime <= 0 || !voted {
		p.planned = now // catching up, or not pacing: the next height starts now
		return 0
	}
	next := p.planned.Add(p.blockTime)
	switch {
	case p.planned.IsZero():
		next = now // the first height
	case next.Before(now.Add(max(p.minGap, need))):
		next = now.Add(max(p.minGap, need)) // a late height: plan from now
	}
	p.planned = next
	release := next
	if proposerDown {
		release = release.Add(-p.lostRound)
	}
	return max(0, release.Sub(now))
}

// decided records who proposed a decided block, and who was the round-0
// proposer of its height: if they differ, round 0 failed (its proposer was
// down, late or proposed something rejected).
func (p *pacer) decided(roundZero, proposer []byte) {
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
func (p *pacer) looksDown(addr []byte) bool { return p.missed[string(addr)] }
