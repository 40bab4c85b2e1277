package app

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	abci "github.com/cometbft/cometbft/abci/types"
	beacon "github.com/ethereum/go-ethereum/beacon/engine"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"

	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/engine"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/envelope"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/state"
)

// PrepareProposal builds this height's payload on the proposer's geth and
// proposes it as the only transaction; whatever CometBFT's mempool offers
// is dropped. If geth cannot build, the proposal is empty: the other
// validators reject it and the round moves on to the next proposer.
func (a *App) PrepareProposal(ctx context.Context, req *abci.RequestPrepareProposal) (*abci.ResponsePrepareProposal, error) {
	start := time.Now()
	parent, _ := a.parent()
	if req.Height != parent.Height+1 {
		return nil, fmt.Errorf("PrepareProposal for height %d, the app committed %d", req.Height, parent.Height)
	}
	p, optimistic, err := a.payload(ctx, parent, req.Time, a.budget(req.Height))
	if err != nil {
		if errors.Is(err, engine.ErrUnreachable) {
			a.setReady(false, "build: "+err.Error())
		}
		a.metrics.Errors.WithLabelValues("build").Inc()
		a.log.Error("cannot build a payload: proposing nothing", "height", req.Height, "err", err)
		return &abci.ResponsePrepareProposal{}, nil
	}
	if a.opts.Byzantine == "invalid" {
		corrupt(p)
	}
	tx, err := envelope.Encode(p)
	if a.opts.Byzantine == "pad" {
		tx = append(tx, make([]byte, 4<<10)...) // the same payload, 4 KiB heavier
	}
	if err == nil && int64(len(tx)) > req.MaxTxBytes {
		err = fmt.Errorf("envelope of %d bytes, the block takes %d (consensus param block.max_bytes)", len(tx), req.MaxTxBytes)
	}
	if err != nil {
		a.metrics.Errors.WithLabelValues("build").Inc()
		a.log.Error("cannot propose the payload", "height", req.Height, "err", err)
		return &abci.ResponsePrepareProposal{}, nil
	}
	data := p.ExecutionPayload
	if a.opts.Byzantine == "" {
		a.mu.Lock()
		a.proposed = data.BlockHash
		a.mu.Unlock()
	}
	a.metrics.ProposalBuild.Observe(time.Since(start).Seconds())
	a.metrics.ProposalTxs.Observe(float64(len(data.Transactions)))
	a.log.Info("proposing", "height", req.Height, "number", data.Number, "hash", data.BlockHash,
		"txs", len(data.Transactions), "optimistic", optimistic, "elapsed", time.Since(start).Round(10*time.Microsecond))
	return &abci.ResponsePrepareProposal{Txs: [][]byte{tx}}, nil
}

// budget returns how long PrepareProposal may take at height h: the round
// is not in the request, but this validator proposes only some of them,
// and CometBFT waits longer for each. A validator that proposes round 1
// because round 0's proposer failed has time to build on request (2.4 s
// with the testnet timeouts, where round 0 has 400 ms).
func (a *App) budget(h int64) time.Duration {
	if a.opts.ProposeBudget <= 0 || a.opts.Proposers == nil {
		return a.opts.ProposeBudget
	}
	r, _ := a.opts.Proposers.FirstRound(a.opts.Address, h)
	return a.opts.ProposeBudget + time.Duration(r)*a.opts.ProposeBudgetDelta
}

// payload returns the payload on parent for a block at blockTime: the one
// prepared ahead (startNext) if it fits (optimistic is then true),
// otherwise one built now. Past budget, geth is asked for whatever it has.
func (a *App) payload(ctx context.Context, parent state.State, blockTime time.Time, budget time.Duration) (p *engine.Payload, optimistic bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, engine.CallTimeout)
	defer cancel()
	ts := Timestamp(blockTime, parent.Head)
	if st := a.claim(parent, ts); st != nil {
		st.ask(budget)
		p, err := a.collect(ctx, parent, st)
		if err == nil {
			a.metrics.Optimistic.WithLabelValues("used").Inc()
			return p, true, nil
		}
		if ctx.Err() != nil {
			return nil, false, err
		}
		a.metrics.Optimistic.WithLabelValues("lost").Inc()
		a.log.Warn("the payload started early is lost: building again", "number", parent.Head.Number+1, "err", err)
	}
	st := newStarted(parent.Head.Hash, ts)
	st.ask(budget)
	// Nobody else would bring a proposer's geth back on a one-validator chain.
	err = a.withLostBlocks(ctx, parent.Height+1, func() (err error) {
		st.at = time.Now()
		st.id, err = a.start(ctx, parent, ts)
		return err
	})
	if err != nil {
		return nil, false, err
	}
	p, err = a.collect(ctx, parent, st)
	return p, false, err
}

