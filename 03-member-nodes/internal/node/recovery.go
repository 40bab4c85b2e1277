package node

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"

	"github.com/geth-consensus/tutorial/03-member-nodes/internal/builder"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/engine"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/state"
)

// reconcile brings geth and the store into agreement and sets the node's
// head. It runs at start-up, after every fault and before a new leader's
// first block (a candidate's store is the cluster store, so this is where a
// new leader catches up with the cluster):
//
//   - geth behind the store (a crash rewound it, its datadir is new, or the
//     cluster moved on): replay the stored payloads with newPayload, oldest first;
//   - geth ahead of the store: a member's database was reset, and it
//     re-fetches those blocks from the cluster, each checked against geth;
//     a candidate refuses, since the cluster store is the only authority,
//     unless told to adopt them (--adopt-chain, adopt.go);
//   - a different block at the same height: ErrConflict, refuse to run.
func (a *App) reconcile(ctx context.Context) error {
	gethHead, err := a.engine.HeaderByNumber(ctx, nil)
	if err != nil {
		return err
	}
	genesis, err := a.engine.HeaderByNumber(ctx, big.NewInt(0))
	if err != nil {
		return err
	}
	if genesis.Hash() != a.opts.GenesisHash {
		return fmt.Errorf("%w: geth runs genesis %s, --genesis gives %s", ErrConflict, genesis.Hash(), a.opts.GenesisHash)
	}
	// geth must serve the methods the fork schedule picks for the next block.
	if err := a.engine.CheckCapabilities(ctx, max(uint64(a.opts.Now().Unix()), gethHead.Time+1)); err != nil {
		return err
	}
	if err := a.state.Init(ctx, state.Head{Number: 0, Hash: genesis.Hash(), Timestamp: genesis.Time}); err != nil {
		return a.storeErr(err)
	}
	stored, err := a.state.Head(ctx)
	if err != nil {
		return a.storeErr(err)
	}
	gethNum := gethHead.Number.Uint64()
	a.gethAhead = 0
	if a.opts.Role != RoleMember {
		if adopt, err := a.adoptCheck(ctx, stored.Number, gethNum); err != nil || adopt {
			if err == nil {
				err = a.adopt(ctx, stored.Number, gethNum)
			}
			if err != nil {
				return err
			}
			return a.reconcile(ctx) // from the adopted head
		}
	}

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
			if a.opts.Role != RoleMember {
				return fmt.Errorf("%w: geth finalized blocks %d to %d that the cluster store lacks (was the database restored from a backup?): refusing to run; wipe this geth to resync it from the store, or start once with --adopt-chain to import a chain a single node made",
					ErrConflict, stored.Number+1, gethNum)
			}
			a.log.Warn("geth is ahead of this member's store (database reset?): re-fetching those blocks from the cluster",
				"store_head", stored.Number, "geth_head", gethNum)
			a.gethAhead = gethNum
		}
	} else if err := a.replay(ctx, gethNum, stored.Number); err != nil {
		return err
	}

	a.head = builder.Parent{Number: stored.Number, Hash: stored.Hash, Timestamp: stored.Timestamp}
	a.headEpoch = stored.Epoch
	if a.gethAhead == 0 {
		if err := a.finalize(ctx); err != nil {
			return fmt.Errorf("point geth at the stored head %d: %w", stored.Number, err)
		}
	}
	a.metrics.HeadNumber.Set(float64(stored.Number))
	a.mu.Lock()
	a.status.Head, a.status.HeadHash = stored.Number, stored.Hash.Hex()
	a.mu.Unlock()
	a.log.Info("reconciled with geth", "head", stored.Number, "hash", stored.Hash, "geth_was_at", gethNum)
	return nil
}

// storeErr classifies a store failure: a store of another chain is a
// conflict; anything else is PostgreSQL being unreachable, waited for.
func (a *App) storeErr(err error) error {
	if errors.Is(err, state.ErrOtherChain) {
		return fmt.Errorf("%w: %v", ErrConflict, err)
	}
	a.metrics.Errors.WithLabelValues("store").Inc()
	return fmt.Errorf("%w: store: %v", errUnavailable, err)
}

