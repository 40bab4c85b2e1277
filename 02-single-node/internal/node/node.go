// Package node is the App: the loop that decides when a block is
// made, makes it with the BlockBuilder, persists it with the StateManager and
// only then tells geth it is final; and the recovery that brings geth and
// the store into agreement at start-up and after every fault.
//
// The order of one block is the whole crash-safety argument:
//
//	build (forkchoiceUpdated+attributes, wait, getPayload)   nothing changes
//	newPayload, and at the same time                         geth has the block, not canonical
//	StateManager.Commit (fsync)                              the CL has it: it is final
//	forkchoiceUpdated(head = safe = finalized = block)       geth agrees
//
// A SIGKILL before Commit loses a block nobody finalized; after it, the
// store is ahead of geth and recovery replays or re-points geth. geth never
// finalizes a block the store lacks.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum"
	beacon "github.com/ethereum/go-ethereum/beacon/engine"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"

	"github.com/geth-consensus/tutorial/02-single-node/internal/builder"
	"github.com/geth-consensus/tutorial/02-single-node/internal/engine"
	"github.com/geth-consensus/tutorial/02-single-node/internal/metrics"
	"github.com/geth-consensus/tutorial/02-single-node/internal/state"
)

// Mode is when blocks are made.
type Mode string

const (
	// ModeBlockTime makes a block every BlockTime, empty or not.
	ModeBlockTime Mode = "block-time"
	// ModeOnDemand makes a block as soon as transactions are pending, and
	// an empty heartbeat block after MaxIdle without one (0 = never).
	ModeOnDemand Mode = "on-demand"
)

// Engine is what the node needs from geth.
type Engine interface {
	builder.Engine
	NewPayload(ctx context.Context, p *engine.Payload) error
	HeaderByNumber(ctx context.Context, n *big.Int) (*types.Header, error)
	HeaderByHash(ctx context.Context, hash common.Hash) (*types.Header, error)
	CheckCapabilities(ctx context.Context, timestamp uint64) error
	SubscribePendingTransactions(ctx context.Context, ch chan<- common.Hash) (ethereum.Subscription, error)
	PendingBlock(ctx context.Context) (*engine.PendingBlock, error)
}

// Options configure the node.
type Options struct {
	Mode        Mode
	BlockTime   time.Duration
	MaxIdle     time.Duration
	BuildWait   time.Duration // least wait between forkchoiceUpdated and getPayload
	MaxBuild    time.Duration // most wait between forkchoiceUpdated and getPayload
	MaxDrift    time.Duration // how far block timestamps may run ahead of the wall clock
	GenesisHash common.Hash   // of genesis.json: geth must run this chain
	Now         func() time.Time
}

// ErrConflict means geth and the store disagree about a finalized block. The
// node refuses to run: one of them belongs to another chain.
var ErrConflict = errors.New("geth and the CL's store disagree")

// errFatal marks failures that retrying cannot fix (the store cannot write).
var errFatal = errors.New("fatal")

// App produces blocks on one geth.
type App struct {
	opts    Options
	log     *slog.Logger
	engine  Engine
	state   *state.Manager
	builder *builder.BlockBuilder
	metrics *metrics.Metrics

	head        builder.Parent // the stored head; owned by Run's goroutine
	wait        *buildWait     // owned by Run's goroutine
	unpointed   bool           // head is stored but geth not yet told it is final
	driftPaused bool           // owned by Run's goroutine

	pending *pendingSet // announced transactions not yet in a block (pending.go)
	busy    busyMode    // on demand, under a stream of transactions (busy.go)

	mu        sync.Mutex // guards the fields below, read by the health endpoints
	ready     bool
	reason    string
	lastBlock time.Time
	status    Status
}

// Status is what /status reports.
type Status struct {
	Mode      Mode   `json:"block_mode"`
	Head      uint64 `json:"head"`
	HeadHash  string `json:"head_hash"`
	Ready     bool   `json:"ready"`
	Reason    string `json:"reason,omitempty"`
	LastBlock string `json:"last_block,omitempty"`
	// LastReplay is the latest time geth lost blocks and the node replayed
	// them: which, why, and how to avoid it.
	LastReplay *Replay `json:"last_replay,omitempty"`
}