// start asks geth to build the payload on parent at timestamp ts.
func (a *App) start(ctx context.Context, parent state.State, ts uint64) (beacon.PayloadID, error) {
	beaconRoot, random := a.randomness(parent)
	attrs := &beacon.PayloadAttributes{
		Timestamp:             ts,
		Random:                random,
		SuggestedFeeRecipient: a.opts.FeeRecipient,
		Withdrawals:           []*types.Withdrawal{},
		BeaconRoot:            &beaconRoot,
	}
	h := parent.Head.Hash
	fc := beacon.ForkchoiceStateV1{HeadBlockHash: h, SafeBlockHash: h, FinalizedBlockHash: h}
	id, err := a.engine.ForkchoiceUpdated(ctx, fc, attrs, parent.Head.Timestamp)
	if err != nil {
		return beacon.PayloadID{}, err
	}
	if id == nil {
		return beacon.PayloadID{}, errors.New("forkchoiceUpdated answered without a payloadId")
	}
	return *id, nil
}

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
	p, err := a.engine.GetPayload(ctx, st.id, st.timestamp)
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
	// getPayload does not return the beacon root: it is the attributes'.
	p.BeaconRoot, _ = a.randomness(parent)
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

	// due receives when the proposal is expected (Commit knows: it holds
	// the height until then); asked is closed when PrepareProposal wants
	// the payload, hurry once the proposal is overdue (ask).
	due          chan time.Time
	dueAt        time.Time // received from due (awaitDue); zero: on request
	asked, hurry chan struct{}
	askOnce      sync.Once

	// The payload is fetched ahead: a full block is 17 MB of JSON, which
	// takes a second or more to cross on two vCPUs, time the proposal would
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
	st := newStarted(s.Head.Hash, Timestamp(decided, s.Head))
	st.fetched = make(chan struct{})
	go func() {
		defer close(st.fetched)
		ctx, cancel := context.WithTimeout(a.ctx, a.opts.BlockTime+a.opts.BuildWait+2*engine.CallTimeout)
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
	}()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.next = st
}

// awaitDue waits until geth should start building st: when the proposal
// is due (Commit holds the height until then, and CometBFT waits
// timeout_commit after the commit in any case) less BuildWait and the time
// the last fetch took, and a quarter more; at once if PrepareProposal asks
// first. Starting then rather than when the parent became final lets the
// payload hold the transactions that arrived while the height was held,
// whatever geth's --miner.recommit, and gives geth's pool time to drop
// what the parent included (a build started with the head still new finds
// only those, and comes back empty).
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
	a.mu.Lock()
	lead := a.opts.BuildWait + a.fetchTook*5/4
	a.mu.Unlock()
	return a.waitUnless(ctx, st.asked, time.Until(due.Add(-lead)))
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

// corrupt makes a payload that is well formed and correctly hashed but
// invalid: a state root geth cannot reach by executing it.
func corrupt(p *engine.Payload) {
	d := *p.ExecutionPayload
	d.StateRoot = common.Hash{0xba, 0xd}
	d.BlockHash = common.Hash{}
	if b, err := beacon.ExecutableDataToBlockNoHash(d, p.VersionedHashes, &p.BeaconRoot, requestsOf(p)); err == nil {
		d.BlockHash = b.Hash()
	}
	p.ExecutionPayload = &d
}

func requestsOf(p *engine.Payload) [][]byte {
	out := make([][]byte, len(p.Requests))
	for i, r := range p.Requests {
		out[i] = r
	}
	return out
}

// Reasons ProcessProposal rejects a proposal for, as metric labels.
const (
	reasonMalformed   = "malformed"   // not exactly one decodable envelope
	reasonMismatch    = "mismatch"    // number, parent, timestamp or randomness wrong
	reasonInvalid     = "invalid"     // geth: INVALID
	reasonSyncing     = "syncing"     // geth: SYNCING/ACCEPTED, cannot judge
	reasonUnavailable = "unavailable" // geth did not answer
)

