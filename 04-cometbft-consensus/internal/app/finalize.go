package app

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	abci "github.com/cometbft/cometbft/abci/types"
	beacon "github.com/ethereum/go-ethereum/beacon/engine"
	"github.com/ethereum/go-ethereum/common"

	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/engine"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/envelope"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/state"
)

// FinalizeBlock applies the decided payload: newPayload unless
// ProcessProposal just did, then forkchoiceUpdated with head = safe =
// finalized. CometBFT decided the block, so there is no rejecting it here:
// geth unreachable is waited for; geth finding it INVALID halts this node
// (its geth disagrees with 2/3 of the validators), loudly.
func (a *App) FinalizeBlock(ctx context.Context, req *abci.RequestFinalizeBlock) (*abci.ResponseFinalizeBlock, error) {
	start := time.Now()
	parent, validated := a.parent()
	a.mu.Lock()
	proposed, took := a.proposed, a.validTook
	a.mu.Unlock()
	if req.Height != parent.Height+1 {
		return nil, fmt.Errorf("FinalizeBlock for height %d, the app committed %d", req.Height, parent.Height)
	}
	if len(req.Txs) != 1 {
		return nil, fmt.Errorf("decided block %d has %d transactions, want one envelope", req.Height, len(req.Txs))
	}
	p, err := envelope.Decode(req.Txs[0])
	if err != nil {
		return nil, fmt.Errorf("decided block %d: %w", req.Height, err)
	}
	d := p.ExecutionPayload
	if d.ParentHash != parent.Head.Hash || d.Number != parent.Head.Number+1 {
		return nil, fmt.Errorf("decided block %d carries execution block %d on %s; our head is %d %s", req.Height, d.Number, d.ParentHash, parent.Head.Number, parent.Head.Hash)
	}
	head := state.Head{Number: d.Number, Hash: d.BlockHash, Timestamp: d.Timestamp}
	executed := d.BlockHash == validated        // by geth, in our ProcessProposal
	live := executed || d.BlockHash == proposed // through our ProcessProposal, not a replay
	if !executed {
		if took, err = a.execute(ctx, req.Height, p, live); err != nil {
			return nil, err
		}
	}
	// The block becomes geth's head, and its registry events the
	// validator updates.
	var updates []abci.ValidatorUpdate
	settle := func() (err error) {
		if err = a.finalized(ctx, d); err == nil {
			updates, err = a.validatorUpdates(ctx, req.Height, d.BlockHash)
		}
		return err
	}
	for err = settle(); lacksBlocks(err); err = settle() {
		// geth lost the block between newPayload and here (restarted with
		// a wiped datadir): apply it again, replaying what it lacks.
		a.log.Warn("geth lacks the block it just validated: applying it again", "number", d.Number, "err", err)
		if took, err = a.execute(ctx, req.Height, p, live); err != nil {
			return nil, err
		}
	}
	if err != nil {
		return nil, err
	}
	next := state.State{Height: req.Height, Head: head, LastBlockHash: append([]byte(nil), req.Hash...)}
	early := a.expectNext(req)
	a.mu.Lock()
	a.pending, a.decidedAt = &next, start
	if live {
		a.execTook = took // what need() learns from
	}
	a.mu.Unlock()
	if live {
		a.startNext(next, start, early)
	}
	results := make([]*abci.ExecTxResult, len(req.Txs))
	for i := range results {
		results[i] = &abci.ExecTxResult{Code: CodeOK}
	}
	elapsed := time.Since(start)
	a.metrics.FinalizeLatency.Observe(elapsed.Seconds())
	a.metrics.HeadNumber.Set(float64(head.Number))
	a.metrics.Decided.Set(float64(start.UnixNano()) / 1e9)
	a.observeDrift(head, live)
	a.log.Info("finalized", "height", req.Height, "number", head.Number, "hash", head.Hash,
		"txs", len(d.Transactions), "gas", d.GasUsed, "elapsed", elapsed.Round(10*time.Microsecond))
	return &abci.ResponseFinalizeBlock{TxResults: results, ValidatorUpdates: updates, AppHash: head.Hash.Bytes()}, nil
}

