package app

import (
	"bytes"
	"testing"

	"github.com/cometbft/cometbft/crypto/ed25519"
	cmttypes "github.com/cometbft/cometbft/types"
)

// Every validator of equal power proposes one of a height's first rounds,
// the one InRound says.
func TestProposersFirstRound(t *testing.T) {
	var gen []cmttypes.GenesisValidator
	for range 4 {
		gen = append(gen, cmttypes.GenesisValidator{PubKey: ed25519.GenPrivKey().PubKey(), Power: 1})
	}
	p, err := NewProposers(gen)
	if err != nil {
		t.Fatal(err)
	}
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
