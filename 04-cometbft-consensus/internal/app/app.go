// Package app is the ABCI application: it turns every CometBFT height into
// exactly one execution block on this validator's geth.
//
//	PrepareProposal  the proposer builds a payload on its geth and proposes
//	                 it as the block's single envelope transaction
//	ProcessProposal  every validator checks the envelope and runs newPayload
//	                 on its own geth: VALID or the proposal is rejected (the
//	                 proposer's geth built it: it runs it in FinalizeBlock)
//	FinalizeBlock    the decided payload becomes head = safe = finalized
//	Commit           the app state (height, execution head) is persisted
//
// One file per concern: propose.go (PrepareProposal), process.go
// (ProcessProposal), finalize.go (FinalizeBlock, Commit), build.go
// (payloads built before they are due, and the waits for geth; the
// Engine API calls that build are the builder package's), replay.go
// (blocks a wiped geth lost), turns.go (who missed a turn), proposer.go
// (who proposes next).
//
// The app hash is the execution block hash, so 2/3 of the voting power
// signing a CometBFT block header signs geth's block of the height before.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"sync"
	"time"

	abci "github.com/cometbft/cometbft/abci/types"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"

	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/builder"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/engine"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/envelope"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/metrics"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/state"
)

// Engine is what the app needs from geth.
type Engine interface {
	builder.Engine
	NewPayload(ctx context.Context, p *engine.Payload) error
	HeaderByNumber(ctx context.Context, n *big.Int) (*types.Header, error)
	HeaderByHash(ctx context.Context, hash common.Hash) (*types.Header, error)
	Logs(ctx context.Context, block common.Hash, address common.Address, topic common.Hash) ([]types.Log, error)
	PendingBlock(ctx context.Context) (*engine.PendingBlock, error)
}

// Blocks reads decided blocks' transactions from CometBFT's block store, to
// replay payloads into a geth that lost them while the node runs.
type Blocks interface {
	Txs(height int64) ([][]byte, error)
}

// Options configure the app.
type Options struct {
	StatePath    string         // the app state file
	Genesis      common.Hash    // geth's genesis block hash: the app hash at height 0
	FeeRecipient common.Address // this validator's fee recipient when it proposes
	BuildWait    time.Duration  // between forkchoiceUpdated and getPayload
	// ProposeBudget bounds PrepareProposal in round 0: past it, the payload
	// is asked of geth at once, built or not (zero: no bound). Three
	// quarters of timeout_propose leave the rest for the proposal to reach
	// the others. Each later round adds ProposeBudgetDelta (three quarters
	// of timeout_propose_delta), as CometBFT's timeout_propose grows.
	ProposeBudget, ProposeBudgetDelta time.Duration
	// TimeoutCommit is CometBFT's timeout_commit, which paces the chain:
	// the next height starts that long after the +2/3 precommits arrived
	// (moments before FinalizeBlock), or when Commit returns if later. A
	// proposal is due then.
	TimeoutCommit time.Duration
	// StallAfter is how long without a decided height makes the app
	// unready (/readyz 503, with the reason): quorum lost, or CometBFT's
	// consensus stopped. Zero: never.
	StallAfter time.Duration

	// Proposers predicts who proposes the next height's first rounds (nil:
	// no predictions). Optimistic building: when it names Address, geth
	// builds that payload before the proposal is due (startNext), and
	// PrepareProposal only collects it.
	Proposers  *Proposers
	Address    []byte // this validator's address
	Optimistic bool

	// Registry is the validator registry contract whose PowerChanged
	// events become validator updates (zero: the set never changes).
	Registry common.Address
	// Sets reads CometBFT's validator sets, which the updates are checked
	// against.
	Sets ValidatorSets
	// MaxValidators bounds the set: block.max_bytes holds the commit of
	// that many validators (0: no bound).
	MaxValidators int

	Retry time.Duration // first wait before retrying geth in FinalizeBlock; 100 ms when zero
}

// Codes of CheckTx and of the transaction results.
const (
	CodeOK       uint32 = 0
	CodeRejected uint32 = 1
)

