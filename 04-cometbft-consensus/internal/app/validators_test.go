package app

import (
	"bytes"
	"strings"
	"testing"

	abci "github.com/cometbft/cometbft/abci/types"

	"github.com/cometbft/cometbft/crypto/ed25519"
	cmttypes "github.com/cometbft/cometbft/types"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/registry"
)

// planUpdates hands CometBFT only what it takes, and at most a third of
// the power per height; each case is checked against CometBFT's own
// UpdateWithChangeSet on the updates it returns.
func TestPlanUpdates(t *testing.T) {
	keys := make([][32]byte, 8)
	for i := range keys {
		copy(keys[i][:], ed25519.GenPrivKey().PubKey().Bytes())
	}
	set := func(powers ...int64) *cmttypes.ValidatorSet {
		var vs []*cmttypes.Validator
		for i, p := range powers {
			vs = append(vs, cmttypes.NewValidator(ed25519.PubKey(keys[i][:]), p))
		}
		return cmttypes.NewValidatorSet(vs)
	}
	// ch is a change of key i by transaction tx.
	ch := func(tx byte, i int, power uint64) registry.Change {
		return registry.Change{PubKey: keys[i], Power: power, TxHash: common.Hash{tx}}
	}
	net := func(i int, power uint64) registry.Change { return registry.Change{PubKey: keys[i], Power: power} }
	cases := []struct {
		name    string
		set     *cmttypes.ValidatorSet
		changes []registry.Change
		max     int
		applied []registry.Change // net changes
		refused []string          // a word of each refused transaction's reason, in order
	}{
		{"add a fifth", set(1, 1, 1, 1), []registry.Change{ch(1, 4, 1)}, 0, []registry.Change{net(4, 1)}, nil},
		{"remove one of four", set(1, 1, 1, 1), []registry.Change{ch(1, 0, 0)}, 0, []registry.Change{net(0, 0)}, nil},
		{"remove two of five in one transaction: all refused", set(1, 1, 1, 1, 1), []registry.Change{ch(1, 0, 0), ch(1, 1, 0)}, 0,
			nil, []string{"more than a third"}},
		{"remove two of five in two transactions: the second refused", set(1, 1, 1, 1, 1), []registry.Change{ch(1, 0, 0), ch(2, 1, 0)}, 0,
			[]registry.Change{net(0, 0)}, []string{"more than a third"}},
		{"power 1 to 10 of four", set(1, 1, 1, 1), []registry.Change{ch(1, 0, 10)}, 0, nil, []string{"third"}},
		{"remove a key that is no validator", set(1, 1, 1, 1), []registry.Change{ch(1, 6, 0)}, 0, nil, []string{"not a validator"}},
		{"a bad change refuses its whole transaction", set(3, 3, 3), []registry.Change{ch(1, 4, 1), ch(1, 6, 0), ch(2, 5, 1)}, 0,
			[]registry.Change{net(5, 1)}, []string{"not a validator"}},
		{"remove the last validator", set(3), []registry.Change{ch(1, 0, 0)}, 0, nil, []string{"CometBFT would refuse"}},
		{"a key set twice: its net change", set(3, 3, 3), []registry.Change{ch(1, 4, 2), ch(2, 5, 1), ch(3, 4, 1)}, 0,
			[]registry.Change{net(4, 1), net(5, 1)}, nil},
		{"added then removed: no update", set(3, 3, 3), []registry.Change{ch(1, 4, 2), ch(2, 4, 0)}, 0, nil, nil},
		{"unchanged power is no update", set(1, 1, 1), []registry.Change{ch(1, 0, 1)}, 0, nil, nil},
		{"over the set's bound", set(3, 3, 3), []registry.Change{ch(1, 3, 1)}, 3, nil, []string{"block.max_bytes"}},
		{"power above the maximum", set(1, 1, 1), []registry.Change{ch(1, 3, uint64(cmttypes.MaxTotalVotingPower)+1)}, 0, nil, []string{"maximum"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := planUpdates(c.set, c.changes, c.max)
			if len(p.applied) != len(c.applied) || len(p.updates) != len(p.applied) {
				t.Fatalf("applied %+v, want %+v", p.applied, c.applied)
			}
			for i := range c.applied {
				if p.applied[i] != c.applied[i] || p.updates[i].Power != int64(c.applied[i].Power) {
					t.Fatalf("applied %+v, want %+v", p.applied, c.applied)
				}
			}
			if len(p.refused) != len(c.refused) {
				t.Fatalf("refused %+v, want %d refusals (%v)", p.refused, len(c.refused), c.refused)
			}
			for i, word := range c.refused {
				if !strings.Contains(p.refused[i].reason, word) {
					t.Fatalf("refusal %d: %q, want it to say %q", i, p.refused[i].reason, word)
				}
			}
			// What is handed to CometBFT, CometBFT takes.
			var vals []*cmttypes.Validator
			for _, u := range p.updates {
				vals = append(vals, cmttypes.NewValidator(ed25519.PubKey(u.PubKey.GetEd25519()), u.Power))
			}
			if len(vals) > 0 {
				if err := c.set.Copy().UpdateWithChangeSet(vals); err != nil {
					t.Fatalf("CometBFT refuses the updates: %v", err)
				}
			}
		})
	}
}

