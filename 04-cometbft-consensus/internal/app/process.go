package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	abci "github.com/cometbft/cometbft/abci/types"
	"github.com/ethereum/go-ethereum/crypto"

	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/engine"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/envelope"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/state"
)

// Reasons ProcessProposal rejects a proposal for, as metric labels.
const (
	reasonMalformed   = "malformed"   // not exactly one decodable envelope, or one geth's Engine API refuses (-32602)
	reasonMismatch    = "mismatch"    // number, parent, timestamp or randomness wrong
	reasonInvalid     = "invalid"     // geth: INVALID
	reasonSyncing     = "syncing"     // geth: SYNCING/ACCEPTED, cannot judge
	reasonUnavailable = "unavailable" // geth did not answer
)

// ProcessProposal accepts a proposal only if it is exactly one envelope
// whose payload extends our head at the expected timestamp and randomness,
// and our geth executes it to VALID, or built it: the proposer accepts its
// own payload at once and executes it in FinalizeBlock, because CometBFT
// gossips the proposal only once ProcessProposal returns, and a full block
// takes its geth a good part of timeout_propose. A geth that answers SYNCING or
// ACCEPTED lacks committed blocks (it was killed or wiped): the app
// replays them from the block store and asks again. If geth still cannot
// judge (it syncs from its peers on its own), the proposal is rejected:
// this validator cannot vouch for it; the others can still decide it.
func (a *App) ProcessProposal(ctx context.Context, req *abci.RequestProcessProposal) (*abci.ResponseProcessProposal, error) {
	reject := func(reason string, err error) (*abci.ResponseProcessProposal, error) {
		a.metrics.Verdicts.WithLabelValues("reject", reason).Inc()
		a.log.Warn("rejecting proposal", "height", req.Height, "proposer", fmt.Sprintf("%X", req.ProposerAddress), "reason", reason, "err", err)
		return &abci.ResponseProcessProposal{Status: abci.ResponseProcessProposal_REJECT}, nil
	}
	parent, _ := a.parent()
	if len(req.Txs) != 1 {
		return reject(reasonMalformed, fmt.Errorf("%d transactions, want exactly one envelope", len(req.Txs)))
	}
	p, err := envelope.Decode(req.Txs[0])
	if err != nil {
		return reject(reasonMalformed, err)
	}
	if err := a.checkFits(p, parent, req.Height, req.Time); err != nil {
		return reject(reasonMismatch, err)
	}
	a.mu.Lock()
	own := crypto.Keccak256Hash(req.Txs[0]) == a.proposal // the same bytes: not another payload with its block hash
	a.mu.Unlock()
	if own {
		a.metrics.Verdicts.WithLabelValues("accept", "").Inc()
		return &abci.ResponseProcessProposal{Status: abci.ResponseProcessProposal_ACCEPT}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, engine.CallTimeout)
	defer cancel()
	var took time.Duration // of the newPayload that answered, not of replays before it
	err = a.withLostBlocks(ctx, req.Height, func() error {
		asked := time.Now()
		err := a.engine.NewPayload(ctx, p)
		took = time.Since(asked)
		return err
	})
	switch {
	case errors.Is(err, engine.ErrInvalid):
		return reject(reasonInvalid, err)
	case errors.Is(err, engine.ErrInvalidParams): // the proposal's fault, not geth's
		return reject(reasonMalformed, err)
	case lacksBlocks(err):
		a.setReady(false, "newPayload: "+err.Error())
		return reject(reasonSyncing, err)
	case err != nil:
		a.setReady(false, "newPayload: "+err.Error())
		return reject(reasonUnavailable, err)
	}
	a.mu.Lock()
	a.validated, a.validTook = p.ExecutionPayload.BlockHash, took
	a.mu.Unlock()
	a.metrics.Verdicts.WithLabelValues("accept", "").Inc()
	return &abci.ResponseProcessProposal{Status: abci.ResponseProcessProposal_ACCEPT}, nil
}

// checkFits checks the payload against what the height requires.
func (a *App) checkFits(p *engine.Payload, parent state.State, height int64, blockTime time.Time) error {
	d := p.ExecutionPayload
	want := a.attributes(parent, timestamp(blockTime, parent))
	switch {
	case height != parent.Height+1:
		return fmt.Errorf("height %d, the app committed %d", height, parent.Height)
	case d.Number != parent.Head.Number+1:
		return fmt.Errorf("execution block %d, want %d", d.Number, parent.Head.Number+1)
	case d.ParentHash != parent.Head.Hash:
		return fmt.Errorf("parent %s, our head is %s", d.ParentHash, parent.Head.Hash)
	case d.Timestamp != want.Timestamp:
		return fmt.Errorf("timestamp %d, want %d for block time %s", d.Timestamp, want.Timestamp, blockTime.UTC().Format(time.RFC3339Nano))
	case d.Random != want.Random:
		return fmt.Errorf("prevRandao %s, want %s", d.Random, want.Random)
	case p.BeaconRoot != want.BeaconRoot:
		return fmt.Errorf("parentBeaconBlockRoot %s, want %s", p.BeaconRoot, want.BeaconRoot)
	case len(d.Withdrawals) != 0:
		return fmt.Errorf("%d withdrawals: this chain has none", len(d.Withdrawals))
	}
	return nil
}
