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
// CometBFT advances the proposer priorities once per height when it saves
// the state, and once per round on a copy, so with a fixed validator set
// the proposer of round r at height h is the genesis set advanced h-1
// times, then r more. This app never changes the validator set. A wrong
// guess costs only the head start: PrepareProposal builds from scratch
// when no payload was started.
type Proposers struct {
	genesis []*cmttypes.Validator

	mu     sync.Mutex
	set    *cmttypes.ValidatorSet // priorities of round 0 at height
	height int64
}

// NewProposers starts from the genesis validators.
func NewProposers(vals []cmttypes.GenesisValidator) (*Proposers, error) {
	if len(vals) == 0 {
		return nil, fmt.Errorf("genesis has no validators")
	}
	p := &Proposers{}
	for _, v := range vals {
		p.genesis = append(p.genesis, cmttypes.NewValidator(v.PubKey, v.Power))
	}
	p.reset()
	return p, nil
}

func (p *Proposers) reset() {
	vals := make([]*cmttypes.Validator, len(p.genesis))
	for i, v := range p.genesis {
		vals[i] = v.Copy()
	}
	p.set, p.height = cmttypes.NewValidatorSet(vals), 1
}

// At returns the address of the round-0 proposer of height h (h ≥ 1).
// Heights are usually asked in order: each call advances from the last.
func (p *Proposers) At(h int64) []byte { return p.InRound(h, 0) }

// InRound returns the address of the proposer of round r at height h.
func (p *Proposers) InRound(h int64, r int32) []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	if h < p.height {
		p.reset()
	}
	for ; p.height < h; p.height++ {
		p.set.IncrementProposerPriority(1)
	}
	if r == 0 {
		return p.set.GetProposer().Address
	}
	return p.set.CopyIncrementProposerPriority(r).GetProposer().Address
}

// FirstRound returns the first round of height h that addr proposes, if it
// proposes one of the first rounds of h, one per validator (with equal
// powers, every validator proposes once in them).
func (p *Proposers) FirstRound(addr []byte, h int64) (int32, bool) {
	for r := range int32(len(p.genesis)) {
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
