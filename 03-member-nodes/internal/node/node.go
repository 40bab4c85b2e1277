// Package node is a cluster node: a leader candidate or a member. The
// candidate that holds the Redis lease is the leader: the loop that decides
// when a block is made, makes it with the BlockBuilder, commits it to the
// cluster's StateManager (PostgreSQL) and only then tells geth it is final.
// Every other node follows: it fetches each block, verifies it and applies it
// to its own geth (and, a member, to its own database). Recovery brings geth
// and the store into agreement at start-up and after every fault.
//
// The order of one block is the whole safety argument:
//
//	build (forkchoiceUpdated+attributes, wait, getPayload)   nothing changes
//	newPayload                                               geth has the block, not canonical
//	lease still valid? sign                                  a local check, then the proof
//	StateManager.Commit (one fenced transaction)             the cluster has it: it is final
//	forkchoiceUpdated(head = safe = finalized = block)       geth agrees
//	notify (Redis pub/sub)                                   members fetch it
//
// The commit refuses a stale epoch and a block that does not extend the
// stored head, so two leaders can never both finalize a block at one height:
// the database, not the lease, is the last word. A crash before Commit loses
// a block nobody finalized; after it, the store is ahead of geth and recovery
// replays. geth never finalizes a block the store lacks.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ethereum/go-ethereum"
	beacon "github.com/ethereum/go-ethereum/beacon/engine"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"

	"github.com/redis/go-redis/v9"

	"github.com/geth-consensus/tutorial/03-member-nodes/internal/builder"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/election"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/engine"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/metrics"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/notify"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/signer"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/state"
)

// Role is what a node may do.
type Role string

const (
	// RoleLeader is a candidate: it produces while it holds the lease and
	// follows otherwise.
	RoleLeader Role = "leader"
	// RoleMember follows and never produces.
	RoleMember Role = "member"
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
	BlockByNumber(ctx context.Context, n uint64) (*types.Block, error)
	HeaderByHash(ctx context.Context, hash common.Hash) (*types.Header, error)
	CheckCapabilities(ctx context.Context, timestamp uint64) error
	SubscribePendingTransactions(ctx context.Context, ch chan<- common.Hash) (ethereum.Subscription, error)
	PendingBlock(ctx context.Context) (*engine.PendingBlock, error)
}