// Deps are what a node drives and reports to.
type Deps struct {
	Log     *slog.Logger
	Engine  Engine
	State   *state.Manager
	Builder *builder.BlockBuilder
	Metrics *metrics.Metrics
}

// New wires a node. It does not contact geth until Run.
func New(opts Options, d Deps) *App {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &App{opts: opts, log: d.Log, engine: d.Engine, state: d.State, builder: d.Builder, metrics: d.Metrics,
		pending: newPendingSet(), busy: busyMode{listening: newListenSwitch()}, wait: newBuildWait(opts.BuildWait, opts.MaxBuild), reason: "starting"}
}

// Run produces blocks until ctx ends. Transient faults (geth unreachable,
// restarted, syncing) are retried with capped backoff, reconciling with geth
// each time; Run returns an error only for what retrying cannot fix.
func (a *App) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel (defers run last-in first-out)
	defer cancel()
	wg.Go(func() { a.watchPending(ctx) })
	backoff := newBackoff(100*time.Millisecond, 5*time.Second)
	lastPause := "" // the fault last logged
	for {
		err := a.reconcile(ctx)
		if err == nil {
			backoff.reset()
			err = a.produce(ctx)
		}
		if ctx.Err() != nil {
			a.setReady(false, "shutting down")
			return nil
		}
		if errors.Is(err, ErrConflict) || errors.Is(err, errFatal) || !engine.Retryable(err) {
			a.setReady(false, err.Error())
			return err
		}
		a.setReady(false, err.Error())
		a.metrics.Errors.WithLabelValues(errorKind(err)).Inc()
		// The same fault again (geth still stuck, say) is logged at debug:
		// the first line named it, and /readyz still does.
		level := slog.LevelWarn
		if err.Error() == lastPause {
			level = slog.LevelDebug
		}
		lastPause = err.Error()
		a.log.Log(ctx, level, "production paused", "err", err, "retry_in", backoff.next())
		if !sleep(ctx, backoff.take()) {
			return nil
		}
	}
}

// produce makes blocks until an error or the end of ctx.
func (a *App) produce(ctx context.Context) error {
	a.setReady(true, "")
	a.pending.markUnknown() // transactions may have arrived while we were not producing
	sched, recheck := newSchedule(a.opts), newParkedRecheck()
	defer func() {
		sched.stop()
		recheck.stop()
		a.stopProducing(ctx)
	}()
	for {
		// The block just stored becomes final in geth either now, or, when
		// the next block is due at once, through that block's
		// forkchoiceUpdated: one Engine API round trip less per block.
		if a.unpointed && !a.buildDue(sched) {
			if err := a.finalize(ctx); err != nil {
				return err
			}
		}
		heartbeat := false
		if !a.buildDue(sched) {
			select {
			case <-ctx.Done():
				return nil
			case <-a.pending.wake:
				if !a.buildDue(sched) {
					continue // only the timer makes blocks; or a stale signal
				}
			case <-sched.C():
				heartbeat = true
			case <-recheck.C():
				recheck.fired()
				a.pending.recheck()
				continue
			}
		}
		slot, ok := a.slot(ctx)
		if !ok {
			return nil // only ctx ends a drift pause early: we are stopping
		}
		// In block-time mode every slot gets a block, empty if need be.
		block, err := a.produceBlock(ctx, heartbeat || a.opts.Mode == ModeBlockTime)
		if err != nil {
			return err
		}
		if a.opts.Mode == ModeOnDemand {
			a.trackLoad(ctx, block)
		}
		parked := a.pending.parkedCount()
		a.metrics.Parked.Set(float64(parked))
		recheck.after(parked)
		sched.made(slot)
	}
}

// stopProducing leaves production: listening to announcements again, and
// geth told of the last block stored (it must not stay behind the store).
func (a *App) stopProducing(ctx context.Context) {
	if a.busy.on {
		a.setBusy(false)
	}
	if a.unpointed {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), engine.CallTimeout)
		defer cancel()
		_ = a.finalize(fctx)
	}
}