// App implements abci.Application.
type App struct {
	abci.BaseApplication

	opts    Options
	engine  Engine
	builder *builder.BlockBuilder
	log     *slog.Logger
	metrics *metrics.Metrics
	ctx     context.Context // ends at shutdown: unblocks geth retries
	tasks   sync.WaitGroup  // the payload fetches started ahead; Wait waits for them

	mu         sync.Mutex
	blocks     Blocks
	committed  state.State   // as of the last Commit (or the handshake)
	pending    *state.State  // FinalizeBlock's result, persisted by Commit
	started    bool          // consensus has called the app: the handshake is over
	turns      turns         // used by FinalizeBlock alone
	decidedAt  time.Time     // when FinalizeBlock began for the last height (New: when the app started)
	driftLog   time.Time     // when the drift was last logged (FinalizeBlock alone)
	validated  common.Hash   // the last payload geth answered VALID in ProcessProposal
	validTook  time.Duration // how long geth took to answer VALID for it
	proposed   common.Hash   // the last payload this validator proposed (its geth built it)
	proposal   common.Hash   // keccak256 of that proposal's envelope, byte for byte
	next       *started      // the payload started for the next height, if any
	extraWait  time.Duration // learnt: added to the build wait after empty payloads (fetch)
	fetchTook  time.Duration // learnt: the last fetch, pending block to payload (awaitDue)
	getTook    time.Duration // learnt: the last getPayload (fetch)
	execTook   time.Duration // learnt: newPayload of the last block decided live (need)
	ready      bool
	reason     string
	lastReplay *Replay      // the latest blocks geth lost (replay.go)
	stuck      *stuckReplay // the last replay geth took without moving (replay.go)
}

var _ abci.Application = (*App)(nil)

// New loads the app state. ctx ends the app's retries at shutdown.
func New(ctx context.Context, e Engine, m *metrics.Metrics, log *slog.Logger, opts Options) (*App, error) {
	if opts.Retry <= 0 {
		opts.Retry = 100 * time.Millisecond
	}
	s, err := state.Load(opts.StatePath)
	if err != nil {
		return nil, err
	}
	return &App{opts: opts, engine: e, builder: builder.New(e, opts.FeeRecipient), log: log, metrics: m, ctx: ctx, committed: s,
		decidedAt: time.Now()}, nil
}

// Wait returns once every goroutine the app started has ended, which they
// do when New's context ends.
func (a *App) Wait() {
	a.tasks.Wait()
}

// SetValidator gives the app this validator's address, once the node
// knows it (from its key file or its remote signer), before the node
// starts: the proposer prediction needs it; until then the app predicts
// no turn of its own.
func (a *App) SetValidator(address []byte) {
	a.opts.Address = address
}

// SetBlocks gives the app CometBFT's block store once the node exists.
func (a *App) SetBlocks(b Blocks) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.blocks = b
}

// Ready reports whether geth answers and heights are being committed.
// A node that decided no height for StallAfter is not ready either: the
// chain halted (quorum lost), or CometBFT's consensus stopped here.
func (a *App) Ready() (bool, string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.ready && a.reason != "" { // its own geth, say: the cause, not the stall it causes
		return false, a.reason
	}
	if since := time.Since(a.decidedAt); a.opts.StallAfter > 0 && since > a.opts.StallAfter {
		return false, fmt.Sprintf("no height decided for %s: fewer than 2/3 of the voting power online, or consensus stopped here (CONSENSUS FAILURE in the log: restart)",
			since.Round(100*time.Millisecond))
	}
	return a.ready, a.reason
}

// Committed returns the committed state.
func (a *App) Committed() state.State {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.committed
}

func (a *App) setReady(ok bool, reason string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ready, a.reason = ok, reason
	if ok {
		a.metrics.Ready.Set(1)
	} else {
		a.metrics.Ready.Set(0)
	}
}