// Options configure the node.
type Options struct {
	ID       string // instance id: the lease holder name and the directory entry
	Cluster  string // starts every Redis key and channel of the cluster; default "consensus"
	Role     Role
	APIURL   string // where other nodes reach this node's block API
	ChainID  *big.Int
	Signer   *signer.Signer   // leaders: signs every block; co-signers: co-signs
	Verifier *signer.Verifier // everyone: the allowed leaders, and the quorum
	// Quorum makes blocks k-of-n (--threshold above 1): the leader commits
	// a block only with k co-signatures, gathered within CosignTimeout
	// (cosign.go). Nil: the leader's signature alone.
	Quorum        *signer.Quorum
	CosignTimeout time.Duration
	LeaseRenew    time.Duration // lease renewal and acquisition attempts
	// StandDown is how long a leader that cannot produce (geth down or
	// syncing, the store unreachable) keeps its lease before it releases
	// it, and a candidate that cannot takes none. Below the lease TTL, so a
	// healthy candidate takes over sooner than the lease would expire;
	// zero: never.
	StandDown time.Duration
	// Adopt lets a candidate whose geth finalized blocks the cluster store
	// lacks import them (adopt.go) instead of refusing to run.
	Adopt       bool
	Poll        time.Duration // followers look for blocks at least this often
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

// errFatal marks failures that retrying cannot fix (a stored block lacks
// its payload).
var errFatal = errors.New("fatal")

// errUnavailable marks a cluster service that is down (PostgreSQL, Redis, the
// leader's API): the node waits for it and goes on.
var errUnavailable = errors.New("unavailable")

// errRoleChange ends producing or following: the lease was won or lost.
var errRoleChange = errors.New("role change")

// Source is where a follower gets blocks: the cluster store for a leader
// candidate, the leader's block API for a member.
type Source interface {
	BlocksAfter(ctx context.Context, after uint64, limit int) ([]*state.Block, error)
}

// App is one cluster node.
type App struct {
	opts    Options
	log     *slog.Logger
	engine  Engine
	state   *state.Manager
	builder *builder.BlockBuilder
	metrics *metrics.Metrics
	rdb     redis.UniversalClient
	elector *election.Elector // nil for members
	source  Source
	// proposals fetches big proposals for a co-signer.
	proposals ProposalSource
	run       string // this process's run id (election.NewRun), in the directory, the lease and its blocks

	head        builder.Parent // the stored head; owned by Run's goroutine
	headEpoch   uint64         // epoch of the head block; owned by Run's goroutine
	fenced      uint64         // the epoch this node last fenced the store with; owned by Run's goroutine
	gethAhead   uint64         // a member's geth held blocks up to here its store lacked
	wait        *buildWait     // owned by Run's goroutine
	unpointed   bool           // head is stored but geth not yet told it is final
	driftPaused bool           // owned by Run's goroutine
	// storeStalled is when the cluster store call that just failed began:
	// the failing spell starts there, not when the error came back, so
	// that a call that hung for its whole bound counts toward the
	// stand-down. Zero for any other fault. Owned by Run's goroutine.
	storeStalled time.Time

	pending *pendingSet // announced transactions not yet in a block (pending.go)
	busy    busyMode    // on demand, under a stream of transactions (busy.go)

	// The lease (lease.go), and how the producer hears of a change.
	lease      leaseHold
	health     health        // whether this node can produce (lease.go)
	roleChange chan struct{} // a lease was won or lost

	// Block notices (leader.go sends them, follow.go reads them).
	news      chan struct{}               // a block notice arrived
	announced atomic.Uint64               // newest block number a notice announced
	notified  uint64                      // newest block this leader announced; owned by Run's goroutine
	committed *state.Block                // the block this leader stored last; owned by Run's goroutine
	inline    atomic.Pointer[state.Block] // the block the newest notice carried
	proposal  chan struct{}               // a proposed block's notice arrived
	proposed  atomic.Pointer[state.Block] // the block the newest proposed notice carried
	// lastProposal is the block this leader proposed last (GET /proposals).
	lastProposal atomic.Pointer[proposal]
	fetching     atomic.Bool // a co-signer fetches a big proposal (fetchProposal)
	executed     common.Hash // a proposed block executed ahead; owned by Run's goroutine
	kept         common.Hash // a proposal kept for after a sync (preExecute); owned by Run's goroutine

	// k of n (cosign.go): co-signatures sent to this leader, and since when
	// its blocks find no quorum.
	cosigs     chan notify.Cosignature
	quorumLost time.Time // owned by Run's goroutine

	tasks sync.WaitGroup // goroutines Run started (and propose's); Run waits for them

	mu          sync.Mutex // guards the fields below, read by the health endpoints
	ready       bool
	reason      string
	electionErr string // a candidate cut off from Redis or the cluster store
	idErr       string // another process announces itself under this node's id
	quorumErr   string // blocks are not final: too few co-signatures
	lastBlock   time.Time
	status      Status
}

// Status is what /status reports.
type Status struct {
	ID        string `json:"id"`
	Role      string `json:"role"` // leader, candidate (a leader-mode node not holding the lease) or member
	Leader    string `json:"leader,omitempty"`
	Epoch     uint64 `json:"epoch"`
	Lag       uint64 `json:"lag"` // blocks announced but not yet applied here
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
	Redis   redis.UniversalClient
	Elector *election.Elector // the candidate's; nil for a member
	Source  Source            // where it follows from
	// Proposals fetches a proposal too big for its notice from the leader
	// (co-signers; nil without a quorum).
	Proposals ProposalSource
}

// ProposalSource fetches the block a leader proposed with this hash.
type ProposalSource interface {
	Proposal(ctx context.Context, leader string, hash common.Hash) (*state.Block, error)
}

// New wires a node. It contacts nothing until Run.
func New(opts Options, d Deps) *App {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Cluster == "" {
		opts.Cluster = "consensus"
	}
	if opts.Poll == 0 {
		opts.Poll = time.Second
	}
	run := election.NewRun()
	if d.Elector != nil {
		run = d.Elector.Run()
	}
	return &App{opts: opts, log: d.Log, engine: d.Engine, state: d.State, builder: d.Builder, metrics: d.Metrics,
		rdb: d.Redis, elector: d.Elector, source: d.Source, proposals: d.Proposals, run: run,
		pending: newPendingSet(), busy: busyMode{listening: newListenSwitch()}, wait: newBuildWait(opts.BuildWait, opts.MaxBuild), reason: "starting",
		roleChange: make(chan struct{}, 1), news: make(chan struct{}, 1), proposal: make(chan struct{}, 1),
		cosigs: make(chan notify.Cosignature, 64)}
}

// Run produces (while it leads) or follows until ctx ends. Transient faults
// (geth, PostgreSQL or Redis unreachable, geth restarted or syncing) are
// retried with capped backoff, reconciling with geth each time; Run returns
// an error only for what retrying cannot fix.
func (a *App) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer a.releaseLease() // last: nothing produces any more
	defer a.tasks.Wait()   // after cancel (defers run last-in first-out)
	defer cancel()
	a.announce(ctx)
	a.tasks.Go(func() { a.register(ctx) })
	a.tasks.Go(func() { a.watchNotices(ctx) })
	if a.opts.Role == RoleLeader {
		a.tasks.Go(func() { a.watchPending(ctx) })
		a.tasks.Go(func() { a.keepLease(ctx) })
		if a.opts.Quorum != nil {
			a.tasks.Go(func() { a.watchCosignatures(ctx) })
		}
	}
	backoff := newBackoff(100*time.Millisecond, 5*time.Second)
	lastPause := "" // the fault last logged
	for {
		a.storeStalled = time.Time{}
		// A new leader fences before it reconciles: a commit the old leader
		// had in flight is then refused, instead of landing after the
		// reconcile and costing the new leader its first block.
		err := a.fence(ctx)
		if err == nil {
			err = a.reconcile(ctx)
		}
		if err == nil {
			backoff.reset()
			a.health.ok()
			if a.leading() {
				err = a.produce(ctx)
			} else {
				err = a.follow(ctx)
			}
		}
		if ctx.Err() != nil {
			a.setReady(false, "shutting down")
			return nil
		}
		if errors.Is(err, errRoleChange) {
			continue
		}
		if errors.Is(err, ErrConflict) || errors.Is(err, errFatal) || (!engine.Retryable(err) && !errors.Is(err, errUnavailable)) {
			a.setReady(false, err.Error())
			return err
		}
		a.setReady(false, err.Error())
		failed := time.Now()
		if !a.storeStalled.IsZero() {
			failed = a.storeStalled
		}
		a.health.failing(err, failed)
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

// produce makes blocks until an error, the loss of the lease or the end of
// ctx. It first fences the store with its epoch, so that from now on the
// database refuses every older leader.
func (a *App) produce(ctx context.Context) error {
	if err := a.fence(ctx); err != nil {
		return err
	}
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
			a.notify(ctx)
		}
		if !a.leading() {
			return errRoleChange
		}
		heartbeat := false
		if !a.buildDue(sched) {
			select {
			case <-ctx.Done():
				return nil
			case <-a.roleChange:
				continue
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
		a.metrics.Tracked.Set(float64(a.pending.tracked()))
		recheck.after(parked)
		sched.made(slot)
	}
}

// fence takes the store for the lease's epoch, once per epoch, before the
// epoch's first block: from then on no leader of an earlier epoch can
// commit. A node that does not lead has nothing to fence.
func (a *App) fence(ctx context.Context) error {
	lease, ok := a.currentLease()
	if !ok || lease.Epoch == a.fenced {
		return nil
	}
	started := time.Now()
	if err := a.state.Fence(ctx, state.Claim{Epoch: lease.Epoch, Leader: a.opts.ID, Run: a.run}); err != nil {
		return a.commitFailed(err, started)
	}
	a.fenced = lease.Epoch
	a.log.Info("leading", "epoch", lease.Epoch, "stored_head", a.head.Number)
	return nil
}

// stopProducing leaves production: listening to announcements again, and
// geth told of the last block stored (it must not stay behind the store),
// then the members.
func (a *App) stopProducing(ctx context.Context) {
	if a.busy.on {
		a.setBusy(false)
	}
	if a.unpointed {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), engine.CallTimeout)
		defer cancel()
		if a.finalize(fctx) == nil {
			a.notify(fctx)
		}
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
		if a.unpointed && (err == nil || errors.Is(err, builder.ErrNoPayloadID) || errors.Is(err, engine.ErrUnknownPayload)) {
			a.unpointed = false // the build's forkchoiceUpdated made the head final
			a.notify(ctx)
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

// apply executes, signs, commits and finalizes a built payload. Once started
// it finishes even when ctx is cancelled: a shutdown abandons a build, never
// a half-applied block. A leader whose lease ran out, or whom the database
// fences out, commits nothing and steps down.
func (a *App) apply(ctx context.Context, p *engine.Payload, start time.Time) error {
	a.propose(ctx, p)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*engine.CallTimeout)
	defer cancel()
	data := p.ExecutionPayload
	if err := a.engine.NewPayload(ctx, p); err != nil {
		if errors.Is(err, engine.ErrInvalid) {
			// geth rejected the block it built itself: never resend it; the
			// next trigger builds a new one.
			a.metrics.Errors.WithLabelValues("invalid_payload").Inc()
			a.log.Error("geth rejected its own payload", "number", data.Number, "hash", data.BlockHash, "err", err)
			return nil
		}
		return err
	}
	lease, ok := a.currentLease()
	if !ok { // the local deadline passed while building: do not even try
		a.log.Warn("lease expired while building: dropping the block", "number", data.Number)
		return errRoleChange
	}
	sig, err := a.opts.Signer.Sign(signer.Header{ChainID: a.opts.ChainID, Number: data.Number, Hash: data.BlockHash,
		ParentHash: data.ParentHash, Epoch: lease.Epoch, Leader: a.opts.ID, Run: a.run})
	if err != nil {
		return fmt.Errorf("%w: sign block %d: %v", errFatal, data.Number, err)
	}
	committing := a.opts.Now()
	blk := &state.Block{Number: data.Number, Hash: data.BlockHash, ParentHash: data.ParentHash,
		Timestamp: data.Timestamp, Payload: p, LeaderID: a.opts.ID, Run: a.run, Epoch: lease.Epoch, Signature: sig}
	if a.opts.Quorum != nil {
		if blk.Cosignatures, err = a.gatherCosignatures(ctx, blk); errors.Is(err, errNoQuorum) {
			return a.noQuorum(err)
		} else if err != nil {
			return err
		}
		committing = a.opts.Now()
	}
	blk.CreatedAt = committing // as PostgreSQL's now(): the transaction's start
	started := time.Now()
	if err := a.state.Commit(ctx, *blk); err != nil {
		return a.commitFailed(err, started)
	}
	a.quorumLost = time.Time{}
	a.setQuorumErr(nil)
	a.committed = blk
	a.metrics.StoreCommit.Observe(a.opts.Now().Sub(committing).Seconds())
	a.head = builder.Parent{Number: data.Number, Hash: data.BlockHash, Timestamp: data.Timestamp}
	a.headEpoch = lease.Epoch
	a.unpointed = true // produce finalizes it in geth, alone or with the next build
	a.pending.included(data.Transactions, a.opts.Now())
	elapsed := a.opts.Now().Sub(start)
	a.recordBlock(data, elapsed)
	a.log.Info("block", "number", data.Number, "hash", data.BlockHash, "txs", len(data.Transactions),
		"gas", data.GasUsed, "elapsed", elapsed.Round(10*time.Microsecond))
	return nil
}

// commitFailed handles a refused or failed commit, begun at started:
// fenced out or beaten to the height, the node steps down and follows; the
// database unreachable, it waits for it (the lease keeper goes on renewing
// until the failing spell, counted from started, reaches StandDown).
func (a *App) commitFailed(err error, started time.Time) error {
	if errors.Is(err, state.ErrStaleEpoch) {
		// A newer leader has written: give the lease up so that no
		// candidate waits for it (ours would only be re-extended).
		a.log.Warn("fenced out by a newer epoch: stepping down", "err", err)
		a.releaseLease()
		return errRoleChange
	}
	if errors.Is(err, state.ErrNotHead) {
		// Another block landed first (a predecessor's last commit): catch
		// up through reconcile, then lead on with the same lease.
		a.log.Warn("the cluster store moved on: catching up", "err", err)
		a.dropLease()
		return errRoleChange
	}
	a.metrics.Errors.WithLabelValues("store").Inc()
	a.storeStalled = started
	return fmt.Errorf("%w: cluster store: %v", errUnavailable, err)
}

// finalize makes the head canonical, safe and finalized in geth. The cluster
// store has it, so nothing can reorg it.
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
	if a.idErr != "" {
		return false, a.idErr
	}
	if !a.ready {
		return false, a.reason
	}
	if a.electionErr != "" {
		return false, a.electionErr
	}
	if a.quorumErr != "" {
		return false, a.quorumErr
	}
	if a.leading() && a.opts.Mode == ModeBlockTime && !a.lastBlock.IsZero() {
		if since := a.opts.Now().Sub(a.lastBlock); since > 3*a.opts.BlockTime+2*time.Second {
			return false, fmt.Sprintf("no block for %s (block time %s)", since.Round(time.Millisecond), a.opts.BlockTime)
		}
	}
	return true, ""
}

// Status reports the role, the leader, the head and readiness.
func (a *App) Status() Status {
	ready, reason := a.Ready()
	role := string(a.opts.Role)
	if a.opts.Role == RoleLeader && !a.leading() {
		role = "candidate"
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.status
	s.ID, s.Role, s.Mode, s.Ready, s.Reason = a.opts.ID, role, a.opts.Mode, ready, reason
	s.Lag = a.lagBehind(s.Head)
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