// Replay is one replay of blocks geth lost, as /status reports it.
type Replay struct {
	From     uint64 `json:"from"`
	To       uint64 `json:"to"`
	GethHead uint64 `json:"geth_head"` // where geth came back
	At       string `json:"at"`
	Cause    string `json:"cause"`
	Fix      string `json:"fix"`
}

// What the node says when geth comes back without blocks it had imported.
// With its default storage (path scheme) geth v1.17 keeps the latest state
// in memory; after a SIGKILL it rewinds to the last state it wrote, genesis
// unless it flushed its 256 MiB write buffer since, and drops every block
// above. A crash-safe geth loses at most the block it was importing.
const (
	lostCause = "geth's datadir is new, or geth crashed on its default storage (--state.scheme path), " +
		"which keeps recent state in memory and comes back at the last state it wrote (often genesis), dropping the blocks above it"
	lostFix = "the node replays them from the store; to lose at most one block in a crash, " +
		"run geth with --gcmode archive --state.scheme hash"
	// stuckHint explains a geth that answers SYNCING for blocks it holds,
	// or VALID to a forkchoice it then ignores ("Ignoring beacon update to
	// old head while syncing"): SIGKILLed on its default storage before it
	// moved its blocks to its freezer, geth v1.17 comes back at genesis
	// still holding them and switches to snap sync ("snap-sync
	// incomplete"). No peer gets it out: the node never asks it for a
	// head it lacks, which is what starts a sync.
	stuckHint = "geth is in snap sync (its log says \"Switching from full-sync to snap-sync\") and ignores payloads and forkchoice: " +
		"a crash on geth's default --state.scheme path leaves it so when it kept the blocks but not their state; " +
		"fix: stop geth, delete its chain data (geth removedb --datadir DIR), initialise it again (geth init --datadir DIR genesis.json) " +
		"and start it: the node replays every block from the store; run geth with --gcmode archive --state.scheme hash to avoid this"
)

// checkGethMoved checks that geth's head reached block n, which it just
// answered VALID to as its head: a geth in snap sync answers so and
// ignores the update (stuckHint).
func (a *App) checkGethMoved(ctx context.Context, n uint64) error {
	h, err := a.engine.HeaderByNumber(ctx, nil)
	if err != nil {
		return err
	}
	if now := h.Number.Uint64(); now < n {
		return fmt.Errorf("geth answered VALID to block %d as its head yet stays at block %d: %w: %s", n, now, engine.ErrSyncing, stuckHint)
	}
	return nil
}

// replay brings geth from its head gethNum up to the stored head `to`.
//
// After a crash geth usually still holds the blocks but has rewound its head
// (its latest state was only in memory) and waits for a forkchoiceUpdated
// before it will import anything: it answers newPayload with SYNCING
// ("forced head needed for startup"). So: find the highest stored block geth
// still holds, point geth at it and let it re-execute from its own store;
// then replay with newPayload, oldest first, the blocks it lacks (all of them
// when its datadir was wiped).
func (a *App) replay(ctx context.Context, gethNum, to uint64) error {
	if err := a.checkOnStoredChain(ctx, gethNum); err != nil {
		return err
	}
	held, err := a.highestHeld(ctx, gethNum, to)
	if err != nil {
		return err
	}
	if held > gethNum {
		a.log.Warn("geth is behind but holds the blocks: letting it re-execute them", "from", gethNum+1, "to", held)
		if err := a.waitForGethHead(ctx, held); err != nil {
			return err
		}
	}
	if held == to {
		return nil
	}
	r := &Replay{From: held + 1, To: to, GethHead: gethNum, At: a.opts.Now().UTC().Format(time.RFC3339), Cause: lostCause, Fix: lostFix}
	a.mu.Lock()
	a.status.LastReplay = r
	a.mu.Unlock()
	a.log.Warn("geth lacks stored blocks: replaying payloads", "from", r.From, "to", r.To, "geth_head", gethNum, "cause", r.Cause, "fix", r.Fix)
	for n := held + 1; n <= to; n++ {
		if (n-held)%finalizeEvery == 1 {
			a.setReady(false, fmt.Sprintf("replaying block %d of %d-%d into geth, which lost them: %s; %s", n, r.From, r.To, r.Cause, r.Fix))
		}
		p, err := a.state.Payload(ctx, n)
		if errors.Is(err, state.ErrNoPayload) {
			return fmt.Errorf("%w: replay block %d: %v", errFatal, n, err)
		}
		if err != nil {
			return a.storeErr(err)
		}
		if err := a.engine.NewPayload(ctx, p); err != nil {
			if errors.Is(err, engine.ErrSyncing) {
				err = fmt.Errorf("%w; yet geth holds its parent: %s", err, stuckHint)
			}
			return fmt.Errorf("replay block %d: %w", n, err)
		}
		a.metrics.Replayed.Inc()
		if (n-held)%finalizeEvery == 0 || n == to {
			a.head = builder.Parent{Number: n, Hash: p.ExecutionPayload.BlockHash, Timestamp: p.ExecutionPayload.Timestamp}
			if err := a.finalize(ctx); err != nil {
				return fmt.Errorf("replay block %d: %w", n, err)
			}
		}
	}
	return nil
}