// Info tells CometBFT how far the app (and geth) got. In the handshake,
// when geth holds fewer blocks than the app committed (it crashed and
// rewound, or its datadir was wiped), the app reports geth's height:
// CometBFT then replays the missing blocks from its block store through
// FinalizeBlock, which drives geth. Once consensus runs, Info (CometBFT's
// /abci_info) only reports the committed state: a geth that loses blocks
// then is replayed by the app itself.
func (a *App) Info(ctx context.Context, _ *abci.RequestInfo) (*abci.ResponseInfo, error) {
	a.mu.Lock()
	s, handshake := a.committed, !a.started
	a.mu.Unlock()
	if !handshake {
		return info(s, a.opts.Genesis), nil
	}
	head, err := a.header(ctx, nil) // without a.mu: waiting for geth updates readiness
	if err != nil {
		return nil, err
	}
	if h := min(int64(head.Number), s.Height); h != s.Height || h == 0 {
		if h < s.Height {
			a.recordReplay(a.lostBlocks(head.Number, s.Head.Number, "geth is behind the app: CometBFT will replay the missing blocks"))
		}
		at, err := a.header(ctx, big.NewInt(h))
		if err != nil {
			return nil, err
		}
		s = state.State{Height: h, Head: at}
		a.mu.Lock()
		a.committed = s
		a.mu.Unlock()
	}
	return info(s, a.opts.Genesis), nil
}

func info(s state.State, genesis common.Hash) *abci.ResponseInfo {
	appHash := s.AppHash()
	if s.Height == 0 {
		appHash = genesis.Bytes()
	}
	return &abci.ResponseInfo{Data: "geth-consensus", Version: "1", AppVersion: 1,
		LastBlockHeight: s.Height, LastBlockAppHash: appHash}
}

// parent returns the committed state the current height builds on, and
// records that the handshake is over: CometBFT calls the consensus
// methods only after it.
func (a *App) parent() (parent state.State, validated common.Hash) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.started = true
	return a.committed, a.validated
}

// header returns geth's canonical block n (its head when n is nil),
// waiting for geth if it does not answer: CometBFT cannot go on without it.
func (a *App) header(ctx context.Context, n *big.Int) (state.Head, error) {
	what := "read geth's head"
	if n != nil {
		what = fmt.Sprintf("read geth's block %d", n)
	}
	var h *types.Header
	err := a.retry(ctx, what, func(ctx context.Context) (err error) {
		h, err = a.engine.HeaderByNumber(ctx, n)
		return err
	})
	if err != nil {
		return state.Head{}, err
	}
	return state.Head{Number: h.Number.Uint64(), Hash: h.Hash(), Timestamp: h.Time}, nil
}

// InitChain checks that geth runs the genesis the app expects and returns
// its hash as the initial app hash.
func (a *App) InitChain(ctx context.Context, req *abci.RequestInitChain) (*abci.ResponseInitChain, error) {
	if req.InitialHeight > 1 {
		return nil, fmt.Errorf("initial_height %d: this app maps height h to execution block h and needs initial_height 1", req.InitialHeight)
	}
	g, err := a.header(ctx, big.NewInt(0))
	if err != nil {
		return nil, err
	}
	if g.Hash != a.opts.Genesis {
		return nil, fmt.Errorf("geth's genesis is %s, genesis.json gives %s: initialise geth from the same genesis.json", g.Hash, a.opts.Genesis)
	}
	if err := checkBlockMaxBytes(req); err != nil {
		return nil, err
	}
	return &abci.ResponseInitChain{AppHash: a.opts.Genesis.Bytes()}, nil
}

// checkBlockMaxBytes refuses a CometBFT genesis whose block.max_bytes
// cannot carry the largest envelope, a full block geth may build: the
// first such block would stop the chain. (-1 is CometBFT's 100 MB.)
func checkBlockMaxBytes(req *abci.RequestInitChain) error {
	p := req.ConsensusParams
	if p == nil || p.Block == nil || p.Block.MaxBytes == -1 {
		return nil
	}
	var evidence int64
	if p.Evidence != nil {
		evidence = p.Evidence.MaxBytes
	}
	if need := envelope.BlockMaxBytes(len(req.Validators), evidence); p.Block.MaxBytes < need {
		return fmt.Errorf("the CometBFT genesis sets consensus_params.block.max_bytes to %d: a full execution block needs %d with %d validators and evidence.max_bytes %d; set block.max_bytes to at least that",
			p.Block.MaxBytes, need, len(req.Validators), evidence)
	}
	return nil
}