// ProcessProposal accepts a proposal only if it is exactly one envelope
// whose payload extends our head at the expected timestamp and randomness,
// and our geth executes it to VALID, or built it: the proposer accepts its
// own payload at once and executes it in FinalizeBlock, because CometBFT
// gossips the proposal only once ProcessProposal returns, and a full block
// takes its geth a good part of timeout_propose. A geth that answers SYNCING or
// ACCEPTED lacks committed blocks (it was killed or wiped): the app
// replays them from the block store and asks again. If geth still cannot
// judge (it syncs from its peers on its own), the proposal is rejected:
// this validator cannot vouch for it; the others can still decide it.
func (a *App) ProcessProposal(ctx context.Context, req *abci.RequestProcessProposal) (*abci.ResponseProcessProposal, error) {
	reject := func(reason string, err error) (*abci.ResponseProcessProposal, error) {
		a.metrics.Verdicts.WithLabelValues("reject", reason).Inc()
		a.log.Warn("rejecting proposal", "height", req.Height, "proposer", fmt.Sprintf("%X", req.ProposerAddress), "reason", reason, "err", err)
		return &abci.ResponseProcessProposal{Status: abci.ResponseProcessProposal_REJECT}, nil
	}
	parent, _ := a.parent()
	if len(req.Txs) != 1 {
		return reject(reasonMalformed, fmt.Errorf("%d transactions, want exactly one envelope", len(req.Txs)))
	}
	p, err := envelope.Decode(req.Txs[0])
	if err != nil {
		return reject(reasonMalformed, err)
	}
	if err := a.checkFits(p, parent, req.Height, req.Time); err != nil {
		return reject(reasonMismatch, err)
	}
	a.mu.Lock()
	own := p.ExecutionPayload.BlockHash == a.proposed
	a.mu.Unlock()
	if own {
		a.metrics.Verdicts.WithLabelValues("accept", "").Inc()
		return &abci.ResponseProcessProposal{Status: abci.ResponseProcessProposal_ACCEPT}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, engine.CallTimeout)
	defer cancel()
	err = a.withLostBlocks(ctx, req.Height, func() error { return a.engine.NewPayload(ctx, p) })
	switch {
	case errors.Is(err, engine.ErrInvalid):
		return reject(reasonInvalid, err)
	case lacksBlocks(err):
		return reject(reasonSyncing, err)
	case err != nil:
		a.setReady(false, "newPayload: "+err.Error())
		return reject(reasonUnavailable, err)
	}
	a.mu.Lock()
	a.validated = p.ExecutionPayload.BlockHash
	a.mu.Unlock()
	a.metrics.Verdicts.WithLabelValues("accept", "").Inc()
	return &abci.ResponseProcessProposal{Status: abci.ResponseProcessProposal_ACCEPT}, nil
}

// checkFits checks the payload against what the height requires.
func (a *App) checkFits(p *engine.Payload, parent state.State, height int64, blockTime time.Time) error {
	d := p.ExecutionPayload
	beaconRoot, random := a.randomness(parent)
	switch {
	case height != parent.Height+1:
		return fmt.Errorf("height %d, the app committed %d", height, parent.Height)
	case d.Number != parent.Head.Number+1:
		return fmt.Errorf("execution block %d, want %d", d.Number, parent.Head.Number+1)
	case d.ParentHash != parent.Head.Hash:
		return fmt.Errorf("parent %s, our head is %s", d.ParentHash, parent.Head.Hash)
	case d.Timestamp != Timestamp(blockTime, parent.Head):
		return fmt.Errorf("timestamp %d, want %d for block time %s", d.Timestamp, Timestamp(blockTime, parent.Head), blockTime.UTC().Format(time.RFC3339Nano))
	case d.Random != random:
		return fmt.Errorf("prevRandao %s, want %s", d.Random, random)
	case p.BeaconRoot != beaconRoot:
		return fmt.Errorf("parentBeaconBlockRoot %s, want %s", p.BeaconRoot, beaconRoot)
	case len(d.Withdrawals) != 0:
		return fmt.Errorf("%d withdrawals: this chain has none", len(d.Withdrawals))
	}
	return nil
}

// FinalizeBlock applies the decided payload: newPayload unless
// ProcessProposal just did, then forkchoiceUpdated with head = safe =
// finalized. CometBFT decided the block, so there is no rejecting it here:
// geth unreachable is waited for; geth finding it INVALID halts this node
// (its geth disagrees with 2/3 of the validators), loudly.
func (a *App) FinalizeBlock(ctx context.Context, req *abci.RequestFinalizeBlock) (*abci.ResponseFinalizeBlock, error) {
	start := time.Now()
	parent, validated := a.parent()
	a.mu.Lock()
	proposed := a.proposed
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
	for applied := executed; ; applied = false {
		if !applied {
			if err := a.apply(ctx, req.Height, p); err != nil {
				return nil, err
			}
			if !live {
				a.metrics.Replayed.Inc() // decided elsewhere: catch-up, or the handshake's replay
			}
		}
		err = a.finalized(ctx, d)
		if !lacksBlocks(err) {
			break
		}
		// geth lost the block between newPayload and here (restarted with
		// a wiped datadir): apply it again, replaying what it lacks.
		a.log.Warn("geth lacks the block it just validated: applying it again", "number", d.Number, "err", err)
	}
	if err != nil {
		return nil, err
	}
	next := state.State{Height: req.Height, Head: head, LastBlockHash: append([]byte(nil), req.Hash...)}
	nextDown, early := false, int32(1) // a.pacer is used by FinalizeBlock and Commit alone: one connection, no lock
	if a.opts.Proposers != nil {
		a.pacer.decided(a.opts.Proposers.At(req.Height), req.ProposerAddress)
		nextDown = a.pacer.looksDown(a.opts.Proposers.At(req.Height + 1))
		if nextDown || a.pacer.lastLate {
			early = 2 // round 1 likely: its proposer builds early too
		}
	}
	a.mu.Lock()
	a.pending, a.live, a.nextDown = &next, live, nextDown
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
	a.metrics.ExecutionHead.Set(float64(head.Number))
	a.log.Info("finalized", "height", req.Height, "number", head.Number, "hash", head.Hash,
		"txs", len(d.Transactions), "gas", d.GasUsed, "elapsed", elapsed.Round(10*time.Microsecond))
	return &abci.ResponseFinalizeBlock{TxResults: results, AppHash: head.Hash.Bytes()}, nil
}