// checkOnStoredChain checks that geth's block n is the stored block n.
func (a *App) checkOnStoredChain(ctx context.Context, n uint64) error {
	want, err := a.storedHash(ctx, n)
	if err != nil {
		return err
	}
	h, err := a.engine.HeaderByNumber(ctx, new(big.Int).SetUint64(n))
	if err != nil {
		return err
	}
	if h.Hash() != want {
		return fmt.Errorf("%w: block %d is %s in the store but %s in geth", ErrConflict, n, want, h.Hash())
	}
	return nil
}

func (a *App) storedHash(ctx context.Context, n uint64) (common.Hash, error) {
	if n == 0 {
		return a.opts.GenesisHash, nil
	}
	h, err := a.state.HashAt(ctx, n)
	if errors.Is(err, state.ErrNoPayload) {
		return h, fmt.Errorf("%w: the store has a head above block %d but not the block itself", errFatal, n)
	}
	if err != nil {
		return h, a.storeErr(err)
	}
	return h, nil
}

// highestHeld binary-searches (lo, hi] for the highest stored block geth
// still holds; geth's block database is contiguous from genesis.
func (a *App) highestHeld(ctx context.Context, lo, hi uint64) (uint64, error) {
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		hash, err := a.storedHash(ctx, mid)
		if err != nil {
			return 0, err
		}
		_, err = a.engine.HeaderByHash(ctx, hash)
		switch {
		case err == nil:
			lo = mid
		case errors.Is(err, ethereum.NotFound):
			hi = mid - 1
		default:
			return 0, err
		}
	}
	return lo, nil
}

// How long geth may go without advancing while it re-executes blocks from
// its own store before recovery gives up and retries from the start.
var stallTimeout = 15 * time.Second // a variable for the unit tests

// waitForGethHead points geth at stored block n (forkchoiceUpdated) and
// polls until its head reaches n, as long as it keeps making progress.
func (a *App) waitForGethHead(ctx context.Context, n uint64) error {
	hash, err := a.storedHash(ctx, n)
	if err != nil {
		return err
	}
	p, err := a.state.Payload(ctx, n)
	if err != nil {
		return a.storeErr(err)
	}
	target := builder.Parent{Number: n, Hash: hash, Timestamp: p.ExecutionPayload.Timestamp}
	last, lastProgress := uint64(0), time.Now()
	for {
		a.head = target
		err := a.finalize(ctx)
		if err == nil {
			return a.checkGethMoved(ctx, n) // VALID: geth's head is n, unless it ignored the update
		}
		if !errors.Is(err, engine.ErrSyncing) {
			return err
		}
		h, err := a.engine.HeaderByNumber(ctx, nil)
		if err != nil {
			return err
		}
		if now := h.Number.Uint64(); now > last {
			last, lastProgress = now, time.Now()
		} else if time.Since(lastProgress) > stallTimeout {
			return fmt.Errorf("geth stopped at block %d on its way to %d, though it holds the blocks: %w: %s", now, n, engine.ErrSyncing, stuckHint)
		}
		if !sleep(ctx, 200*time.Millisecond) {
			return ctx.Err()
		}
	}
}
