package app

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"

	abci "github.com/cometbft/cometbft/abci/types"
	"github.com/cometbft/cometbft/crypto/ed25519"
	cmttypes "github.com/cometbft/cometbft/types"
	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"

	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/engine"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/registry"
)

// ValidatorSets reads the validator sets CometBFT stores: the set of
// height h, with the proposer priorities of its round 0.
type ValidatorSets func(height int64) (*cmttypes.ValidatorSet, error)

// validatorUpdates turns the registry's PowerChanged events in the decided
// execution block into CometBFT validator updates, which CometBFT applies
// to the set of height+2. Every validator reads the same events from the
// same block (its receipts, on its own geth) and checks them against the
// same set (CometBFT's, for height+1, the one the updates change), so every
// validator returns the same updates: nothing else goes in.
func (a *App) validatorUpdates(ctx context.Context, height int64, block common.Hash) ([]abci.ValidatorUpdate, error) {
	if a.opts.Registry == (common.Address{}) {
		return nil, nil
	}
	var logs []types.Log
	err := a.retry(ctx, fmt.Sprintf("read the validator registry's events in block %d", height), func(ctx context.Context) (err error) {
		if logs, err = a.engine.Logs(ctx, block, a.opts.Registry, registry.PowerChanged); err != nil {
			// geth lost the block since it executed it (a wiped datadir):
			// say so, for FinalizeBlock to apply it again.
			if _, herr := a.engine.HeaderByHash(ctx, block); errors.Is(herr, ethereum.NotFound) {
				return fmt.Errorf("geth lost block %d: %w", height, engine.ErrSyncing)
			}
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	changes, bad := registry.Changes(a.opts.Registry, logs)
	for _, err := range bad {
		a.metrics.ValidatorUpdates.WithLabelValues("refused").Inc()
		a.log.Warn("validator registry event skipped: it does not decode (is the registry the contract in contracts/?)", "height", height, "err", err)
	}
	if len(changes) == 0 {
		return nil, nil
	}
	if a.opts.Sets == nil {
		return nil, fmt.Errorf("block %d changes the validator set, and the app cannot read CometBFT's sets", height)
	}
	set, err := a.opts.Sets(height + 1)
	if err != nil {
		return nil, fmt.Errorf("CometBFT's validator set of height %d: %w", height+1, err)
	}
	p := planUpdates(set, changes, a.opts.MaxValidators)
	for _, r := range p.refused {
		a.metrics.ValidatorUpdates.WithLabelValues("refused").Add(float64(len(r.changes)))
		for _, c := range r.changes {
			a.log.Warn("validator update refused, with the rest of its transaction: every validator refuses it alike; the registry and CometBFT now differ (validator list)",
				"height", height, "pub_key", keyString(c.PubKey), "power", c.Power, "tx", r.tx, "reason", r.reason)
		}
	}
	for _, c := range p.applied {
		a.metrics.ValidatorUpdates.WithLabelValues("applied").Inc()
		a.log.Info("validator update", "height", height, "takes_effect", height+2, "pub_key", keyString(c.PubKey), "power", c.Power)
	}
	if len(p.updates) > 0 && a.opts.Proposers != nil {
		a.opts.Proposers.Changed(height + 2)
	}
	return p.updates, nil
}

// CheckChanges says why the validators would refuse changes sent in one
// transaction to a chain whose next set is set (nil: they would take
// them), as planUpdates decides it: for a client to check before sending.
func CheckChanges(set *cmttypes.ValidatorSet, changes []registry.Change, maxValidators int) error {
	if p := planUpdates(set, changes, maxValidators); len(p.refused) > 0 {
		return errors.New(p.refused[0].reason)
	}
	return nil
}

// plan is what a height's registry events become.
type plan struct {
	updates []abci.ValidatorUpdate
	applied []registry.Change // the net change of each key updates holds, in order
	refused []refusal
}

// refusal is a transaction whose changes the app does not hand CometBFT.
type refusal struct {
	tx      common.Hash
	changes []registry.Change
	reason  string
}

// planUpdates checks the changes against set (CometBFT's set of the next
// height, which they change), one transaction at a time, in block order: a
// transaction's changes apply together or not at all. A transaction is
// refused when CometBFT would refuse one of its changes (removing a key
// that is not a validator, or the last validator; a total over
// MaxTotalVotingPower: CometBFT halts on those), when it grows the set past
// maxValidators (block.max_bytes holds the commit of that many; 0: no
// bound), or when, with the transactions taken before it, more than a
// third of the set's voting power would change at this height: the sum of
// |new power − old power| over the keys must stay at most a third of the
// set's total. The updates are each key's net change.
func planUpdates(set *cmttypes.ValidatorSet, changes []registry.Change, maxValidators int) plan {
	var p plan
	total := set.TotalVotingPower()
	working := set.Copy()
	var order [][32]byte // keys in the order first changed
	touched := map[[32]byte]bool{}
	for _, tx := range byTx(changes) {
		trial, reason := working.Copy(), ""
		for _, c := range tx {
			if reason = applyChange(trial, c); reason != "" {
				break
			}
		}
		if reason == "" {
			if churn := netChurn(set, trial, tx, touched); 3*churn > total {
				reason = fmt.Sprintf("%d of the set's %d voting power would change at one height, more than a third", churn, total)
			} else if maxValidators > 0 && trial.Size() > maxValidators {
				reason = fmt.Sprintf("the set would have %d validators; block.max_bytes holds the commit of %d", trial.Size(), maxValidators)
			}
		}
		if reason != "" {
			p.refused = append(p.refused, refusal{tx: tx[0].TxHash, changes: tx, reason: reason})
			continue
		}
		working = trial
		for _, c := range tx {
			if !touched[c.PubKey] {
				touched[c.PubKey] = true
				order = append(order, c.PubKey)
			}
		}
	}
	for _, k := range order {
		before, after := powerOf(set, k), powerOf(working, k)
		if before != after {
			p.updates = append(p.updates, abci.Ed25519ValidatorUpdate(k[:], after))
			p.applied = append(p.applied, registry.Change{PubKey: k, Power: uint64(after)})
		}
	}
	return p
}

// byTx groups changes by transaction, keeping block order.
func byTx(changes []registry.Change) [][]registry.Change {
	var out [][]registry.Change
	for i, c := range changes {
		if i > 0 && c.TxHash == changes[i-1].TxHash {
			out[len(out)-1] = append(out[len(out)-1], c)
			continue
		}
		out = append(out, []registry.Change{c})
	}
	return out
}

// applyChange applies c to set as CometBFT would, or says why not.
func applyChange(set *cmttypes.ValidatorSet, c registry.Change) string {
	if c.Power > uint64(cmttypes.MaxTotalVotingPower) {
		return fmt.Sprintf("power %d is above CometBFT's maximum, %d", c.Power, cmttypes.MaxTotalVotingPower)
	}
	if c.Power == 0 && powerOf(set, c.PubKey) == 0 {
		return fmt.Sprintf("%s is not a validator: it cannot be removed", keyString(c.PubKey))
	}
	v := cmttypes.NewValidator(ed25519.PubKey(c.PubKey[:]), int64(c.Power))
	if err := set.UpdateWithChangeSet([]*cmttypes.Validator{v}); err != nil {
		return fmt.Sprintf("CometBFT would refuse it: %v", err)
	}
	return ""
}

// netChurn is Σ |power in after − power in before| over the keys changed
// so far (touched) and by tx.
func netChurn(before, after *cmttypes.ValidatorSet, tx []registry.Change, touched map[[32]byte]bool) int64 {
	keys := map[[32]byte]bool{}
	for k := range touched {
		keys[k] = true
	}
	for _, c := range tx {
		keys[c.PubKey] = true
	}
	var churn int64
	for k := range keys {
		d := powerOf(after, k) - powerOf(before, k)
		if d < 0 {
			d = -d
		}
		churn += d // each at most MaxTotalVotingPower: no overflow for any set CometBFT holds
	}
	return churn
}

// powerOf returns k's power in set (0: not in it).
func powerOf(set *cmttypes.ValidatorSet, k [32]byte) int64 {
	if _, v := set.GetByAddress(ed25519.PubKey(k[:]).Address()); v != nil {
		return v.VotingPower
	}
	return 0
}

// keyString is a public key as CometBFT's key files show it: base64.
func keyString(k [32]byte) string {
	return base64.StdEncoding.EncodeToString(k[:])
}
