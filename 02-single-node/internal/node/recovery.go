package node

import (
	"context"
	"errors"
	"fmt"
	"math/big"

	"github.com/geth-consensus/tutorial/02-single-node/internal/builder"
	"github.com/geth-consensus/tutorial/02-single-node/internal/state"
)

// replayFinalizeEvery is how many replayed blocks pass between
// forkchoiceUpdated calls, so geth's head (and its in-memory state layers)
// keeps up with a long replay.
const replayFinalizeEvery = 64

// reconcile brings geth and the store into agreement and sets the node's
// head. It runs at start-up and after every fault:
//
//   - geth behind the store (a crash rewound it, or its datadir is new):
//     replay the stored payloads with newPayload, oldest first;
//   - geth ahead of the store (the CL's state was lost): adopt geth's head;
//   - a different block at the same height: ErrConflict, refuse to run.
func (a *SingleNodeApp) reconcile(ctx context.Context) error {
	gethHead, err := a.engine.HeaderByNumber(ctx, nil)
	if err != nil {
		return err
	}
	genesis, err := a.engine.HeaderByNumber(ctx, common0)
	if err != nil {
		return err
	}
	if genesis.Hash() != a.opts.GenesisHash {
		return fmt.Errorf("%w: geth runs genesis %s, --genesis gives %s", ErrConflict, genesis.Hash(), a.opts.GenesisHash)
	}
	if err := a.state.Init(state.Head{Number: 0, Hash: genesis.Hash(), Timestamp: genesis.Time}); err != nil {
		return fmt.Errorf("%w: %v", ErrConflict, err)
	}
	stored, _, err := a.state.Head()
	if err != nil {
		return fmt.Errorf("%w: read store: %v", errFatal, err)
	}
	gethNum := gethHead.Number.Uint64()

	if gethNum >= stored.Number {
		h, err := a.engine.HeaderByNumber(ctx, new(big.Int).SetUint64(stored.Number))
		if err != nil {
			return err
		}
		if h.Hash() != stored.Hash {
			return fmt.Errorf("%w: block %d is %s in the store but %s in geth; one of them belongs to another chain: refusing to run",
				ErrConflict, stored.Number, stored.Hash, h.Hash())
		}
		if gethNum > stored.Number {
			a.log.Warn("geth is ahead of the CL's store (CL state lost?): adopting geth's head",
				"store_head", stored.Number, "geth_head", gethNum, "hash", gethHead.Hash())
			stored = state.Head{Number: gethNum, Hash: gethHead.Hash(), Timestamp: gethHead.Time}
			if err := a.state.Adopt(stored); err != nil {
				return fmt.Errorf("%w: %v", errFatal, err)
			}
		}
	} else if err := a.replay(ctx, gethNum, stored.Number); err != nil {
		return err
	}

	a.head = builder.Parent{Number: stored.Number, Hash: stored.Hash, Timestamp: stored.Timestamp}
	if err := a.finalize(ctx); err != nil {
		return fmt.Errorf("point geth at the stored head %d: %w", stored.Number, err)
	}
	a.metrics.HeadNumber.Set(float64(stored.Number))
	a.mu.Lock()
	a.status.Head, a.status.HeadHash = stored.Number, stored.Hash.Hex()
	a.mu.Unlock()
	a.log.Info("reconciled with geth", "head", stored.Number, "hash", stored.Hash, "geth_was_at", gethNum)
	return nil
}

// replay feeds geth the stored payloads from gethNum+1 to to, after checking
// that geth's head is a block of the stored chain.
func (a *SingleNodeApp) replay(ctx context.Context, gethNum, to uint64) error {
	want, err := a.state.HashAt(gethNum)
	switch {
	case gethNum == 0:
		want, err = a.opts.GenesisHash, nil
	case errors.Is(err, state.ErrNoPayload):
		return fmt.Errorf("%w: geth is at block %d but the store holds no payload for it (it was adopted from geth): cannot replay", errFatal, gethNum)
	case err != nil:
		return fmt.Errorf("%w: %v", errFatal, err)
	}
	h, err := a.engine.HeaderByNumber(ctx, new(big.Int).SetUint64(gethNum))
	if err != nil {
		return err
	}
	if h.Hash() != want {
		return fmt.Errorf("%w: block %d is %s in the store but %s in geth", ErrConflict, gethNum, want, h.Hash())
	}
	a.log.Warn("geth is behind the CL's store: replaying stored payloads", "from", gethNum+1, "to", to)
	for n := gethNum + 1; n <= to; n++ {
		p, err := a.state.Payload(n)
		if err != nil {
			return fmt.Errorf("%w: replay block %d: %v", errFatal, n, err)
		}
		if err := a.engine.NewPayload(ctx, p); err != nil {
			return fmt.Errorf("replay block %d: %w", n, err)
		}
		a.metrics.Replayed.Inc()
		if (n-gethNum)%replayFinalizeEvery == 0 || n == to {
			a.head = builder.Parent{Number: n, Hash: p.ExecutionPayload.BlockHash, Timestamp: p.ExecutionPayload.Timestamp}
			if err := a.finalize(ctx); err != nil {
				return fmt.Errorf("replay block %d: %w", n, err)
			}
		}
	}
	return nil
}

var common0 = big.NewInt(0)

