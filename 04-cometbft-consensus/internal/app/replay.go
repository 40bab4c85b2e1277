package app

import (
	"context"
	"fmt"

	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/envelope"
)

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
	a.log.Warn("geth lost blocks: replaying them from the CometBFT block store", "geth_head", head.Number, "to", height-1)
	for h := int64(head.Number) + 1; h < height; h++ {
		txs, err := blocks.Txs(h)
		if err != nil {
			return fmt.Errorf("block store, height %d: %w", h, err)
		}
		if len(txs) != 1 {
			return fmt.Errorf("block store, height %d: %d transactions", h, len(txs))
		}
		p, err := envelope.Decode(txs[0])
		if err != nil {
			return fmt.Errorf("block store, height %d: %w", h, err)
		}
		if err := a.retry(ctx, fmt.Sprintf("replay block %d", h), func(ctx context.Context) error { return a.engine.NewPayload(ctx, p) }); err != nil {
			return err
		}
		if err := a.finalized(ctx, p.ExecutionPayload); err != nil {
			return err
		}
		a.metrics.Replayed.Inc()
	}
	return nil
}
