package node

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/ethereum/go-ethereum/common"

	"github.com/geth-consensus/tutorial/03-member-nodes/internal/builder"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/engine"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/state"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/syncer"
)

// syncPage is how many blocks a follower asks for at a time.
const syncPage = 200

// follow keeps geth at the cluster's head until the lease is won or ctx
// ends: at every block notice, and every Poll in case a notice was lost, it
// fetches the blocks above its head, verifies and applies them. A fault of
// the source (no leader, leader API or cluster store unreachable, a block
// rejected) is logged and retried at the next notice or poll.
func (a *App) follow(ctx context.Context) error {
	a.setReady(true, "")
	poll := time.NewTicker(a.opts.Poll)
	defer poll.Stop()
	var lastSourceErr string
	for {
		if a.leading() {
			return errRoleChange
		}
		err := a.syncOnce(ctx)
		switch {
		case errors.Is(err, errUnavailable):
			if msg := err.Error(); msg != lastSourceErr { // once per distinct fault, not per poll
				a.log.Warn("cannot sync", "err", err)
				lastSourceErr = msg
			}
			a.setReady(false, "cannot sync: "+err.Error())
		case err != nil:
			return err
		default:
			lastSourceErr = ""
			a.setReady(true, "")
		}
		if a.proposed.Load() != nil {
			signal(a.proposal) // one kept for after this sync
		}
		if !a.waitForNews(ctx, poll.C) {
			return nil
		}
	}
}

// waitForNews waits for a block notice, a poll or a role change, executing
// the blocks proposed meanwhile. It reports false when ctx ends.
func (a *App) waitForNews(ctx context.Context, poll <-chan time.Time) bool {
	for {
		select {
		case <-ctx.Done():
			return false
		case <-a.proposal:
			select {
			case <-a.news:
				// The notice of the block before it came first: apply that
				// block, then execute (and co-sign) the proposal on it.
				signal(a.proposal)
				return true
			default:
			}
			a.preExecute(ctx)
		case <-a.news:
			return true
		case <-poll:
			return true
		case <-a.roleChange:
			return true
		}
	}
}

