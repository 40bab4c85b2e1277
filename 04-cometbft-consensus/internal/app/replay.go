package app

import (
	"context"
	"fmt"
	"time"

	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/engine"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/envelope"
)

// Replay is one replay of blocks geth lost, as /status reports it.
type Replay struct {
	From     uint64 `json:"from"` // execution block numbers
	To       uint64 `json:"to"`
	GethHead uint64 `json:"geth_head"` // where geth came back
	At       string `json:"at"`
	Cause    string `json:"cause"`
	Fix      string `json:"fix"`
}

// What the app says when geth comes back without blocks it had imported.
// With its default storage (path scheme) geth v1.17 keeps the latest state
// in memory; after a SIGKILL it rewinds to the last state it wrote, genesis
// unless it flushed its 256 MiB write buffer since, and drops every block
// above. A crash-safe geth loses at most the block it was importing.
const (
	lostCause = "geth's datadir is new, or geth crashed on its default storage (--state.scheme path), " +
		"which keeps recent state in memory and comes back at the last state it wrote (often genesis), dropping the blocks above it"
	lostFix = "the app replays them from CometBFT's block store; to lose at most one block in a crash, " +
		"run geth with --gcmode archive --state.scheme hash"
	// stuckHint explains a geth that answers SYNCING for blocks it holds,
	// or VALID to a forkchoice it then ignores ("Ignoring beacon update to
	// old head while syncing"): SIGKILLed on its default storage before it
	// moved its blocks to its freezer, geth v1.17 comes back at genesis
	// still holding them and switches to snap sync ("snap-sync
	// incomplete"). Its peers do not get it out: the app never asks it
	// for a head it lacks, which is what starts a sync.
	stuckHint = "geth is in snap sync (its log says \"Switching from full-sync to snap-sync\") and ignores payloads and forkchoice: " +
		"a crash on geth's default --state.scheme path leaves it so when it kept the blocks but not their state; " +
		"fix: stop geth, delete its chain data (geth removedb --datadir DIR), initialise it again (geth init --datadir DIR genesis.json) " +
		"and start it: the app replays every block from CometBFT's block store; run geth with --gcmode archive --state.scheme hash to avoid this"
)

// stallTimeout is how long geth may answer SYNCING without its head moving
// before the app names the snap sync it waits for (a variable for the
// unit tests).
var stallTimeout = 15 * time.Second

// lostBlocks logs that geth came back at gethHead without the blocks up
// to `to`, naming the cause and the fix, and returns the replay to record
// once geth took them.
func (a *App) lostBlocks(gethHead, to uint64, how string) *Replay {
	r := &Replay{From: gethHead + 1, To: to, GethHead: gethHead, At: time.Now().UTC().Format(time.RFC3339), Cause: lostCause, Fix: lostFix}
	a.log.Warn(how, "geth_head", gethHead, "from", r.From, "to", r.To, "cause", r.Cause, "fix", r.Fix)
	return r
}

func (a *App) recordReplay(r *Replay) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.lastReplay = r
}

// stuckReplay is a replay geth took without moving its head: it is in
// snap sync (stuckHint). Replaying the same blocks again only repeats it.
type stuckReplay struct{ gethHead, to uint64 }

func stuckErr(to, head uint64) error {
	return fmt.Errorf("%w: it answered VALID to block %d as its head yet stays at block %d: %s", errGethSyncing, to, head, stuckHint)
}

// LastReplay is the latest replay of blocks geth lost, nil if none.
func (a *App) LastReplay() *Replay {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.lastReplay
}

// withLostBlocks calls f, a call to geth about the block at height; if
// geth answers that it lacks blocks (killed, or its datadir wiped), it
// replays the committed blocks geth lost and calls f once more.
func (a *App) withLostBlocks(ctx context.Context, height int64, f func() error) error {
	err := f()
	if !lacksBlocks(err) {
		return err
	}
	if rerr := a.replayMissing(ctx, height); rerr != nil {
		return fmt.Errorf("%w; replay: %v", err, rerr)
	}
	return f()
}

// replayMissing feeds geth the decided payloads above its head and below
// height, oldest first, from CometBFT's block store, making each its head
// in turn. The forkchoiceUpdated matters for a geth that was killed and
// kept some blocks but not their state: it answers VALID at once for a
// block it knows, ACCEPTED for a child of a block without state, and
// re-executes a known block only when forkchoice points at it.
func (a *App) replayMissing(ctx context.Context, height int64) error {
	a.mu.Lock()
	blocks := a.blocks
	a.mu.Unlock()
	if blocks == nil {
		return fmt.Errorf("geth lacks the parent of block %d and the block store is not open yet", height)
	}
	head, err := a.header(ctx, nil)
	if err != nil {
		return err
	}
	if int64(head.Number) >= height-1 {
		return fmt.Errorf("%w: it holds block %d yet cannot take block %d", errGethSyncing, head.Number, height)
	}
	to := uint64(height - 1)
	if a.stillStuck(ctx, blocks, head.Number, to) {
		return stuckErr(to, head.Number)
	}
	r := a.lostBlocks(head.Number, to, "geth lost blocks: replaying them from the CometBFT block store")
	for h := int64(head.Number) + 1; h < height; h++ {
		if (h-int64(head.Number))%64 == 1 {
			a.setReady(false, fmt.Sprintf("replaying block %d of %d-%d into geth, which lost them: %s; %s", h, r.From, r.To, r.Cause, r.Fix))
		}
		p, err := decided(blocks, h)
		if err != nil {
			return err
		}
		if err := a.retry(ctx, fmt.Sprintf("replay block %d", h), func(ctx context.Context) error { return a.engine.NewPayload(ctx, p) }); err != nil {
			if lacksBlocks(err) { // its parent is geth's head, or the block before
				err = fmt.Errorf("replay block %d: %w; yet geth holds its parent: if this lasts, %s", h, err, stuckHint)
			}
			return err
		}
		if err := a.finalized(ctx, p.ExecutionPayload); err != nil {
			return err
		}
		a.metrics.Replayed.Inc()
	}
	// A geth in snap sync answers VALID to a forkchoice to a block it
	// holds, yet ignores it.
	now, err := a.header(ctx, nil)
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.stuck = nil
	if now.Number < to {
		a.stuck = &stuckReplay{gethHead: head.Number, to: to}
	}
	a.mu.Unlock()
	if now.Number < to {
		return stuckErr(to, now.Number)
	}
	a.recordReplay(r)
	return nil
}

// stillStuck reports whether geth is where the last replay left it stuck,
// still holding the block above its head: replaying again would not move
// it. A geth given a new datadir since lacks that block, and is replayed.
func (a *App) stillStuck(ctx context.Context, blocks Blocks, head, to uint64) bool {
	a.mu.Lock()
	st := a.stuck
	a.mu.Unlock()
	if st == nil || st.gethHead != head || st.to != to {
		return false
	}
	p, err := decided(blocks, int64(head)+1)
	if err != nil {
		return false
	}
	_, err = a.engine.HeaderByHash(ctx, p.ExecutionPayload.BlockHash)
	return err == nil
}

// decided reads the payload decided at height h from the block store.
func decided(blocks Blocks, h int64) (*engine.Payload, error) {
	txs, err := blocks.Txs(h)
	if err != nil {
		return nil, fmt.Errorf("block store, height %d: %w", h, err)
	}
	if len(txs) != 1 {
		return nil, fmt.Errorf("block store, height %d: %d transactions", h, len(txs))
	}
	p, err := envelope.Decode(txs[0])
	if err != nil {
		return nil, fmt.Errorf("block store, height %d: %w", h, err)
	}
	return p, nil
}