// slot waits while block timestamps run too far ahead of the wall clock
// (waitForDrift) and returns when the next block's slot began; false once
// ctx ends the wait.
func (a *App) slot(ctx context.Context) (time.Time, bool) {
	if err := a.waitForDrift(ctx); err != nil {
		return time.Time{}, false
	}
	slot := a.opts.Now()
	if ahead := time.Unix(int64(a.builder.Timestamp(a.head)), 0).Sub(slot); ahead < a.opts.MaxDrift {
		a.setDriftPaused(false, ahead) // a full second of headroom again
	}
	return slot, true
}

// buildDue reports whether the next block should start at once: on demand,
// transactions are pending; on a block time, its slot has begun.
func (a *App) buildDue(sched *schedule) bool {
	if a.opts.Mode == ModeBlockTime {
		return sched.slotBegun()
	}
	n, unknown := a.pending.count()
	return n > 0 || unknown || a.busy.on
}

// buildAttempts bounds the builds of one block while payloads come back
// empty though transactions are pending: each waits at least twice as long
// as the one before (buildWait.missed).
const buildAttempts = 4

// produceBlock builds, applies and finalizes one block. geth's first version
// of a payload is empty and the full one follows once built, so the wait
// before getPayload is learnt (buildWait), and an empty payload while
// transactions are pending is a miss: dropped, and rebuilt at once with a
// longer wait. When the rebuild comes back empty too, geth's pending block
// tells a slow build (it holds transactions: their gas sizes the next
// wait) from a pool with nothing to offer (transactions replaced, evicted,
// priced out; a stream that has ended): then the builds were no misses,
// their learning is undone, and the announced transactions are parked.
// heartbeat allows an empty block (block-time slots, the on-demand idle
// heartbeat) once nothing is includable or the attempts are used.
func (a *App) produceBlock(ctx context.Context, heartbeat bool) (*beacon.ExecutableData, error) {
	learnt := *a.wait // undone if the empty payloads were no misses
	for attempt := range buildAttempts {
		n, unknown := a.pending.count()
		var expect uint64
		if a.busy.on {
			expect = a.busy.expectGas // unannounced transactions: about as much as last time
		}
		gas := a.wait.expected(n, expect)
		wait := a.wait.next(gas)
		start := a.opts.Now()
		p, err := a.builder.Build(ctx, a.head, wait)
		if err == nil || errors.Is(err, builder.ErrNoPayloadID) || errors.Is(err, engine.ErrUnknownPayload) {
			a.unpointed = false // the build's forkchoiceUpdated made the head final
		}
		switch {
		case errors.Is(err, builder.ErrNoPayloadID), errors.Is(err, engine.ErrUnknownPayload):
			if errors.Is(err, builder.ErrNoPayloadID) {
				if err := a.checkGethMoved(ctx, a.head.Number); err != nil {
					return nil, err // stuck: reconcile, which names it
				}
			}
			a.log.Info("rebuilding", "reason", err)
			continue
		case err != nil:
			return nil, err
		}
		data := p.ExecutionPayload
		a.wait.payload(data.GasLimit)
		switch {
		case len(data.Transactions) > 0:
			a.wait.hit(len(data.Transactions), data.GasUsed)
		case attempt == 0 && gas > 0:
			// Most often geth had not finished its build.
			a.wait.missed(wait, gas)
			a.metrics.Discarded.Inc()
			continue
		case n > 0 || expect > 0 || unknown:
			includable, err := a.includable(ctx)
			if err != nil {
				return nil, err
			}
			if !includable {
				*a.wait = learnt
				// Whatever was announced before this build, geth's pool
				// does not offer: park it rather than build for it again.
				a.pending.settle(start)
				break
			}
			a.wait.missed(wait, a.wait.expected(n, expect))
			if attempt < buildAttempts-1 {
				a.metrics.Discarded.Inc()
				continue
			}
		}
		if len(data.Transactions) == 0 && !heartbeat {
			return nil, nil // nothing includable: wait for the next announcement
		}
		a.metrics.BuildWait.Observe(wait.Seconds())
		return data, a.apply(ctx, p, start)
	}
	return nil, nil
}

