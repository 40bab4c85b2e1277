package app

import (
	"bytes"
	"fmt"
	"sync"

	cmttypes "github.com/cometbft/cometbft/types"
)

// Proposers predicts who proposes in the first rounds of a height, so that
// only they start building early (every validator building would waste
// each geth's CPU on payloads nobody asks for).
//
// It follows the validator sets CometBFT stores: the set of a height, with
// the proposer priorities of its round 0, is read from them when first
// needed, when asked about an earlier height (and at the two heights after
// those), and at a height whose set changed (Changed). Between those, a set is the one before advanced once
// per height, as CometBFT advances it when nothing changes; a round r is
// the height's set advanced r more times on a copy. A wrong guess costs
// only the head start: PrepareProposal builds from scratch when no payload
// was started.
type Proposers struct {
	load ValidatorSets

	mu      sync.Mutex
	set     *cmttypes.ValidatorSet // priorities of round 0 at height
	height  int64
	changed []int64 // heights whose set CometBFT changed and that are not loaded yet
}

// NewProposers predicts from the sets load returns.
func NewProposers(load ValidatorSets) *Proposers {
	return &Proposers{load: load}
}

// Changed says that the set of height h is not the one before advanced:
// the app returned validator updates at h-2.
func (p *Proposers) Changed(h int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.changed = append(p.changed, h)
}

// at returns the set of height h. Called with p.mu held.
//
// A set read afresh (the first, or one earlier than the last) may predate
// updates this process never saw returned: those of the two heights
// before it, decided by an earlier process or replayed by CometBFT
// without the app. The sets of the next two heights are read again too.
func (p *Proposers) at(h int64) (*cmttypes.ValidatorSet, error) {
	fresh := p.set == nil || h < p.height
	reload := fresh
	var kept []int64
	for _, c := range p.changed {
		switch {
		case c <= p.height && !fresh:
			// the set held is at or past it
		case c <= h:
			reload = true
		default:
			kept = append(kept, c)
		}
	}
	if reload {
		set, err := p.load(h)
		if err != nil {
			return nil, fmt.Errorf("validator set of height %d: %w", h, err)
		}
		p.set, p.height, p.changed = set, h, kept
		if fresh {
			p.changed = append(p.changed, h+1, h+2)
		}
		return p.set, nil
	}
	p.changed = kept
	for ; p.height < h; p.height++ {
		p.set.IncrementProposerPriority(1) // what CometBFT does at each height
	}
	return p.set, nil
}

// At returns the address of the round-0 proposer of height h (h ≥ 1), or
// nil when the set of h cannot be read.
func (p *Proposers) At(h int64) []byte { return p.InRound(h, 0) }

// InRound returns the address of the proposer of round r at height h, or
// nil when the set of h cannot be read.
func (p *Proposers) InRound(h int64, r int32) []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	set, err := p.at(h)
	if err != nil {
		return nil
	}
	if r == 0 {
		return set.GetProposer().Address
	}
	return set.CopyIncrementProposerPriority(r).GetProposer().Address
}

// stats returns the number of validators at height h and their total
// voting power (0, 0 when the set cannot be read).
func (p *Proposers) stats(h int64) (n int, power int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	set, err := p.at(h)
	if err != nil {
		return 0, 0
	}
	return set.Size(), set.TotalVotingPower()
}

// FirstRound returns the first round of height h that addr proposes, if it
// proposes one of the first rounds of h, one per validator (with equal
// powers, every validator proposes once in them).
func (p *Proposers) FirstRound(addr []byte, h int64) (int32, bool) {
	n, _ := p.stats(h)
	for r := range int32(n) {
		if bytes.Equal(p.InRound(h, r), addr) {
			return r, true
		}
	}
	return 0, false
}

// Proposes reports whether addr proposes one of the first rounds of height h.
func (p *Proposers) Proposes(addr []byte, h int64, rounds int32) bool {
	for r := range rounds {
		if bytes.Equal(p.InRound(h, r), addr) {
			return true
		}
	}
	return false
}