// apply runs newPayload for a decided payload, waiting for geth if it is
// down. A geth that answers SYNCING lacks the parent (its datadir was
// wiped under a running node): the app replays the blocks it lacks from
// CometBFT's block store, then applies this one. A geth that syncs from
// its peers on its own is waited for.
func (a *App) apply(ctx context.Context, height int64, p *engine.Payload) error {
	what := fmt.Sprintf("newPayload of block %d", p.ExecutionPayload.Number)
	wait := a.opts.Retry
	for {
		err := a.retry(ctx, what, func(ctx context.Context) error { return a.engine.NewPayload(ctx, p) })
		switch {
		case err == nil:
			return nil
		case errors.Is(err, engine.ErrInvalid):
			a.metrics.Errors.WithLabelValues("invalid_decided").Inc()
			return fmt.Errorf("geth finds decided block %d (execution %d %s) invalid, while 2/3 of the validators found it valid: this geth runs another chain or another version: %w",
				height, p.ExecutionPayload.Number, p.ExecutionPayload.BlockHash, err)
		case lacksBlocks(err):
			rerr := a.replayMissing(ctx, height)
			if rerr == nil {
				continue
			}
			if !lacksBlocks(rerr) && !errors.Is(rerr, errGethSyncing) {
				return rerr
			}
			// geth fetches the blocks from its peers on its own (it does
			// after a forkchoiceUpdated to a head it lacks): let it, then
			// carry on from where it got.
			a.setReady(false, what+": "+rerr.Error())
			if werr := a.wait(ctx, wait); werr != nil {
				return fmt.Errorf("%s: %w (last error: %v)", what, werr, rerr)
			}
			wait = min(2*wait, 2*time.Second)
		default:
			return err
		}
	}
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

// Commit persists the state FinalizeBlock produced. Every block is kept
// (retain height 0): the block store is what a wiped geth is rebuilt from.
// Then it holds the height until the next one is due (--block-time,
// pace.go); heights decided without this validator's vote (block sync, the
// handshake's replay) are not held.
func (a *App) Commit(_ context.Context, _ *abci.RequestCommit) (*abci.ResponseCommit, error) {
	live, nextDown, err := a.persist()
	if err != nil {
		return nil, err
	}
	paced := live && a.opts.BlockTime > 0
	held := a.pacer.hold(time.Now(), live, nextDown)
	if !paced {
		held = 0
	}
	a.mu.Lock()
	if a.next != nil { // CometBFT starts the next height after both
		a.next.expect(time.Now().Add(max(held, a.opts.TimeoutCommit)))
	}
	a.mu.Unlock()
	if paced {
		a.metrics.PaceWait.Observe(held.Seconds())
		_ = a.wait(context.Background(), held) // ends early at shutdown
	}
	return &abci.ResponseCommit{}, nil
}

// persist saves the pending state and makes it the committed one. It
// reports whether this validator voted on the height, and whether the next
// height's round-0 proposer looks down.
func (a *App) persist() (live, nextDown bool, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.pending == nil {
		return false, false, errors.New("Commit without FinalizeBlock")
	}
	if err := state.Save(a.opts.StatePath, *a.pending); err != nil {
		return false, false, fmt.Errorf("persist app state: %w", err)
	}
	a.committed, a.pending = *a.pending, nil
	a.validated, a.proposed = common.Hash{}, common.Hash{}
	a.ready, a.reason = true, ""
	a.metrics.Ready.Set(1)
	a.metrics.Height.Set(float64(a.committed.Height))
	return a.live, a.nextDown, nil
}