// execute applies a decided payload this validator's ProcessProposal did
// not run (live: it proposed it) and says how long geth's newPayload took
// (the call that answered: not retries, not replays).
func (a *App) execute(ctx context.Context, height int64, p *engine.Payload, live bool) (time.Duration, error) {
	took, err := a.apply(ctx, height, p)
	if err != nil {
		return 0, err
	}
	if !live {
		a.metrics.Replayed.Inc() // decided elsewhere: catch-up, or the handshake's replay
	}
	return took, nil
}

// expectNext records who decided the height and predicts how many of the
// next height's first rounds have their proposer build early: 1, or 2 when
// round 1 is likely (the last height needed it, or the next round-0
// proposer missed its last turn). a.turns is used by FinalizeBlock alone:
// one connection, no lock.
func (a *App) expectNext(req *abci.RequestFinalizeBlock) (early int32) {
	if a.opts.Proposers == nil {
		return 1
	}
	a.turns.decided(a.opts.Proposers.At(req.Height), req.ProposerAddress)
	next := a.opts.Proposers.At(req.Height + 1)
	if n, power := a.opts.Proposers.stats(req.Height + 1); n > 0 {
		a.metrics.Validators.Set(float64(n))
		a.metrics.VotingPower.Set(float64(power))
	}
	if a.turns.lastLate || a.turns.looksDown(next) {
		return 2
	}
	return 1
}

// observeDrift sets how far head's timestamp runs ahead of the wall clock.
// A timestamp is at least its parent's + 1 s, so heights faster than one a
// second (consensus.timeout_commit below 1 s) run the chain's clock ahead:
// logged, at most once a minute, while more than a second ahead and the
// chain is live (a node catching up replays old blocks, behind the clock).
func (a *App) observeDrift(head state.Head, live bool) {
	drift := time.Until(time.Unix(int64(head.Timestamp), 0))
	a.metrics.Drift.Set(drift.Seconds())
	if live && drift > time.Second && time.Since(a.driftLog) > time.Minute {
		a.driftLog = time.Now()
		a.log.Warn("execution timestamps run ahead of the wall clock: heights come faster than one a second (consensus.timeout_commit below 1s?)",
			"number", head.Number, "timestamp", head.Timestamp, "ahead", drift.Round(time.Millisecond))
	}
}

// apply runs newPayload for a decided payload, waiting for geth if it is
// down. A geth that answers SYNCING lacks the parent (its datadir was
// wiped under a running node): the app replays the blocks it lacks from
// CometBFT's block store, then applies this one. A geth that syncs from
// its peers on its own is waited for. It returns how long the newPayload
// call that answered took.
func (a *App) apply(ctx context.Context, height int64, p *engine.Payload) (time.Duration, error) {
	what := fmt.Sprintf("newPayload of block %d", p.ExecutionPayload.Number)
	wait := a.opts.Retry
	var took time.Duration // of the newPayload call that answered
	stuck := stallWatch{since: time.Now()}
	for {
		err := a.retry(ctx, what, func(ctx context.Context) error {
			asked := time.Now()
			err := a.engine.NewPayload(ctx, p)
			took = time.Since(asked)
			return err
		})
		switch {
		case err == nil:
			return took, nil
		case refused(err):
			a.metrics.Errors.WithLabelValues("invalid_decided").Inc()
			return 0, fmt.Errorf("geth finds decided block %d (execution %d %s) invalid, while 2/3 of the validators found it valid: this geth runs another chain or another version: %w",
				height, p.ExecutionPayload.Number, p.ExecutionPayload.BlockHash, err)
		case lacksBlocks(err):
			rerr := a.replayMissing(ctx, height)
			if rerr == nil {
				continue
			}
			if !lacksBlocks(rerr) && !errors.Is(rerr, errGethSyncing) {
				return 0, rerr
			}
			// geth fetches the blocks from its peers on its own (it does
			// after a forkchoiceUpdated to a head it lacks): let it, then
			// carry on from where it got. A geth whose head stays put
			// waits for a snap sync it may never get: say so.
			reason := what + ": " + rerr.Error()
			if head, herr := a.header(ctx, nil); herr == nil && stuck.stalled(head.Number) && !strings.Contains(reason, stuckHint) {
				reason += ": " + stuckHint
				if stuck.tell() {
					a.log.Error("geth answers SYNCING and its head has not moved", "geth_head", head.Number, "block", p.ExecutionPayload.Number,
						"for", stallTimeout, "cause", "geth lacks the state to execute its blocks and waits for a snap sync", "fix", stuckHint)
				}
			}
			a.setReady(false, reason)
			if werr := a.wait(ctx, wait); werr != nil {
				return 0, fmt.Errorf("%s: %w (last error: %v)", what, werr, rerr)
			}
			wait = min(2*wait, 2*time.Second)
		default:
			return 0, err
		}
	}
}

