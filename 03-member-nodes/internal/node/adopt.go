package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ethereum/go-ethereum/common"

	"github.com/geth-consensus/tutorial/03-member-nodes/internal/engine"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/signer"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/state"
)

// adopt imports into the cluster store the blocks geth finalized after the
// stored head `from`, up to `to`: a chain a single node made (stage 2), so
// that the cluster goes on from it instead of refusing to run
// (--adopt-chain). Only the lease holder imports, fenced by its epoch and
// signing each block as if it had made it; a candidate without the lease
// waits for it, or for another candidate to have adopted them. A lost lease
// stops the import, and the next holder resumes it from the stored head.
func (a *App) adopt(ctx context.Context, from, to uint64) error {
	a.setReady(false, fmt.Sprintf("adopting geth's blocks %d to %d: waiting for the lease", from+1, to))
	t := time.NewTicker(a.opts.LeaseRenew)
	defer t.Stop()
	for !a.leading() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-a.roleChange:
		case <-t.C:
		}
		if h, err := a.state.Head(ctx); err != nil {
			return a.storeErr(err)
		} else if h.Number != from {
			return errRoleChange // another candidate adopted them, or some: reconcile again
		}
	}
	if err := a.fence(ctx); err != nil {
		return err
	}
	parent, err := a.state.HashAt(ctx, from)
	if err != nil {
		return a.storeErr(err)
	}
	a.log.Warn("adopting the chain geth finalized into the cluster store (--adopt-chain)", "from", from+1, "to", to)
	start := time.Now()
	for n := from + 1; n <= to; n++ {
		b, err := a.adoptable(ctx, n, parent)
		if err != nil {
			return err
		}
		if err := a.state.Commit(ctx, *b); err != nil {
			return a.commitFailed(err)
		}
		parent = b.Hash
		if (n-from)%1000 == 0 {
			a.log.Info("adopting", "number", n, "to", to)
		}
	}
	a.log.Info("adopted", "from", from+1, "to", to, "elapsed", time.Since(start).Round(time.Millisecond))
	return nil
}

// adoptable reads block n from geth and makes it a block of this leader's
// epoch: its payload rebuilt and checked against its hash, and signed.
func (a *App) adoptable(ctx context.Context, n uint64, parent common.Hash) (*state.Block, error) {
	blk, err := a.engine.BlockByNumber(ctx, n)
	if err != nil {
		return nil, fmt.Errorf("adopt block %d: %w", n, err)
	}
	if blk.ParentHash() != parent {
		return nil, fmt.Errorf("%w: geth's block %d has parent %s, the store holds %s below it", ErrConflict, n, blk.ParentHash(), parent)
	}
	p, err := engine.PayloadOf(blk)
	if errors.Is(err, engine.ErrNotRebuildable) {
		return nil, fmt.Errorf("%w: cannot adopt: %v", ErrConflict, err)
	}
	if err != nil {
		return nil, err
	}
	lease, ok := a.currentLease()
	if !ok {
		return nil, errRoleChange
	}
	b := &state.Block{Number: n, Hash: blk.Hash(), ParentHash: parent, Timestamp: blk.Time(), Payload: p,
		LeaderID: a.opts.ID, Run: a.run, Epoch: lease.Epoch}
	b.Signature, err = a.opts.Signer.Sign(signer.Header{ChainID: a.opts.ChainID, Number: n, Hash: b.Hash,
		ParentHash: parent, Epoch: b.Epoch, Leader: b.LeaderID, Run: b.Run})
	if err != nil {
		return nil, fmt.Errorf("%w: sign block %d: %v", errFatal, n, err)
	}
	return b, nil
}