// CheckTx refuses every transaction: CometBFT's mempool is not how
// Ethereum transactions travel. They go to any validator's geth RPC and
// gossip to the others; the proposer's geth puts them in its payload.
func (a *App) CheckTx(_ context.Context, _ *abci.RequestCheckTx) (*abci.ResponseCheckTx, error) {
	return &abci.ResponseCheckTx{Code: CodeRejected,
		Log: "this chain takes no transactions through CometBFT: send Ethereum transactions to a validator's geth (eth_sendRawTransaction)"}, nil
}

// seed is CometBFT's hash of the block at the parent height (geth's
// genesis hash before height 1). The proposer of the next height cannot
// choose it: it was fixed when the parent height was decided.
func (a *App) seed(s state.State) common.Hash {
	if len(s.LastBlockHash) == 0 {
		return a.opts.Genesis
	}
	return common.BytesToHash(s.LastBlockHash)
}

// attributes every validator expects of the payload at the height after s
// with timestamp ts: parentBeaconBlockRoot is the seed, prevRandao its
// keccak256. Like Ethereum's RANDAO it is unpredictable before the parent
// height is decided, and the parent's proposer could only bias it by not
// proposing.
func (a *App) attributes(s state.State, ts uint64) builder.Attributes {
	seed := a.seed(s)
	return builder.Attributes{Timestamp: ts, BeaconRoot: seed, Random: crypto.Keccak256Hash([]byte("prevRandao"), seed.Bytes())}
}

// timestamp is the execution timestamp of the block after s at CometBFT
// block time t.
func timestamp(t time.Time, s state.State) uint64 {
	return builder.Timestamp(t, builder.Parent(s.Head))
}

// retry calls f until it succeeds, ctx or the app's context ends, or geth
// gives an answer that retrying would not change: a refusal of the payload
// (refused), or SYNCING and ACCEPTED (geth lacks blocks; the caller
// decides what to feed it). Only a geth that does not answer is retried.
// Waits double up to 2 s.
func (a *App) retry(ctx context.Context, what string, f func(context.Context) error) error {
	wait := a.opts.Retry
	for attempt := 0; ; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, 3*engine.CallTimeout)
		err := f(cctx)
		cancel()
		if err == nil {
			if attempt > 0 {
				a.setReady(true, "")
				a.log.Info("geth answers again", "what", what)
			}
			return nil
		}
		if refused(err) || lacksBlocks(err) {
			return err
		}
		if attempt == 0 {
			a.log.Warn("geth unavailable: retrying", "what", what, "err", err)
			a.metrics.Errors.WithLabelValues("geth").Inc()
		}
		a.setReady(false, what+": "+err.Error())
		if werr := a.wait(ctx, wait); werr != nil {
			return fmt.Errorf("%s: %w (last error: %v)", what, werr, err)
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// errShutdown ends waits when the app's context ends.
var errShutdown = errors.New("shutting down")

// wait sleeps for d, less if ctx or the app's context ends first.
func (a *App) wait(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-a.ctx.Done():
		return errShutdown
	}
}

// refused reports geth's verdict on a payload itself, the same from any
// geth on the same parent: INVALID, or its parameters refused (-32602:
// fields missing, execution requests out of order).
func refused(err error) bool {
	return errors.Is(err, engine.ErrInvalid) || errors.Is(err, engine.ErrInvalidParams)
}

// lacksBlocks reports geth's SYNCING or ACCEPTED: it does not have the
// parent (or the head) it was asked about.
func lacksBlocks(err error) bool {
	return errors.Is(err, engine.ErrSyncing) || errors.Is(err, engine.ErrAccepted)
}
