package app

import (
	"context"
	"sync"
	"time"

	beacon "github.com/ethereum/go-ethereum/beacon/engine"
	"github.com/ethereum/go-ethereum/common"

	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/builder"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/engine"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/state"
)

// collect returns st's payload: the one fetched ahead if st was started
// early, otherwise fetched now.
func (a *App) collect(ctx context.Context, parent state.State, st *started) (*engine.Payload, error) {
	if st.fetched == nil {
		return a.fetch(ctx, parent, st)
	}
	select {
	case <-st.fetched:
		return st.payload, st.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// fetch gets st's payload from geth once geth has built it. getPayload
// stops geth's build and returns the best payload so far, the empty one
// until the first full build is done, and with these attributes geth will
// build no other: a proposer that asks too early proposes an empty block
// while transactions wait. So fetch waits BuildWait after the build
// started, then asks geth for its pending block, which geth builds on
// request from the same pool the same way: once it is built, the payload,
// begun earlier, should be too; fetch gives it half as long again as the
// pending block took before getPayload. The time a full block needs is
// measured this way at every proposal, not guessed from a count. A payload
// that still comes back empty while the pending block holds transactions
// makes the next proposals wait longer (learnWait). A payload fetched
// ahead is then asked for just before the proposal is due. Once the
// proposal is overdue (st.hurry), every wait is cut short: a late
// proposal loses the round, which costs more than a smaller block.
func (a *App) fetch(ctx context.Context, parent state.State, st *started) (*engine.Payload, error) {
	if err := a.waitUnless(ctx, st.hurry, a.opts.BuildWait-time.Since(st.at)); err != nil {
		return nil, err
	}
	asked := time.Now()
	pending, err := a.pendingBlock(ctx, st.hurry)
	if err != nil {
		return nil, err
	}
	if len(pending.Transactions) > 0 {
		a.mu.Lock()
		extra := a.extraWait
		a.mu.Unlock()
		if err := a.waitUnless(ctx, st.hurry, time.Since(asked)/2+extra); err != nil {
			return nil, err
		}
	}
	built, cut := time.Since(asked), isHurried(st.hurry)
	// geth goes on building until getPayload: ask as late as the proposal
	// allows, so that a build that found nothing (the pool not yet updated
	// for the new head) is replaced by a later one.
	if !st.dueAt.IsZero() {
		a.mu.Lock()
		transfer := a.getTook * 5 / 4
		a.mu.Unlock()
		if err := a.waitUnless(ctx, st.asked, time.Until(st.dueAt.Add(-transfer))); err != nil {
			return nil, err
		}
	}
	got := time.Now()
	p, err := a.builder.Fetch(ctx, builder.Parent(parent.Head), st.id, a.attributes(parent, st.timestamp))
	if err != nil {
		return nil, err
	}
	// A fetch the budget cut short measured the budget, not geth: it
	// teaches nothing.
	if !cut {
		a.mu.Lock()
		a.getTook = time.Since(got)
		a.fetchTook = built + a.getTook
		a.mu.Unlock()
		if len(pending.Transactions) > 0 {
			a.learnWait(len(p.ExecutionPayload.Transactions) == 0)
		}
	}
	empty, overdue := len(p.ExecutionPayload.Transactions) == 0, cut
	if overdue {
		a.metrics.Errors.WithLabelValues("overdue_payload").Inc()
	}
	if empty && len(pending.Transactions) > 0 && !overdue {
		a.metrics.Errors.WithLabelValues("empty_payload").Inc()
	}
	if empty && (len(pending.Transactions) > 0 || overdue) {
		a.log.Warn("geth's payload is empty", "number", p.ExecutionPayload.Number, "pending_txs", len(pending.Transactions),
			"pending_gas", uint64(pending.GasUsed), "overdue", overdue, "since_start", time.Since(st.at))
	}
	return p, nil
}

// pendingBlock returns geth's pending block, or an empty one if the
// proposal is overdue first: geth builds it on request, which takes
// hundreds of milliseconds on a busy machine.
func (a *App) pendingBlock(ctx context.Context, hurry <-chan struct{}) (*engine.PendingBlock, error) {
	if isHurried(hurry) {
		return &engine.PendingBlock{}, nil
	}
	ctx, cancel := cutShort(ctx, hurry)
	defer cancel()
	p, err := a.engine.PendingBlock(ctx)
	if err != nil && isHurried(hurry) {
		return &engine.PendingBlock{}, nil
	}
	return p, err
}

// waitUnless waits like wait, less if hurry is closed first.
func (a *App) waitUnless(ctx context.Context, hurry <-chan struct{}, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	ctx, cancel := cutShort(ctx, hurry)
	defer cancel()
	if err := a.wait(ctx, d); err != nil && !isHurried(hurry) {
		return err
	}
	return nil
}

// cutShort returns a context that ends with ctx, or once hurry is closed.
func cutShort(ctx context.Context, hurry <-chan struct{}) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-hurry:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

func isHurried(hurry <-chan struct{}) bool {
	select {
	case <-hurry:
		return true
	default:
		return false
	}
}

// Bounds of the extra wait: the first step after an empty payload, and the
// most, geth's default --miner.recommit, after which geth seals what it has.
const (
	firstExtraWait = 50 * time.Millisecond
	maxExtraWait   = 2 * time.Second
)

// learnWait adjusts the extra wait after a payload fetched while geth's
// pending block held transactions: doubled (from firstExtraWait, up to
// maxExtraWait) when the payload was empty anyway, a quarter off when not.
func (a *App) learnWait(empty bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if empty {
		a.extraWait = min(maxExtraWait, max(firstExtraWait, 2*a.extraWait))
	} else {
		a.extraWait -= a.extraWait / 4
	}
}

// started is a payload for the next height: prepared ahead (startNext) or
// built on request.
type started struct {
	parent    common.Hash
	timestamp uint64
	at        time.Time
	id        beacon.PayloadID

	// due receives when the proposal is expected (Commit says: after
	// timeout_commit); asked is closed when PrepareProposal wants the
	// payload, hurry once the proposal is overdue (ask).
	due          chan time.Time
	expected     time.Time // what Commit sent on due (guarded by App.mu)
	dueAt        time.Time // received from due (awaitDue); zero: on request
	asked, hurry chan struct{}
	askOnce      sync.Once

	// The payload is fetched ahead: a full block is 17 MB of JSON, which
	// takes time to cross (BENCHMARKS-design.md) that the proposal would
	// otherwise spend. fetched is closed once payload and err are set.
	fetched chan struct{}
	payload *engine.Payload
	err     error
}

func newStarted(parent common.Hash, ts uint64) *started {
	return &started{parent: parent, timestamp: ts, at: time.Now(),
		due: make(chan time.Time, 1), asked: make(chan struct{}), hurry: make(chan struct{})}
}

// expect tells the payload's fetcher when the proposal is due.
func (st *started) expect(at time.Time) {
	select {
	case st.due <- at:
	default: // told already
	}
}

// ask says that PrepareProposal wants the payload now, and that it is
// overdue after budget (none when zero).
func (st *started) ask(budget time.Duration) {
	st.askOnce.Do(func() {
		close(st.asked)
		if budget > 0 {
			time.AfterFunc(budget, func() { close(st.hurry) })
		}
	})
}

// startNext prepares the payload of the height after s, when this
// validator is predicted to propose one of its first rounds (1: round 0;
// 2: round 1 too, when round 0 looks likely to fail: its proposer missed
// its last turn, or the last height took more than round 0). Round 1's
// proposer does not build early otherwise: its payload would go unclaimed
// at nearly every height, and a geth building a payload rebuilds it every
// --miner.recommit until it is fetched, CPU the chain's other work needs
// under load. Should round 0 fail unforeseen, round 1's proposer builds
// on request within round 1's longer timeout (budget). It has geth
// build it before the proposal is due and fetches it ahead (awaitDue). s
// is final: its block is geth's head. The timestamp is a prediction: the
// next block's time is the median of this height's precommit times
// (the same in every round of the height), signed moments before
// CometBFT decided the height and called FinalizeBlock at decided. Not
// the time now: FinalizeBlock may have spent half a second executing the
// block, and a prediction that falls in the next second makes the payload
// stale.
func (a *App) startNext(s state.State, decided time.Time, rounds int32) {
	a.mu.Lock()
	old := a.next
	a.next = nil
	a.mu.Unlock()
	if old != nil { // started for this height, which another proposer decided
		a.metrics.Optimistic.WithLabelValues("unclaimed").Inc()
	}
	if !a.opts.Optimistic || a.opts.Proposers == nil || !a.opts.Proposers.Proposes(a.opts.Address, s.Height+1, rounds) {
		return
	}
	st := newStarted(s.Head.Hash, timestamp(decided, s))
	st.fetched = make(chan struct{})
	a.tasks.Go(func() {
		defer close(st.fetched)
		ctx, cancel := context.WithTimeout(a.ctx, a.opts.TimeoutCommit+a.opts.BuildWait+2*engine.CallTimeout)
		defer cancel()
		if st.err = a.awaitDue(ctx, st); st.err == nil {
			st.at = time.Now()
			if st.id, st.err = a.start(ctx, s, st.timestamp); st.err == nil {
				st.payload, st.err = a.fetch(ctx, s, st)
			}
		}
		if st.err != nil && a.ctx.Err() == nil {
			a.log.Warn("cannot prepare the next payload ahead", "number", s.Head.Number+1, "err", st.err)
		}
	})
	a.mu.Lock()
	defer a.mu.Unlock()
	a.next = st
}

// awaitDue waits until geth should start building st: when the proposal
// is due (timeout_commit after the height was decided, which every
// validator counts from about the same moment) less what the proposer's
// geth needs (need); at once if PrepareProposal asks first. Starting then
// rather than when the parent became final lets the payload hold the
// transactions that arrived during timeout_commit, whatever geth's
// --miner.recommit, and gives geth's pool time to drop what the parent
// included (a build started with the head still new finds only those, and
// comes back empty).
func (a *App) awaitDue(ctx context.Context, st *started) error {
	var due time.Time
	select {
	case due = <-st.due:
	case <-st.asked:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	st.dueAt = due
	return a.waitUnless(ctx, st.asked, time.Until(due.Add(-a.need())))
}

// need is how long before a proposal is due its geth should start
// building the payload: BuildWait, then the longer of the last fetch this
// validator made and the last block its geth executed, and a quarter more.
// A payload like the last block takes about as long to build and cross
// from geth as that block took to cross to geth and execute. A need
// longer than timeout_commit starts the build at once.
func (a *App) need() time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.opts.BuildWait + max(a.fetchTook, a.execTook)*5/4
}

// claim takes the payload started for the block on parent at timestamp ts.
func (a *App) claim(parent state.State, ts uint64) *started {
	a.mu.Lock()
	st := a.next
	a.next = nil
	a.mu.Unlock()
	switch {
	case st == nil:
		return nil
	case st.parent != parent.Head.Hash || st.timestamp != ts:
		a.metrics.Optimistic.WithLabelValues("stale").Inc()
		a.log.Debug("the payload started early does not fit", "parent", st.parent, "timestamp", st.timestamp, "want_timestamp", ts)
		return nil
	}
	return st
}