// A total over CometBFT's limit is refused with CometBFT's own reason.
func TestPlanUpdatesRefusesAnOverflowingTotal(t *testing.T) {
	var vs []*cmttypes.Validator
	var key [32]byte
	for range 3 {
		vs = append(vs, cmttypes.NewValidator(ed25519.GenPrivKey().PubKey(), cmttypes.MaxTotalVotingPower/3))
	}
	copy(key[:], ed25519.GenPrivKey().PubKey().Bytes())
	p := planUpdates(cmttypes.NewValidatorSet(vs), []registry.Change{{PubKey: key, Power: 3, TxHash: common.Hash{1}}}, 0)
	if len(p.updates) != 0 || len(p.refused) != 1 || !strings.Contains(p.refused[0].reason, "CometBFT would refuse") {
		t.Fatalf("updates %v, refused %+v: want CometBFT's refusal", p.updates, p.refused)
	}
}

// FinalizeBlock returns the registry's changes in the decided block as
// validator updates, the same on every validator; refuses what the set
// cannot take, and skips what does not decode, alike everywhere; and a
// geth that lost the block before its logs were read gets it again.
func TestFinalizeBlockReturnsValidatorUpdates(t *testing.T) {
	reg := common.HexToAddress("0x1000")
	gen := []cmttypes.GenesisValidator{{PubKey: ed25519.GenPrivKey().PubKey(), Power: 100}}
	var added, stranger [32]byte
	copy(added[:], ed25519.GenPrivKey().PubKey().Bytes())
	copy(stranger[:], ed25519.GenPrivKey().PubKey().Bytes())
	event := func(key [32]byte, power uint64, tx byte) types.Log {
		data, err := registry.ABI.Events["PowerChanged"].Inputs.NonIndexed().Pack(power)
		if err != nil {
			t.Fatal(err)
		}
		return types.Log{Address: reg, Topics: []common.Hash{registry.PowerChanged, key}, Data: data, TxHash: common.Hash{tx}}
	}
	logs := map[uint64][]types.Log{
		1: {event(added, 30, 1)},
		2: {event(stranger, 0, 2), {Address: reg, Topics: []common.Hash{registry.PowerChanged, added}, Data: []byte{1}, TxHash: common.Hash{3}}},
		3: {event(added, 20, 4)},
	}
	nodes := make([]*node, 2)
	for i := range nodes {
		g := newFakeGeth()
		g.logs = logs
		nodes[i] = newNode(t, g, "", func(o *Options) { o.Registry, o.Sets = reg, genesisSets(gen) })
	}
	a, b := nodes[0], nodes[1]
	updates := func(h int64) []abci.ValidatorUpdate {
		t.Helper()
		tx := a.prepare(t, h)
		var first []abci.ValidatorUpdate
		for i, n := range nodes {
			if s := n.process(t, h, tx); s != abci.ResponseProcessProposal_ACCEPT {
				t.Fatalf("height %d: node %d: %v", h, i, s)
			}
			res := n.finalize(t, h, tx)
			if i == 0 {
				first = res.ValidatorUpdates
			} else if x, y := mustJSON(t, res.ValidatorUpdates), mustJSON(t, first); x != y {
				t.Fatalf("height %d: the validators' updates differ:\n%s\n%s", h, x, y)
			}
		}
		return first
	}
	if u := updates(1); len(u) != 1 || u[0].Power != 30 || !bytes.Equal(u[0].PubKey.GetEd25519(), added[:]) {
		t.Fatalf("height 1: updates %v, want the added key at 30", u)
	}
	if u := updates(2); len(u) != 0 {
		t.Fatalf("height 2: updates %v, want none (a stranger removed, a log that does not decode)", u)
	}
	for _, n := range nodes {
		if got := testutil.ToFloat64(n.m.ValidatorUpdates.WithLabelValues("refused")); got != 2 {
			t.Fatalf("refused %v, want 2", got)
		}
	}
	// b's geth loses every block between newPayload and the read of the
	// logs: FinalizeBlock replays them and reads the logs again.
	wiped := false
	b.geth.beforeLogs = func() {
		if !wiped {
			wiped = true
			b.geth.wipe()
		}
	}
	if u := updates(3); len(u) != 1 || u[0].Power != 20 {
		t.Fatalf("height 3: updates %v, want the added key at 20", u)
	}
	if !wiped || b.geth.head().Number.Int64() != 3 {
		t.Fatalf("wiped %v, b's geth head %d", wiped, b.geth.head().Number)
	}
}
