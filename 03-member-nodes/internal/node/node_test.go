package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum"
	beacon "github.com/ethereum/go-ethereum/beacon/engine"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/event"

	"github.com/geth-consensus/tutorial/devnet"
	"github.com/redis/go-redis/v9"

	"github.com/geth-consensus/tutorial/03-member-nodes/internal/builder"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/config"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/election"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/engine"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/metrics"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/signer"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/state"
)

// fakeGeth is an in-memory chain behind the Engine interface: enough to test
// the node's decisions without a geth (Redis and PostgreSQL are real). The
// real thing is tested in e2e/.
type fakeGeth struct {
	mu        sync.Mutex
	missing   string // a method geth claims not to serve
	headers   map[common.Hash]*types.Header
	canonical []common.Hash
	built     map[beacon.PayloadID]*types.Header
	sent      map[common.Hash]int // newPayload calls per block hash
	invalid   func(h *types.Header) bool
	// stateless: geth holds its blocks but lost the state to execute
	// them, and is in snap sync: SYNCING to every newPayload, VALID to a
	// forkchoiceUpdated to a block it holds, which it ignores.
	stateless bool

	// A transaction pool: a payload takes the offered transactions present
	// when its build starts; hidden ones are in the pool but not offered
	// (priced out).
	pool     map[common.Hash][]byte
	hidden   map[common.Hash]bool
	txsIn    map[beacon.PayloadID][][]byte
	builds   int                // forkchoiceUpdated calls with attributes
	announce chan<- common.Hash // the node's pending-transaction subscription, nil when none
	subs     int                // subscriptions made

	// quiet is added to the pool, unannounced, once the pending block has
	// come back empty after a stream (a block of busyTxs or more):
	// transactions that reach geth while a busy leader is not listening,
	// too late for any of its builds.
	quiet     [][]byte
	afterBusy bool // armed by a block of busyTxs or more

	// minWait: a payload fetched sooner after its build started is empty,
	// as geth's first version is.
	minWait  time.Duration
	startsAt map[beacon.PayloadID]time.Time
}

func newFakeGeth() *fakeGeth {
	g := &types.Header{Number: big.NewInt(0), Difficulty: big.NewInt(0)}
	return &fakeGeth{headers: map[common.Hash]*types.Header{g.Hash(): g}, canonical: []common.Hash{g.Hash()},
		built: map[beacon.PayloadID]*types.Header{}, sent: map[common.Hash]int{},
		pool: map[common.Hash][]byte{}, hidden: map[common.Hash]bool{}, txsIn: map[beacon.PayloadID][][]byte{},
		startsAt: map[beacon.PayloadID]time.Time{}}
}

func (f *fakeGeth) genesis() common.Hash { return f.canonical[0] }

func (f *fakeGeth) ForkchoiceUpdated(_ context.Context, fc beacon.ForkchoiceStateV1, attrs *beacon.PayloadAttributes, _ uint64) (*beacon.PayloadID, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	head, ok := f.headers[fc.HeadBlockHash]
	if !ok {
		return nil, engine.ErrSyncing
	}
	if f.stateless && fc.HeadBlockHash != f.canonical[len(f.canonical)-1] {
		return nil, nil // VALID, and ignored ("Ignoring beacon update to old head while syncing")
	}
	// The canonical chain is the head and its ancestors.
	chain := make([]common.Hash, head.Number.Uint64()+1)
	for h := head; ; h = f.headers[h.ParentHash] {
		chain[h.Number.Uint64()] = h.Hash()
		if h.Number.Sign() == 0 {
			break
		}
	}
	f.canonical = chain
	if attrs == nil {
		return nil, nil
	}
	h := &types.Header{Number: new(big.Int).Add(head.Number, big.NewInt(1)), ParentHash: head.Hash(), Time: attrs.Timestamp,
		MixDigest: attrs.Random, Difficulty: big.NewInt(0)}
	id := beacon.PayloadID{byte(len(f.built)), byte(len(f.built) >> 8), byte(len(f.built) >> 16)}
	f.built[id] = h
	f.builds++
	txs := [][]byte{}
	for hash, raw := range f.pool {
		if !f.hidden[hash] {
			txs = append(txs, raw)
		}
	}
	f.txsIn[id] = txs
	f.startsAt[id] = time.Now()
	return &id, nil
}

