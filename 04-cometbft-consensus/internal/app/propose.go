package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	abci "github.com/cometbft/cometbft/abci/types"
	beacon "github.com/ethereum/go-ethereum/beacon/engine"
	"github.com/ethereum/go-ethereum/crypto"

	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/builder"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/engine"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/envelope"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/state"
)

// PrepareProposal builds this height's payload on the proposer's geth and
// proposes it as the only transaction; whatever CometBFT's mempool offers
// is dropped. If geth cannot build, the proposal is empty: the other
// validators reject it and the round moves on to the next proposer.
func (a *App) PrepareProposal(ctx context.Context, req *abci.RequestPrepareProposal) (*abci.ResponsePrepareProposal, error) {
	start := time.Now()
	parent, _ := a.parent()
	if req.Height != parent.Height+1 {
		return nil, fmt.Errorf("PrepareProposal for height %d, the app committed %d", req.Height, parent.Height)
	}
	p, optimistic, err := a.payload(ctx, parent, req.Time, a.budget(req.Height))
	if err != nil {
		if errors.Is(err, builder.ErrNoPayloadID) {
			// A geth in snap sync answers VALID to a forkchoice it ignores.
			if head, herr := a.header(ctx, nil); herr == nil && head.Number < parent.Head.Number {
				err = fmt.Errorf("%w: %w", err, stuckErr(parent.Head.Number, head.Number))
			}
		}
		if errors.Is(err, engine.ErrUnreachable) || lacksBlocks(err) || errors.Is(err, errGethSyncing) { // the cause, not the stall it causes
			a.setReady(false, "build: "+err.Error())
		}
		a.metrics.Errors.WithLabelValues("build").Inc()
		a.log.Error("cannot build a payload: proposing nothing", "height", req.Height, "err", err)
		return &abci.ResponsePrepareProposal{}, nil
	}
	tx, err := envelope.Encode(p)
	if err == nil && int64(len(tx)) > req.MaxTxBytes {
		err = fmt.Errorf("envelope of %d bytes, the block takes %d (consensus param block.max_bytes)", len(tx), req.MaxTxBytes)
	}
	if err != nil {
		a.metrics.Errors.WithLabelValues("build").Inc()
		a.log.Error("cannot propose the payload", "height", req.Height, "err", err)
		return &abci.ResponsePrepareProposal{}, nil
	}
	data := p.ExecutionPayload
	a.mu.Lock()
	a.proposed, a.proposal = data.BlockHash, crypto.Keccak256Hash(tx)
	a.mu.Unlock()
	a.metrics.ProposalBuild.Observe(time.Since(start).Seconds())
	a.metrics.ProposalTxs.Observe(float64(len(data.Transactions)))
	a.log.Info("proposing", "height", req.Height, "number", data.Number, "hash", data.BlockHash,
		"txs", len(data.Transactions), "optimistic", optimistic, "elapsed", time.Since(start).Round(10*time.Microsecond))
	return &abci.ResponsePrepareProposal{Txs: [][]byte{tx}}, nil
}

// budget returns how long PrepareProposal may take at height h: the round
// is not in the request, but this validator proposes only some of them,
// and CometBFT waits longer for each. A validator that proposes round 1
// because round 0's proposer failed has time to build on request (2.4 s
// with the testnet timeouts, where round 0 has 400 ms).
func (a *App) budget(h int64) time.Duration {
	if a.opts.ProposeBudget <= 0 || a.opts.Proposers == nil {
		return a.opts.ProposeBudget
	}
	r, _ := a.opts.Proposers.FirstRound(a.opts.Address, h)
	return a.opts.ProposeBudget + time.Duration(r)*a.opts.ProposeBudgetDelta
}

// payload returns the payload on parent for a block at blockTime: the one
// prepared ahead (startNext) if it fits (optimistic is then true),
// otherwise one built now. Past budget, geth is asked for whatever it has.
func (a *App) payload(ctx context.Context, parent state.State, blockTime time.Time, budget time.Duration) (p *engine.Payload, optimistic bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, engine.CallTimeout)
	defer cancel()
	ts := timestamp(blockTime, parent)
	if st := a.claim(parent, ts); st != nil {
		st.ask(budget)
		p, err := a.collect(ctx, parent, st)
		if err == nil {
			a.metrics.Optimistic.WithLabelValues("used").Inc()
			return p, true, nil
		}
		if ctx.Err() != nil {
			return nil, false, err
		}
		a.metrics.Optimistic.WithLabelValues("lost").Inc()
		a.log.Warn("the payload started early is lost: building again", "number", parent.Head.Number+1, "err", err)
	}
	st := newStarted(parent.Head.Hash, ts)
	st.ask(budget)
	// Nobody else would bring a proposer's geth back on a one-validator chain.
	err = a.withLostBlocks(ctx, parent.Height+1, func() (err error) {
		st.at = time.Now()
		st.id, err = a.start(ctx, parent, ts)
		return err
	})
	if err != nil {
		return nil, false, err
	}
	p, err = a.collect(ctx, parent, st)
	return p, false, err
}

// start asks geth to build the payload on parent at timestamp ts.
func (a *App) start(ctx context.Context, parent state.State, ts uint64) (beacon.PayloadID, error) {
	return a.builder.Start(ctx, builder.Parent(parent.Head), a.attributes(parent, ts))
}