// preExecute runs newPayload for the block the leader proposed, while the
// leader executes and commits it: once the block is final, applying it is a
// forkchoiceUpdated alone, and this node's geth follows the leader's by
// that much sooner. The proposal is verified like a block (next number, our
// head as parent, epoch, an allowed leader's signature, in the proposal
// domain) before geth sees it. geth keeps an executed block off its
// canonical chain until forkchoice points at it, so a proposal that is
// never committed costs an execution and nothing else: the block made
// final is the committed one, verified again, and newPayload is skipped
// only if its hash is the one executed.
func (a *App) preExecute(ctx context.Context) {
	b := a.proposed.Swap(nil)
	if b == nil {
		return
	}
	if b.Number > a.head.Number+1 && b.Hash != a.kept {
		// This node is behind (a lost notice, a slow apply): keep the
		// proposal for after the next sync, which it asks for, rather
		// than lose its signature to a block it has not applied yet.
		// Once: a sync that cannot catch up must not spin on it.
		a.kept = b.Hash
		if a.proposed.CompareAndSwap(nil, b) {
			signal(a.news)
		}
		return
	}
	tip := syncer.Tip{Number: a.head.Number, Hash: a.head.Hash, Epoch: a.headEpoch}
	if err := syncer.VerifyProposal(a.opts.ChainID, a.opts.Verifier, tip, b); err != nil {
		a.metrics.PreExecuted.WithLabelValues("rejected").Inc()
		a.log.Debug("proposed block not executed", "number", b.Number, "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, engine.CallTimeout)
	defer cancel()
	if err := a.engine.NewPayload(ctx, b.Payload); err != nil {
		a.metrics.PreExecuted.WithLabelValues("failed").Inc()
		a.log.Debug("proposed block not executed", "number", b.Number, "err", err)
		return
	}
	a.metrics.PreExecuted.WithLabelValues("executed").Inc()
	a.executed = b.Hash
	if a.cosigning() {
		a.cosign(ctx, b)
	}
}

// syncOnce applies every block the source has above the head: the block
// the newest notice carried if it is the next one, else pages fetched from
// the source.
func (a *App) syncOnce(ctx context.Context) error {
	if b := a.inline.Swap(nil); b != nil && b.Number == a.head.Number+1 {
		err := a.applyBlocks(ctx, []*state.Block{b})
		switch {
		case errors.Is(err, syncer.ErrRejected):
			// A forged notice: the source has the real block, so forged
			// notices cannot starve this node.
		case err != nil:
			return err
		case a.lagBehind(a.head.Number) == 0:
			a.setLag()
			return nil
		}
	}
	for {
		blocks, err := a.source.BlocksAfter(ctx, a.head.Number, syncPage)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("%w: %v", errUnavailable, err)
		}
		if err := a.applyBlocks(ctx, blocks); err != nil {
			return err
		}
		a.setLag()
		if len(blocks) < syncPage || ctx.Err() != nil || a.leading() {
			return nil
		}
	}
}

// finalizeEvery bounds the blocks executed between two forkchoiceUpdated
// calls, in a sync or a replay. geth keeps the state of blocks it executed
// but that are not yet canonical as diff layers in memory, at most 128 of
// them under its default path scheme; its head must keep up.
const finalizeEvery = 64

// applyBlocks verifies blocks another node produced, in order, and applies
// them a chunk at a time: newPayload for each block, one forkchoiceUpdated
// to the last, then a member stores the chunk in its own database in one
// transaction. Catching up, a node pays for the forkchoiceUpdated and the
// store's commit once a chunk, not once a block. A block that fails
// verification is never applied; the ones before it are. The blocks are
// already final in the cluster store, so geth may finalize them before the
// member's copy does: a crash in between leaves geth ahead of the member's
// store, and recovery fetches the blocks again and checks them against
// geth.
func (a *App) applyBlocks(ctx context.Context, blocks []*state.Block) error {
	for len(blocks) > 0 {
		chunk := blocks[:min(len(blocks), finalizeEvery)]
		blocks = blocks[len(chunk):]
		n, err := a.execute(ctx, chunk)
		if n > 0 {
			if ferr := a.makeFinal(ctx, chunk[:n]); ferr != nil {
				return errors.Join(err, ferr) // a conflict found above stays fatal
			}
		}
		if err != nil || n < len(chunk) {
			return err
		}
	}
	return nil
}

// execute verifies each block on the one before it, from the head, and has
// geth execute it, unless it already did (preExecute). It stops at the
// first block that fails, or when ctx ends, and returns how many it
// executed.
func (a *App) execute(ctx context.Context, blocks []*state.Block) (int, error) {
	tip := syncer.Tip{Number: a.head.Number, Hash: a.head.Hash, Epoch: a.headEpoch}
	for i, b := range blocks {
		if ctx.Err() != nil {
			return i, nil
		}
		if err := syncer.Verify(a.opts.ChainID, a.opts.Verifier, tip, b); err != nil {
			return i, a.reject(b, err)
		}
		if err := a.executeBlock(ctx, b); err != nil {
			return i, err
		}
		tip = syncer.Tip{Number: b.Number, Hash: b.Hash, Epoch: b.Epoch}
	}
	return len(blocks), nil
}

// executeBlock has geth execute a verified block.
func (a *App) executeBlock(ctx context.Context, b *state.Block) error {
	// Once started, a block is executed whole even if ctx ends.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*engine.CallTimeout)
	defer cancel()
	if b.Number <= a.gethAhead {
		// This geth finalized blocks its store lost: they must be these.
		h, err := a.engine.HeaderByNumber(ctx, new(big.Int).SetUint64(b.Number))
		if err != nil {
			return err
		}
		if h.Hash() != b.Hash {
			return fmt.Errorf("%w: geth finalized %s at block %d, the cluster has %s", ErrConflict, h.Hash(), b.Number, b.Hash)
		}
	}
	if a.executed == b.Payload.ExecutionPayload.BlockHash {
		a.metrics.PreExecuted.WithLabelValues("used").Inc()
		a.executed = common.Hash{} // once: a failure after sends newPayload again
		return nil
	}
	if err := a.engine.NewPayload(ctx, b.Payload); err != nil {
		if errors.Is(err, engine.ErrInvalid) {
			return a.reject(b, &syncer.Rejection{Reason: "invalid", Detail: err.Error()})
		}
		return err
	}
	return nil
}

// makeFinal makes blocks geth executed final: one forkchoiceUpdated to
// the last, then, on a member, one store transaction for all of them.
func (a *App) makeFinal(ctx context.Context, blocks []*state.Block) error {
	// Once started, blocks are applied whole even if ctx ends.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*engine.CallTimeout)
	defer cancel()
	last := blocks[len(blocks)-1]
	parent, parentEpoch := a.head, a.headEpoch
	a.head = builder.Parent{Number: last.Number, Hash: last.Hash, Timestamp: last.Timestamp}
	a.headEpoch = last.Epoch
	if err := a.finalize(ctx); err != nil {
		a.head, a.headEpoch = parent, parentEpoch
		return err
	}
	now := a.opts.Now()
	if a.opts.Role == RoleMember { // a candidate follows the cluster store itself
		stored := make([]state.Block, len(blocks))
		for i, b := range blocks {
			stored[i] = *b
		}
		if err := a.state.Commit(ctx, stored...); err != nil {
			// Applied again at the next sync: geth answers VALID for
			// blocks it has, and the store gets its copies.
			a.head, a.headEpoch = parent, parentEpoch
			a.metrics.Errors.WithLabelValues("store").Inc()
			return fmt.Errorf("%w: store blocks %d-%d: %v", errUnavailable, blocks[0].Number, last.Number, err)
		}
		a.metrics.StoreCommit.Observe(a.opts.Now().Sub(now).Seconds())
	}
	for _, b := range blocks {
		a.applied(b, now)
	}
	a.setQuorumErr(nil) // blocks are final again
	a.metrics.Tracked.Set(float64(a.pending.tracked()))
	a.metrics.HeadNumber.Set(float64(last.Number))
	a.mu.Lock()
	a.lastBlock = now
	a.status.Head, a.status.HeadHash = last.Number, last.Hash.Hex()
	a.mu.Unlock()
	return nil
}

// applied accounts for a block made final at now.
func (a *App) applied(b *state.Block, now time.Time) {
	if a.opts.Role == RoleLeader {
		// A standby candidate hears every announced transaction too: the
		// blocks it applies take theirs out, as its own blocks would, so
		// that it holds what the pool holds, not what the chain ever
		// held, and takes over with a set as right as the leader's.
		a.pending.included(b.Payload.ExecutionPayload.Transactions, now)
	}
	a.metrics.BlocksApplied.Inc()
	var lag time.Duration // from the leader's commit
	if !b.CreatedAt.IsZero() {
		lag = now.Sub(b.CreatedAt)
		a.metrics.SyncLag.Observe(lag.Seconds())
	}
	// One line per block, as the leader logs each block it makes, so that
	// a reader watching the terminals sees the node follow.
	a.log.Info("applied", "number", b.Number, "hash", b.Hash, "leader", b.LeaderID, "epoch", b.Epoch,
		"txs", len(b.Payload.ExecutionPayload.Transactions), "lag", lag.Round(time.Millisecond))
}

// reject counts and logs a block that failed verification.
func (a *App) reject(b *state.Block, err error) error {
	reason := "other"
	var r *syncer.Rejection
	if errors.As(err, &r) {
		reason = r.Reason
	}
	a.metrics.VerifyFailures.WithLabelValues(reason).Inc()
	a.log.Error("block rejected", "number", b.Number, "hash", b.Hash, "leader", b.LeaderID, "epoch", b.Epoch, "reason", reason, "err", err)
	return fmt.Errorf("%w: %w", errUnavailable, err)
}

// setLag publishes how far this node is behind the newest notice.
func (a *App) setLag() { a.metrics.SyncLagBlocks.Set(float64(a.lagBehind(a.head.Number))) }

// lagBehind is how many announced blocks lie above head.
func (a *App) lagBehind(head uint64) uint64 {
	if announced := a.announced.Load(); announced > head {
		return announced - head
	}
	return 0
}
