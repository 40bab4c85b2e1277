package app

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/cometbft/cometbft/crypto/ed25519"
	cmttypes "github.com/cometbft/cometbft/types"
)

// cometSets stores validator sets as CometBFT's state does: the set of
// height 1 is NewValidatorSet(genesis), height 2's is that advanced once,
// and deciding height h with updates gives height h+2 the set of h+1 with
// the updates applied, advanced once (state.updateState). Heights past the
// last decided are the last set advanced, as if nothing changed.
type cometSets struct {
	sets map[int64]*cmttypes.ValidatorSet
	top  int64
}

func newCometSets(vals []cmttypes.GenesisValidator) *cometSets {
	var vs []*cmttypes.Validator
	for _, v := range vals {
		vs = append(vs, cmttypes.NewValidator(v.PubKey, v.Power))
	}
	first := cmttypes.NewValidatorSet(vs)
	return &cometSets{sets: map[int64]*cmttypes.ValidatorSet{1: first, 2: first.CopyIncrementProposerPriority(1)}, top: 2}
}

// decide records height h decided with updates, which change h+2.
func (c *cometSets) decide(t *testing.T, h int64, updates ...*cmttypes.Validator) {
	t.Helper()
	c.extend(h + 1)
	next := c.sets[h+1].Copy()
	if len(updates) > 0 {
		if err := next.UpdateWithChangeSet(updates); err != nil {
			t.Fatal(err)
		}
	}
	next.IncrementProposerPriority(1)
	c.sets[h+2], c.top = next, h+2
}

func (c *cometSets) extend(h int64) {
	for ; c.top < h; c.top++ {
		c.sets[c.top+1] = c.sets[c.top].CopyIncrementProposerPriority(1)
	}
}

func (c *cometSets) load(h int64) (*cmttypes.ValidatorSet, error) {
	if h < 1 {
		return nil, fmt.Errorf("no set at height %d", h)
	}
	c.extend(h)
	return c.sets[h].Copy(), nil
}

// genesisSets is the sets of a chain whose set never changes.
func genesisSets(vals []cmttypes.GenesisValidator) ValidatorSets { return newCometSets(vals).load }

// Every validator of equal power proposes one of a height's first rounds,
// the one InRound says.
func TestProposersFirstRound(t *testing.T) {
	var gen []cmttypes.GenesisValidator
	for range 4 {
		gen = append(gen, cmttypes.GenesisValidator{PubKey: ed25519.GenPrivKey().PubKey(), Power: 1})
	}
	p := NewProposers(genesisSets(gen))
	for h := int64(1); h <= 12; h++ {
		seen := map[int32]bool{}
		for _, v := range gen {
			r, ok := p.FirstRound(v.PubKey.Address(), h)
			if !ok || seen[r] || !bytes.Equal(p.InRound(h, r), v.PubKey.Address()) {
				t.Fatalf("height %d: validator %X: first round %d (%v), rounds seen %v", h, v.PubKey.Address(), r, ok, seen)
			}
			seen[r] = true
		}
	}
}

// The prediction follows a set that changes: a validator added at one
// height, one removed and one reweighed later, and restarts (a new
// Proposers) right after changes; a set that cannot be read predicts
// nobody, and a failed read is tried again.
func TestProposersFollowAChangingSet(t *testing.T) {
	var gen []cmttypes.GenesisValidator
	for range 4 {
		gen = append(gen, cmttypes.GenesisValidator{PubKey: ed25519.GenPrivKey().PubKey(), Power: 1})
	}
	sets := newCometSets(gen)
	p := NewProposers(sets.load)
	fifth := ed25519.GenPrivKey().PubKey()
	changes := map[int64][]*cmttypes.Validator{
		20: {cmttypes.NewValidator(fifth, 1)},
		40: {cmttypes.NewValidator(gen[0].PubKey, 0)},
		41: {cmttypes.NewValidator(gen[1].PubKey, 2)},
	}
	proposed := map[string]bool{}
	for h := int64(1); h <= 80; h++ {
		if h == 21 || h == 42 || h == 60 {
			// A restart (21, 42: right after a change that takes effect at
			// the next height but one, whose FinalizeBlock the new process
			// never ran): the set is read again.
			p = NewProposers(sets.load)
		}
		for r := int32(0); r < 3; r++ {
			set, _ := sets.load(h)
			want := set.CopyIncrementProposerPriority(max(r, 1)).GetProposer().Address
			if r == 0 {
				want = set.GetProposer().Address
			}
			if got := p.InRound(h, r); !bytes.Equal(got, want) {
				t.Fatalf("height %d round %d: predicted %X, CometBFT's set gives %X", h, r, got, want)
			}
		}
		proposed[string(p.At(h))] = true
		// FinalizeBlock(h): it asks about h+1, then returns h's updates.
		p.At(h + 1)
		sets.decide(t, h, changes[h]...)
		if len(changes[h]) > 0 {
			p.Changed(h + 2)
		}
	}
	if !proposed[string(fifth.Address())] {
		t.Error("the added validator never proposed")
	}
	down := true
	failing := NewProposers(func(h int64) (*cmttypes.ValidatorSet, error) {
		if down {
			return nil, fmt.Errorf("no store")
		}
		return sets.load(h)
	})
	if got := failing.At(5); got != nil {
		t.Fatalf("an unreadable set predicted %X", got)
	}
	down = false
	if set, _ := sets.load(5); !bytes.Equal(failing.At(5), set.GetProposer().Address) {
		t.Fatal("the set was not read again once readable")
	}
	down = true
	if _, ok := failing.FirstRound(gen[0].PubKey.Address(), 3); ok { // earlier: read afresh, and failing
		t.Fatal("an unreadable set gave a first round")
	}
}
