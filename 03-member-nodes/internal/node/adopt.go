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

// adoptCheck tells a candidate whether to adopt geth's blocks above the
// stored head: only with --adopt-chain, and only into an empty store or to
// finish an interrupted adoption, never on top of blocks the cluster made
// (a geth ahead of those means a store restored from a backup, which
// reconcile refuses). While an adoption is unfinished, a candidate that
// cannot finish it waits: leading would build on a chain that geth, on
// the node that adopts, has finalized further.
func (a *App) adoptCheck(ctx context.Context, stored, gethNum uint64) (bool, error) {
	through, adopting, err := a.state.Adoption(ctx)
	if err != nil {
		return false, a.storeErr(err)
	}
	unfinished := adopting && stored < through
	if a.opts.Adopt && gethNum > stored && (stored == 0 && !adopting || unfinished) {
		return true, nil
	}
	if unfinished {
		return false, fmt.Errorf("%w: the cluster store is adopting a chain through block %d and holds %d: it takes a candidate whose geth holds them, started with --adopt-chain",
			errUnavailable, through, stored)
	}
	return false, nil
}

// adopt imports into the cluster store the blocks geth holds after the
// stored head `from`, up to `to`: a chain a single node made (stage 2), so
// that the cluster goes on from it instead of refusing to run
// (--adopt-chain). Only the lease holder imports, fenced by its epoch and
// signing each block as if it had made it; a candidate without the lease
// waits for it, or for another candidate to have adopted them. The store
// records how far the chain runs before the first block, so a lost lease
// or a crash stops the import and the next adopter resumes it.
func (a *App) adopt(ctx context.Context, from, to uint64) error {
	a.setReady(false, fmt.Sprintf("adopting geth's blocks %d to %d: waiting for the lease", from+1, to))
	// Reconcile got this far, so geth and the store answer: the node may
	// take the lease (keepLease takes none while it fails).
	a.health.ok()
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
	through, err := a.state.StartAdoption(ctx, to)
	if err != nil {
		return a.storeErr(err)
	}
	if to < through {
		return fmt.Errorf("%w: the adoption runs through block %d, this geth holds blocks to %d", errUnavailable, through, to)
	}
	to = through
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
		started := time.Now()
		if err := a.state.Commit(ctx, *b); err != nil {
			return a.commitFailed(err, started)
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