func (f *fakeGeth) GetPayload(_ context.Context, id beacon.PayloadID, _ uint64) (*engine.Payload, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	h := f.built[id]
	txs := f.txsIn[id]
	if time.Since(f.startsAt[id]) < f.minWait {
		txs = [][]byte{}
	}
	return &engine.Payload{ExecutionPayload: &beacon.ExecutableData{Number: h.Number.Uint64(), ParentHash: h.ParentHash,
		BlockHash: h.Hash(), Timestamp: h.Time, Random: h.MixDigest, BaseFeePerGas: big.NewInt(1), LogsBloom: make([]byte, 256),
		Transactions: txs},
		VersionedHashes: []common.Hash{}}, nil
}

func (f *fakeGeth) NewPayload(_ context.Context, p *engine.Payload) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := p.ExecutionPayload
	f.sent[d.BlockHash]++
	if f.stateless {
		return engine.ErrSyncing
	}
	h := &types.Header{Number: new(big.Int).SetUint64(d.Number), ParentHash: d.ParentHash, Time: d.Timestamp, MixDigest: d.Random, Difficulty: big.NewInt(0)}
	if f.invalid != nil && f.invalid(h) {
		return engine.ErrInvalid
	}
	f.headers[h.Hash()] = h
	for _, raw := range d.Transactions {
		delete(f.pool, crypto.Keccak256Hash(raw))
	}
	if len(d.Transactions) >= busyTxs && f.quiet != nil {
		f.afterBusy = true
	}
	return nil
}

func (f *fakeGeth) HeaderByNumber(_ context.Context, n *big.Int) (*types.Header, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := len(f.canonical) - 1
	if n != nil {
		i = int(n.Int64())
	}
	if i >= len(f.canonical) {
		return nil, ethereum.NotFound
	}
	return f.headers[f.canonical[i]], nil
}

// BlockByNumber is the node's adoption path (adopt.go), which the e2e
// tests drive against a real geth; the fake holds headers only.
func (f *fakeGeth) BlockByNumber(_ context.Context, n uint64) (*types.Block, error) {
	h, err := f.HeaderByNumber(context.Background(), new(big.Int).SetUint64(n))
	if err != nil {
		return nil, err
	}
	return types.NewBlockWithHeader(h), nil
}

func (f *fakeGeth) HeaderByHash(_ context.Context, h common.Hash) (*types.Header, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if hd, ok := f.headers[h]; ok {
		return hd, nil
	}
	return nil, ethereum.NotFound
}

func (f *fakeGeth) SubscribePendingTransactions(_ context.Context, ch chan<- common.Hash) (ethereum.Subscription, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.announce = ch
	f.subs++
	return event.NewSubscription(func(quit <-chan struct{}) error {
		<-quit
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.announce == ch {
			f.announce = nil
		}
		return nil
	}), nil
}

func (f *fakeGeth) PendingBlock(context.Context) (*engine.PendingBlock, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	pb := &engine.PendingBlock{}
	for h := range f.pool {
		if !f.hidden[h] {
			pb.Transactions = append(pb.Transactions, h)
			pb.GasUsed += 21000
		}
	}
	if f.afterBusy && len(pb.Transactions) == 0 {
		f.afterBusy = false
		for _, raw := range f.quiet {
			f.pool[crypto.Keccak256Hash(raw)] = raw
		}
	}
	return pb, nil
}

// addTx puts a transaction in the pool; it returns its hash, which the
// caller announces (or not) with announceTx.
func (f *fakeGeth) addTx(raw string, hidden bool) common.Hash {
	f.mu.Lock()
	defer f.mu.Unlock()
	h := crypto.Keccak256Hash([]byte(raw))
	f.pool[h], f.hidden[h] = []byte(raw), hidden
	return h
}

func (f *fakeGeth) announceTx(t *testing.T, h common.Hash) {
	t.Helper()
	eventually(t, func() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.announce != nil })
	f.mu.Lock()
	ch := f.announce
	f.mu.Unlock()
	ch <- h
}

func (f *fakeGeth) buildCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.builds
}

// inPool reports whether the transaction is still in the pool: no block geth
// took holds it.
func (f *fakeGeth) inPool(h common.Hash) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.pool[h]
	return ok
}

func (f *fakeGeth) CheckCapabilities(context.Context, uint64) error {
	if f.missing != "" {
		return errors.New("geth does not offer " + f.missing)
	}
	return nil
}

func (f *fakeGeth) head() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return uint64(len(f.canonical) - 1)
}

// startFake runs a leader candidate on f, with a real Redis and PostgreSQL
// from the devnet library; stop cancels it and returns Run's error, done
// delivers that error when Run ends by itself.
func startFake(t *testing.T, f *fakeGeth, opts Options) (stop func() error, done <-chan error) {
	t.Helper()
	_, stop, done = startFakeApp(t, f, opts)
	return stop, done
}

