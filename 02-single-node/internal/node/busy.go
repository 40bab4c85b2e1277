package node

import (
	"context"
	"sync"
	"time"

	beacon "github.com/ethereum/go-ethereum/beacon/engine"

	"github.com/geth-consensus/tutorial/02-single-node/internal/engine"
)

// busyMode is how an on-demand node meets a stream of transactions: it
// stops listening to announcements (busy; see busyTxs) and expects as much
// gas as the last block held. on and expectGas belong to Run's goroutine;
// listening is how it tells watchPending.
type busyMode struct {
	on        bool
	expectGas uint64
	listening *listenSwitch
}

// busyTxs is the block size from which an on-demand node stops listening
// to announcements until the stream ends: geth sends one websocket message
// per transaction entering its pool, which costs it up to a third of its
// intake, and a node making blocks back to back needs none of them
// (BENCHMARKS-design.md, Busy mode).
const busyTxs = 100

// trackLoad starts and ends busy mode after a block (nil: none was made).
// A busy node builds back to back, expecting as much gas as the last
// block held; when a round of builds finds nothing geth would include, the
// stream has ended: it subscribes again, waits until it holds the
// subscription, and asks geth which transactions it would include now (the
// pending block). Those, and every announcement from then on, are counted:
// no transaction that arrived unannounced is left behind.
func (a *App) trackLoad(ctx context.Context, block *beacon.ExecutableData) {
	txs := 0
	if block != nil {
		txs = len(block.Transactions)
	}
	if txs > 0 {
		a.busy.expectGas = block.GasUsed
	}
	switch {
	case txs >= busyTxs:
		if !a.busy.on {
			a.log.Debug("busy: not listening to announcements", "txs", txs)
			a.metrics.BusyStreams.Inc()
			a.setBusy(true)
		}
	case a.busy.on && txs == 0:
		a.log.Debug("stream ending: listening to announcements again", "txs", txs)
		a.setBusy(false)
		a.busy.listening.waitHeld(ctx, engine.CallTimeout)
		pb, err := a.engine.PendingBlock(ctx)
		if err != nil {
			a.log.Warn("reading geth's pending block", "err", err)
			a.pending.markUnknown()
			return
		}
		now := a.opts.Now()
		for _, h := range pb.Transactions {
			a.pending.add(h, now)
		}
	}
}

func (a *App) setBusy(busy bool) {
	a.busy.on = busy
	a.busy.listening.set(!busy)
	if busy {
		a.metrics.Busy.Set(1)
	} else {
		a.metrics.Busy.Set(0)
	}
}

// listenSwitch says whether watchPending should hold the pending-transaction
// subscription, and tells the producer when it holds one again.
type listenSwitch struct {
	mu       sync.Mutex
	listen   bool
	changed  chan struct{} // closed, and replaced, when listen changes
	holdsSub chan struct{} // signalled each time a subscription is made
}

func newListenSwitch() *listenSwitch {
	return &listenSwitch{listen: true, changed: make(chan struct{}), holdsSub: make(chan struct{}, 1)}
}

func (l *listenSwitch) state() (bool, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.listen, l.changed
}

func (l *listenSwitch) set(listen bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.listen == listen {
		return
	}
	if listen {
		select { // forget a subscription made before this one
		case <-l.holdsSub:
		default:
		}
	}
	l.listen = listen
	close(l.changed)
	l.changed = make(chan struct{})
}

func (l *listenSwitch) held() {
	select {
	case l.holdsSub <- struct{}{}:
	default:
	}
}

// waitHeld waits until watchPending holds a subscription again, at most d.
func (l *listenSwitch) waitHeld(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-l.holdsSub:
	case <-t.C:
	case <-ctx.Done():
	}
}