// includable asks geth for its pending block, which geth builds from its
// pool on request the way it fills a payload: whether geth has anything to
// include, and how much gas each of its transactions takes.
func (a *App) includable(ctx context.Context) (bool, error) {
	pb, err := a.engine.PendingBlock(ctx)
	if err != nil {
		return false, fmt.Errorf("read geth's pending block: %w", err)
	}
	a.wait.pending(len(pb.Transactions), uint64(pb.GasUsed))
	a.log.Debug("empty payloads: geth's pending block", "txs", len(pb.Transactions), "gas", uint64(pb.GasUsed))
	return len(pb.Transactions) > 0, nil
}

// apply executes, persists and finalizes a built payload. Once started it
// finishes even when ctx is cancelled: a shutdown abandons a build, never a
// half-applied block.
//
// newPayload and the store's fsynced commit run at once: the order that
// matters is that the block is stored before forkchoiceUpdated makes it
// final in geth. If geth fails to take the block, the store is ahead of
// geth, which is what recovery replays; if geth rejects the block it built
// itself (INVALID), the block is taken out of the store again.
func (a *App) apply(ctx context.Context, p *engine.Payload, start time.Time) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*engine.CallTimeout)
	defer cancel()
	data := p.ExecutionPayload
	stored := make(chan error, 1)
	go func() {
		committing := a.opts.Now()
		err := a.state.Commit(p)
		a.metrics.StoreCommit.Observe(a.opts.Now().Sub(committing).Seconds())
		stored <- err
	}()
	err := a.engine.NewPayload(ctx, p)
	if serr := <-stored; serr != nil {
		return fmt.Errorf("%w: persist block %d: %v", errFatal, data.Number, serr)
	}
	block := state.Head{Number: data.Number, Hash: data.BlockHash, Timestamp: data.Timestamp}
	if errors.Is(err, engine.ErrInvalid) {
		// geth rejected the block it built itself: never resend it; the
		// next trigger builds a new one on the same parent.
		a.metrics.Errors.WithLabelValues("invalid_payload").Inc()
		a.log.Error("geth rejected its own payload", "number", data.Number, "hash", data.BlockHash, "err", err)
		if rerr := a.state.Rollback(block, state.Head(a.head)); rerr != nil {
			return fmt.Errorf("%w: take rejected block %d out of the store: %v", errFatal, data.Number, rerr)
		}
		return nil
	}
	a.head = builder.Parent(block)
	if err != nil {
		return err // stored, not in geth: reconcile replays it
	}
	a.unpointed = true // produce finalizes it in geth, alone or with the next build
	a.pending.included(data.Transactions, a.opts.Now())
	elapsed := a.opts.Now().Sub(start)
	a.recordBlock(data, elapsed)
	a.log.Info("block", "number", data.Number, "hash", data.BlockHash, "txs", len(data.Transactions),
		"gas", data.GasUsed, "elapsed", elapsed.Round(10*time.Microsecond))
	return nil
}

// finalize makes the head canonical, safe and finalized in geth. With one
// producer nothing can reorg it.
func (a *App) finalize(ctx context.Context) error {
	h := a.head.Hash
	_, err := a.engine.ForkchoiceUpdated(ctx, beacon.ForkchoiceStateV1{HeadBlockHash: h, SafeBlockHash: h, FinalizedBlockHash: h}, nil, a.head.Timestamp)
	if err == nil {
		a.unpointed = false
	}
	return err
}