// stallWatch tells when geth's head has not moved for stallTimeout.
type stallWatch struct {
	head   uint64
	since  time.Time // when head was first seen
	logged bool
}

func (w *stallWatch) stalled(head uint64) bool {
	if head != w.head {
		w.head, w.since, w.logged = head, time.Now(), false
	}
	return time.Since(w.since) > stallTimeout
}

// tell reports true once per stall: the first time it is logged.
func (w *stallWatch) tell() bool {
	first := !w.logged
	w.logged = true
	return first
}

// errGethSyncing: geth holds the parent's ancestors up to its head yet
// cannot take the block, because it is syncing from its peers on its own.
var errGethSyncing = errors.New("geth is syncing on its own")

// finalized makes a decided block geth's head, safe and finalized block,
// waiting for a geth that does not answer.
func (a *App) finalized(ctx context.Context, d *beacon.ExecutableData) error {
	h := d.BlockHash
	return a.retry(ctx, fmt.Sprintf("forkchoiceUpdated to block %d", d.Number), func(ctx context.Context) error {
		_, err := a.engine.ForkchoiceUpdated(ctx, beacon.ForkchoiceStateV1{HeadBlockHash: h, SafeBlockHash: h, FinalizedBlockHash: h}, nil, d.Timestamp)
		return err
	})
}

// Commit persists the state FinalizeBlock produced. Every block is kept
// (retain height 0): the block store is what a wiped geth is rebuilt from.
// It returns at once: CometBFT's timeout_commit paces the chain, and a
// Commit that waited would hold CometBFT's consensus and mempool locks.
func (a *App) Commit(_ context.Context, _ *abci.RequestCommit) (*abci.ResponseCommit, error) {
	if err := a.persist(); err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.next != nil {
		a.next.expected = a.nextDue(time.Now())
		a.next.expect(a.next.expected)
	}
	return &abci.ResponseCommit{}, nil
}

// nextDue is when the next height starts, and its proposal is due, seen
// from Commit at now: timeout_commit after the height was decided, or now
// if that has passed (CometBFT starts the next height after both). Called
// with a.mu held.
func (a *App) nextDue(now time.Time) time.Time {
	if due := a.decidedAt.Add(a.opts.TimeoutCommit); due.After(now) {
		return due
	}
	return now
}

// persist saves the pending state and makes it the committed one.
func (a *App) persist() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.pending == nil {
		return errors.New("Commit without FinalizeBlock")
	}
	if err := state.Save(a.opts.StatePath, *a.pending); err != nil {
		return fmt.Errorf("persist app state: %w", err)
	}
	a.committed, a.pending = *a.pending, nil
	a.validated, a.proposed, a.proposal = common.Hash{}, common.Hash{}, common.Hash{}
	a.ready, a.reason = true, ""
	a.metrics.Ready.Set(1)
	a.metrics.Height.Set(float64(a.committed.Height))
	return nil
}
