package app

import (
	"bytes"
	"fmt"
	"sync"

	cmttypes "github.com/cometbft/cometbft/types"
)

// Proposers predicts who proposes in round 0 of a height, so that only the
// next proposer starts building (every validator building would waste each
// geth's CPU on payloads nobody asks for: geth keeps rebuilding an unclaimed
// payload for 12 s).
//
// CometBFT advances the proposer priorities once per height when it saves
// the state (rounds advance a copy), so with a fixed validator set the
// round-0 proposer of height h is the genesis set advanced h-1 times. This
// app never changes the validator set. A wrong guess costs only the head
// start: PrepareProposal builds from scratch when no payload was started.
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
func (p *Proposers) At(h int64) []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	if h < p.height {
		p.reset()
	}
	for ; p.height < h; p.height++ {
		p.set.IncrementProposerPriority(1)
	}
	return p.set.GetProposer().Address
}

// Is reports whether addr proposes round 0 of height h.
func (p *Proposers) Is(addr []byte, h int64) bool {
	return bytes.Equal(p.At(h), addr)
}