func (a *App) recordBlock(data *beacon.ExecutableData, elapsed time.Duration) {
	now := a.opts.Now()
	a.metrics.BlocksProduced.Inc()
	a.metrics.BlockTxs.Observe(float64(len(data.Transactions)))
	a.metrics.BlockGas.Observe(float64(data.GasUsed))
	a.metrics.BlockDuration.Observe(elapsed.Seconds())
	a.metrics.HeadNumber.Set(float64(data.Number))
	a.metrics.DriftSeconds.Set(time.Unix(int64(data.Timestamp), 0).Sub(now).Seconds())
	a.mu.Lock()
	a.lastBlock = now
	a.status.Head, a.status.HeadHash = data.Number, data.BlockHash.Hex()
	a.mu.Unlock()
}

// waitForDrift pauses production while the next block's timestamp would be
// more than MaxDrift ahead of the wall clock. It logs when a pause starts and
// ends, not for every block in between.
func (a *App) waitForDrift(ctx context.Context) error {
	for {
		ahead := time.Unix(int64(a.builder.Timestamp(a.head)), 0).Sub(a.opts.Now())
		if ahead <= a.opts.MaxDrift {
			return nil
		}
		a.setDriftPaused(true, ahead)
		if !sleep(ctx, ahead-a.opts.MaxDrift) {
			return ctx.Err()
		}
	}
}

func (a *App) setDriftPaused(paused bool, ahead time.Duration) {
	if paused == a.driftPaused {
		return
	}
	a.driftPaused = paused
	if paused {
		a.metrics.DriftPaused.Set(1)
		a.log.Warn("block timestamps too far ahead of the wall clock: pausing", "ahead", ahead, "max_drift", a.opts.MaxDrift)
	} else {
		a.metrics.DriftPaused.Set(0)
		a.log.Info("timestamps back within --max-drift: production resumed")
	}
}

// watchPending keeps a newPendingTransactions subscription open and counts
// notifications, so on-demand blocks start without polling lag and the build
// wait can grow with the pool.
func (a *App) watchPending(ctx context.Context) {
	backoff := newBackoff(100*time.Millisecond, 5*time.Second)
	for ctx.Err() == nil {
		on, changed := a.busy.listening.state()
		if !on { // busy: no subscription until the stream ends
			select {
			case <-ctx.Done():
				return
			case <-changed:
				continue
			}
		}
		ch := make(chan common.Hash, 4096)
		sub, err := a.engine.SubscribePendingTransactions(ctx, ch)
		if err != nil {
			if !sleep(ctx, backoff.take()) {
				return
			}
			continue
		}
		backoff.reset()
		a.pending.markUnknown() // transactions may have arrived while we were not listening
		a.busy.listening.held()
	recv:
		for {
			select {
			case <-ctx.Done():
				sub.Unsubscribe()
				return
			case h := <-ch:
				if !a.pending.add(h, a.opts.Now()) {
					a.metrics.LateAnnounced.Inc()
				}
			case err := <-sub.Err():
				a.log.Warn("pending transaction subscription lost", "err", err)
				break recv
			case <-changed: // busy
				break recv
			}
		}
		sub.Unsubscribe()
	}
}

// Ready reports whether the node is producing as expected, and why not.
func (a *App) Ready() (bool, string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.ready {
		return false, a.reason
	}
	if a.opts.Mode == ModeBlockTime && !a.lastBlock.IsZero() {
		if since := a.opts.Now().Sub(a.lastBlock); since > 3*a.opts.BlockTime+2*time.Second {
			return false, fmt.Sprintf("no block for %s (block time %s)", since.Round(time.Millisecond), a.opts.BlockTime)
		}
	}
	return true, ""
}

// Status reports the head and readiness.
func (a *App) Status() Status {
	ready, reason := a.Ready()
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.status
	s.Mode, s.Ready, s.Reason = a.opts.Mode, ready, reason
	if !a.lastBlock.IsZero() {
		s.LastBlock = a.lastBlock.UTC().Format(time.RFC3339Nano)
	}
	return s
}

func (a *App) setReady(ready bool, reason string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ready, a.reason = ready, reason
	a.status.Head, a.status.HeadHash = a.head.Number, a.head.Hash.Hex()
	if ready {
		a.metrics.Ready.Set(1)
	} else {
		a.metrics.Ready.Set(0)
	}
}