// startFakeApp is startFake that also returns the node.
func startFakeApp(t *testing.T, f *fakeGeth, opts Options) (app *App, stop func() error, done <-chan error) {
	t.Helper()
	ctx := context.Background()
	n := devnet.StartT(t, devnet.Config{Redis: true, Postgres: 1})
	st, err := state.Open(ctx, n.Postgres[0].URL(), state.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	rdb := redis.NewClient(&redis.Options{Addr: n.Redis.Addr()})
	t.Cleanup(func() { rdb.Close() })
	sgn, err := signer.LoadKey(config.DevSignerKey)
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := signer.NewVerifier([]common.Address{sgn.Address})
	if err != nil {
		t.Fatal(err)
	}
	el, err := election.New(rdb, election.Options{ID: "leader-1", TTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	opts.ID, opts.Role, opts.ChainID, opts.Signer, opts.Verifier = "leader-1", RoleLeader, big.NewInt(1337), sgn, verifier
	opts.LeaseRenew = 100 * time.Millisecond
	opts.GenesisHash = f.genesis()
	if opts.MaxBuild == 0 {
		opts.MaxBuild = time.Second
	}
	if opts.Mode == "" {
		opts.Mode = ModeBlockTime
	}
	app = New(opts, Deps{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Engine: f, State: st,
		Builder: builder.New(f, common.Address{}, time.Now), Metrics: metrics.New(), Redis: rdb, Elector: el, Source: st})
	runCtx, cancel := context.WithCancel(ctx)
	result := make(chan error, 1)
	go func() { result <- app.Run(runCtx) }()
	t.Cleanup(cancel)
	return app, func() error { cancel(); return <-result }, result
}

// eventually polls cond every 5 ms for up to 10 s.
func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// INVALID is final: the node never resends a payload geth rejected, and
// builds a new one instead.
func TestInvalidPayloadIsNeverResent(t *testing.T) {
	f := newFakeGeth()
	rejected := 0
	f.invalid = func(h *types.Header) bool {
		if h.Number.Uint64() == 3 && rejected < 2 {
			rejected++
			return true
		}
		return false
	}
	stop, _ := startFake(t, f, Options{BlockTime: time.Millisecond, MaxDrift: time.Hour})
	eventually(t, func() bool { return f.head() >= 6 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for hash, n := range f.sent {
		if n > 1 {
			t.Errorf("payload %s sent %d times", hash, n)
		}
	}
	if rejected != 2 {
		t.Errorf("rejected %d payloads at height 3, want 2", rejected)
	}
}

// With --max-drift 0 no block may carry a timestamp ahead of the wall clock:
// at most one block per second, however short the block time.
func TestDriftCapPausesProduction(t *testing.T) {
	f := newFakeGeth()
	stop, _ := startFake(t, f, Options{BlockTime: time.Millisecond, MaxDrift: 0})
	eventually(t, func() bool { return f.head() >= 2 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, hash := range f.canonical[1:] {
		if ts := f.headers[hash].Time; int64(ts) > time.Now().Unix() {
			t.Errorf("block timestamp %d is ahead of the wall clock %d", ts, time.Now().Unix())
		}
	}
}

// A geth without the methods the fork schedule needs: the node stops with
// the reason instead of retrying for ever or producing nothing silently.
func TestMissingEngineMethodStopsTheNode(t *testing.T) {
	f := newFakeGeth()
	f.missing = "engine_getPayloadV5"
	_, done := startFake(t, f, Options{BlockTime: time.Millisecond, MaxDrift: time.Hour})
	var err error
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("node kept running without the methods it needs")
	}
	if err == nil || !strings.Contains(err.Error(), "engine_getPayloadV5") {
		t.Fatalf("Run returned %v; want the missing method named", err)
	}
	if f.head() != 0 {
		t.Fatalf("produced %d blocks without the methods", f.head())
	}
}

// buildsDuring counts geth's builds in an observation window of d: for what
// must not happen, or not often.
func buildsDuring(f *fakeGeth, d time.Duration) int {
	before := f.buildCount()
	time.Sleep(d)
	return f.buildCount() - before
}

// geth's miner may take a transaction before its announcement has reached
// the node; the announcement that comes after the block must not count as a
// pending transaction (the node would build for it without end).
func TestLateAnnouncementStartsNoBuild(t *testing.T) {
	f := newFakeGeth()
	stop, _ := startFake(t, f, Options{Mode: ModeOnDemand, BuildWait: time.Millisecond, MaxDrift: time.Hour})
	eventually(t, func() bool { return f.buildCount() >= 1 }) // start-up: one look at a pool of unknown content
	early, late := f.addTx("announced in time", false), f.addTx("announced late", false)
	f.announceTx(t, early)
	eventually(t, func() bool { return !f.inPool(early) && !f.inPool(late) })
	f.announceTx(t, late)
	if n := buildsDuring(f, 300*time.Millisecond); n > 0 {
		t.Errorf("%d builds in 300ms after the late announcement of an included transaction", n)
	}
	next := f.addTx("next", false)
	f.announceTx(t, next)
	eventually(t, func() bool { return !f.inPool(next) })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// A transaction the pool announces but does not offer (priced out, replaced,
// evicted) is parked after two empty builds, since geth's pending block
// does not hold it either: the node does not build for it in a loop, and
// looks again with backoff, so it is included once the pool offers it, with
// no other announcement to wake the node.
func TestUnofferedTransactionIsParkedAndRechecked(t *testing.T) {
	f := newFakeGeth()
	stop, _ := startFake(t, f, Options{Mode: ModeOnDemand, BuildWait: time.Millisecond, MaxDrift: time.Hour})
	eventually(t, func() bool { return f.buildCount() >= 1 })
	h := f.addTx("priced out", true)
	f.announceTx(t, h)
	eventually(t, func() bool { return f.buildCount() >= 3 })
	// Rechecks come after 100, 200, 400 ms...: at most three in a second.
	if n := buildsDuring(f, time.Second); n > 3 {
		t.Errorf("%d builds in 1s for a transaction the pool does not offer; want at most 3 rechecks", n)
	}
	if f.head() != 0 {
		t.Errorf("on-demand with --max-idle 0 made %d empty blocks", f.head())
	}
	f.mu.Lock()
	f.hidden[h] = false
	f.mu.Unlock()
	eventually(t, func() bool { return !f.inPool(h) })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// Under a stream of transactions the leader stops listening to
// announcements (geth pays for each one) and keeps building; when the stream
// ends it listens again and counts what geth would include, so transactions
// that arrived while nobody listened are included too.
func TestBusyLeaderStopsListeningAndMissesNothing(t *testing.T) {
	f := newFakeGeth()
	for i := range 5 {
		f.quiet = append(f.quiet, []byte(fmt.Sprintf("unannounced %d", i)))
	}
	// Longer than a build with nothing counted waits (--build-wait, 1 ms),
	// within reach of the learnt wait after a few misses: a leader that looks at
	// the pool without counting what is in it sees an empty payload.
	f.minWait = 8 * time.Millisecond
	stop, _ := startFake(t, f, Options{Mode: ModeOnDemand, BuildWait: time.Millisecond, MaxDrift: time.Hour})
	eventually(t, func() bool { return f.buildCount() >= 1 })
	var stream []common.Hash
	for i := range busyTxs {
		stream = append(stream, f.addTx(fmt.Sprintf("stream %d", i), false))
	}
	for _, h := range stream {
		f.announceTx(t, h)
	}
	eventually(t, func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.pool) == 0 && !f.afterBusy && f.subs >= 2
	})
	for _, raw := range f.quiet {
		if f.inPool(crypto.Keccak256Hash(raw)) {
			t.Fatalf("%q left in the pool", raw)
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// A geth that came back from a crash holding its blocks but not the state
// to execute them, waiting for a snap sync that no peer serves: the node
// does not wait silently; /status names the cause and the fix.
func TestStatelessGethIsExplained(t *testing.T) {
	defer func(d time.Duration) { stallTimeout = d }(stallTimeout)
	stallTimeout = 300 * time.Millisecond
	f := newFakeGeth()
	app, stop, _ := startFakeApp(t, f, Options{BlockTime: time.Millisecond, MaxDrift: time.Hour})
	eventually(t, func() bool { return f.head() >= 5 })
	f.mu.Lock()
	f.canonical, f.stateless = f.canonical[:1], true // rewound to genesis, blocks kept
	f.mu.Unlock()
	eventually(t, func() bool {
		ready, reason := app.Ready()
		return !ready && strings.Contains(reason, "snap sync") && strings.Contains(reason, "geth removedb") &&
			strings.Contains(reason, "--state.scheme hash")
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if f.head() != 0 {
		t.Fatalf("geth moved to block %d", f.head())
	}
}
