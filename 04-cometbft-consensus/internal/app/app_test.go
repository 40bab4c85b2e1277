package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	abci "github.com/cometbft/cometbft/abci/types"
	"github.com/cometbft/cometbft/crypto/ed25519"
	cmttypes "github.com/cometbft/cometbft/types"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/byzantine"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/engine"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/envelope"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/metrics"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/state"
)

// These tests call the ABCI methods in the order CometBFT does, as
// CometBFT's kvstore example is tested, with an in-memory geth.

var ctx = context.Background()

// node is one validator under test: its app, its geth and where its state lives.
type node struct {
	*App
	geth   *fakeGeth
	m      *metrics.Metrics
	path   string
	blocks fakeBlocks
}

func newNode(t *testing.T, g *fakeGeth, path string, mod func(*Options)) *node {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "app-state.json")
	}
	opts := Options{StatePath: path, Genesis: g.genesis.Hash(), FeeRecipient: common.Address{0xfe}, Retry: time.Millisecond}
	if mod != nil {
		mod(&opts)
	}
	m := metrics.New()
	a, err := New(ctx, g, m, slog.New(slog.NewTextHandler(logWriter{t}, nil)), opts)
	if err != nil {
		t.Fatal(err)
	}
	n := &node{App: a, geth: g, m: m, path: path, blocks: fakeBlocks{}}
	a.SetBlocks(n.blocks)
	if _, err := a.Info(ctx, &abci.RequestInfo{}); err != nil { // CometBFT's handshake starts with Info
		t.Fatal(err)
	}
	return n
}

// logWriter shows the app's log in the test's output (with -v or on failure).
type logWriter struct{ t *testing.T }

func (w logWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}

// restart is the same validator after a crash: a new app on the same state file and geth.
func (n *node) restart(t *testing.T) *node { return newNode(t, n.geth, n.path, nil) }

var t0 = time.Unix(1_700_000_100, 0)

func blockTime(h int64) time.Time { return t0.Add(time.Duration(h) * time.Second) }

// cometHash stands for CometBFT's hash of the block at height h.
func cometHash(h int64) []byte { return crypto.Keccak256([]byte(fmt.Sprint("cometbft block ", h))) }

func (n *node) prepare(t *testing.T, h int64, mempool ...[]byte) []byte {
	t.Helper()
	res, err := n.PrepareProposal(ctx, &abci.RequestPrepareProposal{Height: h, Time: blockTime(h), Txs: mempool, MaxTxBytes: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Txs) != 1 {
		t.Fatalf("height %d: proposal of %d transactions, want the envelope alone", h, len(res.Txs))
	}
	return res.Txs[0]
}

func (n *node) process(t *testing.T, h int64, txs ...[]byte) abci.ResponseProcessProposal_ProposalStatus {
	t.Helper()
	res, err := n.ProcessProposal(ctx, &abci.RequestProcessProposal{Height: h, Time: blockTime(h), Txs: txs})
	if err != nil {
		t.Fatal(err)
	}
	return res.Status
}

func (n *node) finalize(t *testing.T, h int64, tx []byte) *abci.ResponseFinalizeBlock {
	t.Helper()
	res, err := n.FinalizeBlock(ctx, &abci.RequestFinalizeBlock{Height: h, Time: blockTime(h), Txs: [][]byte{tx}, Hash: cometHash(h)})
	if err != nil {
		t.Fatalf("FinalizeBlock %d: %v", h, err)
	}
	if _, err := n.Commit(ctx, &abci.RequestCommit{}); err != nil {
		t.Fatal(err)
	}
	n.blocks[h] = [][]byte{tx}
	return res
}

// decide runs height h: proposer prepares, every node accepts, finalizes and commits.
func decide(t *testing.T, h int64, proposer *node, nodes ...*node) []byte {
	t.Helper()
	tx := proposer.prepare(t, h)
	var first *abci.ResponseFinalizeBlock
	for i, n := range nodes {
		if s := n.process(t, h, tx); s != abci.ResponseProcessProposal_ACCEPT {
			t.Fatalf("height %d: node %d: %v", h, i, s)
		}
	}
	for i, n := range nodes {
		res := n.finalize(t, h, tx)
		if first == nil {
			first = res
		} else if a, b := mustJSON(t, res), mustJSON(t, first); a != b {
			t.Fatalf("height %d: FinalizeBlock differs between nodes:\n%s\n%s", h, a, b)
		}
		if head := n.geth.head(); head.Hash() != common.BytesToHash(res.AppHash) || head.Number.Int64() != h {
			t.Fatalf("height %d: node %d: app hash %x, geth head %d %s", h, i, res.AppHash, head.Number, head.Hash())
		}
	}
	return tx
}

// corrupted returns the envelope tx with its payload made invalid the way
// a Byzantine proposer does it (byzantine.Corrupt).
func corrupted(t *testing.T, tx []byte) []byte {
	t.Helper()
	p, err := envelope.Decode(tx)
	if err != nil {
		t.Fatal(err)
	}
	byzantine.Corrupt(p)
	bad, err := envelope.Encode(p)
	if err != nil {
		t.Fatal(err)
	}
	return bad
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestHeightsInOrder(t *testing.T) {
	a, b := newNode(t, newFakeGeth(), "", nil), newNode(t, newFakeGeth(), "", nil)
	for _, n := range []*node{a, b} {
		res, err := n.InitChain(ctx, &abci.RequestInitChain{InitialHeight: 1})
		if err != nil || common.BytesToHash(res.AppHash) != n.geth.genesis.Hash() {
			t.Fatalf("InitChain: %v %x", err, res.GetAppHash())
		}
	}
	for h := int64(1); h <= 5; h++ {
		proposer := []*node{a, b}[h%2]
		decide(t, h, proposer, a, b)
	}

	// The payload's randomness comes from the parent height's CometBFT hash.
	p, err := envelope.Decode(b.blocks[3][0])
	if err != nil {
		t.Fatal(err)
	}
	if want := common.BytesToHash(cometHash(2)); p.BeaconRoot != want ||
		p.ExecutionPayload.Random != crypto.Keccak256Hash([]byte("prevRandao"), want.Bytes()) {
		t.Fatalf("block 3: beacon root %s, prevRandao %s; want them from CometBFT's hash of height 2", p.BeaconRoot, p.ExecutionPayload.Random)
	}
	if ts := p.ExecutionPayload.Timestamp; ts != uint64(blockTime(3).Unix()) {
		t.Fatalf("block 3: timestamp %d, want the block time %d", ts, blockTime(3).Unix())
	}

	// Restarted, the app reports the committed height and app hash.
	info, err := a.restart(t).Info(ctx, &abci.RequestInfo{})
	if err != nil {
		t.Fatal(err)
	}
	if head := a.geth.head(); info.LastBlockHeight != 5 || common.BytesToHash(info.LastBlockAppHash) != head.Hash() {
		t.Fatalf("Info after restart: height %d, app hash %x; want 5, %s", info.LastBlockHeight, info.LastBlockAppHash, head.Hash())
	}
}

func TestPrepareProposalDropsMempoolTransactions(t *testing.T) {
	a := newNode(t, newFakeGeth(), "", nil)
	tx := a.prepare(t, 1, []byte("a mempool transaction"), []byte{1, 2, 3})
	if _, err := envelope.Decode(tx); err != nil {
		t.Fatalf("the proposal is not an envelope: %v", err)
	}
}

func TestPrepareProposalWithGethDownProposesNothing(t *testing.T) {
	a := newNode(t, newFakeGeth(), "", nil)
	a.geth.down = 1
	res, err := a.PrepareProposal(ctx, &abci.RequestPrepareProposal{Height: 1, Time: blockTime(1), MaxTxBytes: 4 << 20})
	if err != nil || len(res.Txs) != 0 {
		t.Fatalf("want an empty proposal (the others reject it and the round moves on), got %d txs, %v", len(res.Txs), err)
	}
	if n := testutil.ToFloat64(a.m.Errors.WithLabelValues("build")); n != 1 {
		t.Fatalf("build errors %v", n)
	}
}

func TestProcessProposalRejects(t *testing.T) {
	proposer := newNode(t, newFakeGeth(), "", nil)
	good := proposer.prepare(t, 1)
	// changed is the envelope of the good payload changed by f.
	changed := func(f func(p *engine.Payload)) []byte {
		p, err := envelope.Decode(good)
		if err != nil {
			t.Fatal(err)
		}
		f(p)
		tx, err := envelope.Encode(p)
		if err != nil {
			t.Fatal(err)
		}
		return tx
	}
	oversized := make([]byte, envelope.MaxSize+1)
	oversized[0] = envelope.Version

	for _, c := range []struct {
		name   string
		txs    [][]byte
		time   time.Time
		reason string
		down   bool
		asked  bool // geth judged it (newPayload), not the app's own checks
	}{
		{name: "no transaction", reason: reasonMalformed},
		{name: "two envelopes", txs: [][]byte{good, good}, reason: reasonMalformed},
		{name: "empty transaction", txs: [][]byte{{}}, reason: reasonMalformed},
		{name: "garbage", txs: [][]byte{[]byte("\x02not rlp")}, reason: reasonMalformed},
		{name: "other version", txs: [][]byte{append([]byte{1}, good[1:]...)}, reason: reasonMalformed},
		{name: "oversized", txs: [][]byte{oversized}, reason: reasonMalformed},
		{name: "padded", txs: [][]byte{append(append([]byte{}, good...), 0, 0, 0)}, reason: reasonMalformed},
		{name: "wrong number", txs: [][]byte{changed(func(p *engine.Payload) { p.ExecutionPayload.Number = 2 })}, reason: reasonMismatch},
		{name: "wrong parent", txs: [][]byte{changed(func(p *engine.Payload) { p.ExecutionPayload.ParentHash = common.Hash{7} })}, reason: reasonMismatch},
		{name: "timestamp of another block time", txs: [][]byte{good}, time: blockTime(9), reason: reasonMismatch},
		{name: "prevRandao chosen by the proposer", txs: [][]byte{changed(func(p *engine.Payload) { p.ExecutionPayload.Random = common.Hash{7} })}, reason: reasonMismatch},
		{name: "beacon root chosen by the proposer", txs: [][]byte{changed(func(p *engine.Payload) { p.BeaconRoot = common.Hash{7} })}, reason: reasonMismatch},
		{name: "withdrawals", txs: [][]byte{changed(func(p *engine.Payload) {
			p.ExecutionPayload.Withdrawals = []*types.Withdrawal{{Address: common.Address{1}, Amount: 1}}
		})}, reason: reasonMismatch},
		{name: "hash that is not the block's", txs: [][]byte{changed(func(p *engine.Payload) { p.ExecutionPayload.BlockHash = common.Hash{7} })}, reason: reasonInvalid},
		{name: "state root execution does not give", txs: [][]byte{corrupted(t, good)}, reason: reasonInvalid},
		{name: "execution request geth refuses (-32602)", txs: [][]byte{changed(func(p *engine.Payload) { p.Requests = []hexutil.Bytes{{0}} })}, reason: reasonMalformed, asked: true},
		{name: "geth down", txs: [][]byte{good}, down: true, reason: reasonUnavailable},
	} {
		t.Run(c.name, func(t *testing.T) {
			v := newNode(t, newFakeGeth(), "", nil)
			if c.down {
				v.geth.down = 1
			}
			bt := blockTime(1)
			if !c.time.IsZero() {
				bt = c.time
			}
			wasReady, wasWhy := v.Ready()
			defer func() {
				if asked := slices.Contains(v.geth.log(), "newPayload 1"); c.asked && !asked {
					t.Errorf("rejected before geth was asked: %q", v.geth.log())
				}
			}()
			res, err := v.ProcessProposal(ctx, &abci.RequestProcessProposal{Height: 1, Time: bt, Txs: c.txs})
			if err != nil {
				t.Fatal(err)
			}
			if res.Status != abci.ResponseProcessProposal_REJECT {
				t.Fatalf("status %v, want REJECT", res.Status)
			}
			if n := testutil.ToFloat64(v.m.Verdicts.WithLabelValues("reject", c.reason)); n != 1 {
				t.Fatalf("rejections for %q: %v", c.reason, n)
			}
			if head := v.geth.head(); head.Number.Sign() != 0 {
				t.Fatalf("a rejected proposal moved geth's head to %d", head.Number)
			}
			ok, reason := v.Ready()
			if c.down && ok {
				t.Fatalf("ready with geth down (%q)", reason)
			}
			if !c.down && (ok != wasReady || reason != wasWhy) {
				t.Fatalf("a bad proposal changed this node's readiness: %v %q, was %v %q", ok, reason, wasReady, wasWhy)
			}
		})
	}
	// The untouched proposal passes: each case above fails for its own reason.
	if s := newNode(t, newFakeGeth(), "", nil).process(t, 1, good); s != abci.ResponseProcessProposal_ACCEPT {
		t.Fatalf("the good proposal: %v", s)
	}
}

// A validator whose geth lost its blocks (wiped) replays them from the
// block store when a proposal needs them, then judges it; if geth still
// cannot (it syncs from its peers on its own), the proposal is rejected.
// FinalizeBlock recovers the same way when the others decided without it.
func TestSyncingGethIsReplayedFromBlockStore(t *testing.T) {
	a, b := newNode(t, newFakeGeth(), "", nil), newNode(t, newFakeGeth(), "", nil)
	for h := int64(1); h <= 3; h++ {
		decide(t, h, a, a, b)
	}
	b.geth.wipe()
	tx := a.prepare(t, 4)
	before := len(b.geth.log())
	if s := b.process(t, 4, tx); s != abci.ResponseProcessProposal_ACCEPT {
		t.Fatalf("status %v, want ACCEPT once the lost blocks are replayed", s)
	}
	if got := slices.DeleteFunc(b.geth.log()[before:], func(c string) bool { return strings.HasPrefix(c, "header") }); !slices.Equal(got,
		[]string{"newPayload 4", "newPayload 1", "fcu 1", "newPayload 2", "fcu 2", "newPayload 3", "fcu 3", "newPayload 4"}) {
		t.Fatalf("engine calls %q", got)
	}
	a.finalize(t, 4, tx)
	b.finalize(t, 4, tx)

	// geth syncing on its own: still SYNCING after the replay → REJECT.
	b.geth.wipe()
	b.geth.syncing = 2
	tx = a.prepare(t, 5)
	if s := b.process(t, 5, tx); s != abci.ResponseProcessProposal_REJECT {
		t.Fatalf("status %v, want REJECT from a validator whose geth cannot judge", s)
	}
	if n := testutil.ToFloat64(b.m.Verdicts.WithLabelValues("reject", reasonSyncing)); n != 1 {
		t.Fatalf("syncing rejections %v", n)
	}
	// The others decide it; FinalizeBlock replays what geth still lacks.
	a.finalize(t, 5, tx)
	res := b.finalize(t, 5, tx)
	if common.BytesToHash(res.AppHash) != a.geth.head().Hash() || b.geth.head().Hash() != a.geth.head().Hash() {
		t.Fatal("the replayed geth does not hold the decided block")
	}
}

// A geth killed before it flushed everything lost block 4 and the state
// of blocks 2 and 3: it answers SYNCING for block 5 (no parent), VALID at
// once for 2 and 3 (it knows them) and ACCEPTED for 4 until forkchoice has
// pointed at 3. The app replays from its head, one forkchoiceUpdated per
// block, then applies the decided block.
func TestKilledGethWithoutStateIsReplayed(t *testing.T) {
	a, b := newNode(t, newFakeGeth(), "", nil), newNode(t, newFakeGeth(), "", nil)
	for h := int64(1); h <= 4; h++ {
		decide(t, h, a, a, b)
	}
	b.geth.crash(1, 3)
	tx := a.prepare(t, 5)
	a.finalize(t, 5, tx) // decided without b
	before := len(b.geth.log())
	b.finalize(t, 5, tx)
	if got := slices.DeleteFunc(b.geth.log()[before:], func(c string) bool { return strings.HasPrefix(c, "header") }); !slices.Equal(got,
		[]string{"newPayload 5", "newPayload 2", "fcu 2", "newPayload 3", "fcu 3", "newPayload 4", "fcu 4", "newPayload 5", "fcu 5"}) {
		t.Fatalf("engine calls %q", got)
	}
	if b.geth.head().Hash() != a.geth.head().Hash() {
		t.Fatal("geth does not hold the decided block")
	}
}

// The proposer's geth lost blocks: PrepareProposal replays them before it
// builds, or a one-validator chain would never move again.
func TestProposerReplaysLostBlocks(t *testing.T) {
	a := newNode(t, newFakeGeth(), "", nil)
	for h := int64(1); h <= 4; h++ {
		decide(t, h, a, a)
	}
	a.geth.crash(1, 3)
	tx := a.prepare(t, 5)
	p, err := envelope.Decode(tx)
	if err != nil || p.ExecutionPayload.Number != 5 {
		t.Fatalf("proposal: %v", err)
	}
	if s := a.process(t, 5, tx); s != abci.ResponseProcessProposal_ACCEPT {
		t.Fatal(s)
	}
	a.finalize(t, 5, tx)
	if n := testutil.ToFloat64(a.m.Replayed); n != 3 {
		t.Fatalf("replayed %v blocks, want 3 (2, 3, 4)", n)
	}
}

// A geth that holds the parent yet answers SYNCING is syncing from its
// peers on its own: FinalizeBlock waits for it instead of failing (which
// would stop CometBFT).
func TestFinalizeBlockWaitsForAGethSyncingOnItsOwn(t *testing.T) {
	a, b := newNode(t, newFakeGeth(), "", nil), newNode(t, newFakeGeth(), "", nil)
	decide(t, 1, a, a, b)
	tx := a.prepare(t, 2)
	a.finalize(t, 2, tx)
	b.geth.syncing = 3
	b.finalize(t, 2, tx)
	if b.geth.head().Hash() != a.geth.head().Hash() {
		t.Fatal("geth does not hold the decided block")
	}
	if n := slices.Index(b.geth.log(), "fcu 2"); n < 0 || strings.Count(strings.Join(b.geth.log(), ","), "newPayload 2") != 4 {
		t.Fatalf("engine calls %q: want newPayload 2 four times, then fcu 2", b.geth.log())
	}
}

// A geth that holds the parent yet answers SYNCING and whose head does not
// move waits for a snap sync no peer serves: the app keeps waiting, but
// its readiness names the cause and the fix; once geth takes the block,
// the height is applied.
func TestStuckGethIsExplained(t *testing.T) {
	defer func(d time.Duration) { stallTimeout = d }(stallTimeout)
	stallTimeout = 50 * time.Millisecond
	a, b := newNode(t, newFakeGeth(), "", nil), newNode(t, newFakeGeth(), "", nil)
	decide(t, 1, a, a, b)
	tx := a.prepare(t, 2)
	a.finalize(t, 2, tx)
	b.geth.mu.Lock()
	b.geth.syncing = 1 << 30
	b.geth.mu.Unlock()
	done := make(chan error, 1)
	go func() {
		_, err := b.FinalizeBlock(ctx, &abci.RequestFinalizeBlock{Height: 2, Time: blockTime(2), Txs: [][]byte{tx}, Hash: cometHash(2)})
		done <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ready, reason := b.Ready()
		if !ready && strings.Contains(reason, "snap sync") && strings.Contains(reason, "geth removedb") && strings.Contains(reason, "--state.scheme hash") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("readiness %v %q names no snap sync, cause or fix", ready, reason)
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.geth.mu.Lock()
	b.geth.syncing = 0
	b.geth.mu.Unlock()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if b.geth.head().Hash() != a.geth.head().Hash() {
		t.Fatal("geth does not hold the decided block")
	}
}

// A geth killed on its default storage before it froze its blocks comes
// back at genesis holding them, in snap sync: VALID to a forkchoice it
// ignores, SYNCING to new payloads. The app names it (readiness: the cause
// and the fix) rather than replaying the same blocks at every retry; given
// a new datadir (the fix), geth is replayed and the replay recorded.
func TestSnapSyncingGethIsNamed(t *testing.T) {
	a := newNode(t, newFakeGeth(), "", nil)
	for h := int64(1); h <= 4; h++ {
		decide(t, h, a, a)
	}
	a.geth.crash(0, 4)
	a.geth.mu.Lock()
	a.geth.snap = true
	a.geth.mu.Unlock()
	named := func(what string) {
		t.Helper()
		if ready, reason := a.Ready(); ready || !strings.Contains(reason, "snap sync") || !strings.Contains(reason, "geth init") {
			t.Fatalf("%s: readiness %v %q names no snap sync and fix", what, ready, reason)
		}
	}
	res, err := a.PrepareProposal(ctx, &abci.RequestPrepareProposal{Height: 5, Time: blockTime(5), MaxTxBytes: 4 << 20})
	if err != nil || len(res.Txs) != 0 {
		t.Fatalf("proposal from a geth in snap sync: %v, %d transactions", err, len(res.Txs))
	}
	named("PrepareProposal")
	for range 2 {
		if err := a.replayMissing(ctx, 5); !errors.Is(err, errGethSyncing) || !strings.Contains(err.Error(), "snap sync") {
			t.Fatalf("replay into a geth in snap sync: %v", err)
		}
	}
	if n := testutil.ToFloat64(a.m.Replayed); n != 4 {
		t.Fatalf("replayed %v blocks; want 4, once: the second replay would not move geth either", n)
	}
	if a.LastReplay() != nil {
		t.Fatalf("a replay geth did not take is recorded: %+v", a.LastReplay())
	}
	a.geth.wipe()
	a.geth.mu.Lock()
	a.geth.snap = false
	a.geth.mu.Unlock()
	if err := a.replayMissing(ctx, 5); err != nil {
		t.Fatal(err)
	}
	if r := a.LastReplay(); r == nil || r.From != 1 || r.To != 4 || a.geth.head().Number.Uint64() != 4 {
		t.Fatalf("replay into the new datadir: %+v, geth at %d", r, a.geth.head().Number)
	}
}

// A geth behind the app (it crashed and rewound, or lost its datadir)
// makes Info report geth's height: CometBFT then replays the rest.
func TestInfoReportsGethsHeight(t *testing.T) {
	a := newNode(t, newFakeGeth(), "", nil)
	for h := int64(1); h <= 4; h++ {
		decide(t, h, a, a)
	}
	info := func() (int64, common.Hash) {
		res, err := a.restart(t).Info(ctx, &abci.RequestInfo{})
		if err != nil {
			t.Fatal(err)
		}
		return res.LastBlockHeight, common.BytesToHash(res.LastBlockAppHash)
	}
	if h, hash := info(); h != 4 || hash != a.geth.head().Hash() {
		t.Fatalf("in step: %d %s", h, hash)
	}
	a.geth.rewind(2)
	if h, hash := info(); h != 2 || hash != a.geth.head().Hash() {
		t.Fatalf("geth rewound to 2: Info says %d %s", h, hash)
	}
	a.geth.wipe()
	if h, hash := info(); h != 0 || hash != a.geth.genesis.Hash() {
		t.Fatalf("geth wiped: Info says %d %s, want 0 and the genesis hash", h, hash)
	}

	// The handshake's replay: FinalizeBlock and Commit of every stored height.
	r := a.restart(t)
	if _, err := r.Info(ctx, &abci.RequestInfo{}); err != nil {
		t.Fatal(err)
	}
	for h := int64(1); h <= 4; h++ {
		r.finalize(t, h, a.blocks[h][0])
	}
	if n := testutil.ToFloat64(r.m.Replayed); n != 4 {
		t.Fatalf("replayed %v", n)
	}
}

// Once consensus runs, Info (CometBFT's /abci_info) reports the committed
// state even when geth has lost blocks: lowering it then would make the
// next FinalizeBlock refuse its height and stop the node. The app replays
// what geth lost itself.
func TestInfoAfterTheHandshakeReportsTheCommittedState(t *testing.T) {
	a := newNode(t, newFakeGeth(), "", nil)
	for h := int64(1); h <= 3; h++ {
		decide(t, h, a, a)
	}
	committed := a.geth.head().Hash()
	a.geth.rewind(1)
	res, err := a.Info(ctx, &abci.RequestInfo{})
	if err != nil {
		t.Fatal(err)
	}
	if res.LastBlockHeight != 3 || common.BytesToHash(res.LastBlockAppHash) != committed {
		t.Fatalf("Info while running: height %d, app hash %x; want 3, %s", res.LastBlockHeight, res.LastBlockAppHash, committed)
	}
	decide(t, 4, a, a) // blocks 2 and 3 replayed from the block store
}

// Commit returns at once, whatever timeout_commit (CometBFT waits it out,
// holding no lock), and tells the payload started for the next height
// that its proposal is due timeout_commit after the height was decided.
func TestCommitDoesNotWait(t *testing.T) {
	const timeoutCommit = time.Hour // a Commit that waited for it would never return
	pub := ed25519.GenPrivKey().PubKey()
	proposers := NewProposers(genesisSets([]cmttypes.GenesisValidator{{PubKey: pub, Power: 1}}))
	a := newNode(t, newFakeGeth(), "", func(o *Options) {
		o.TimeoutCommit, o.Proposers, o.Address, o.Optimistic = timeoutCommit, proposers, pub.Address(), true
	})
	tx := a.prepare(t, 1)
	if s := a.process(t, 1, tx); s != abci.ResponseProcessProposal_ACCEPT {
		t.Fatal(s)
	}
	decided := time.Now()
	if _, err := a.FinalizeBlock(ctx, &abci.RequestFinalizeBlock{Height: 1, Time: blockTime(1), Txs: [][]byte{tx}, Hash: cometHash(1)}); err != nil {
		t.Fatal(err)
	}
	committed := make(chan error, 1)
	go func() {
		_, err := a.Commit(ctx, &abci.RequestCommit{})
		committed <- err
	}()
	select {
	case err := <-committed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Commit still running after 10 s: it waits for timeout_commit (1 h)")
	}
	a.mu.Lock()
	st, decidedAt := a.next, a.decidedAt
	var expected time.Time
	if st != nil {
		expected = st.expected
	}
	late := a.nextDue(decidedAt.Add(2 * timeoutCommit))
	a.mu.Unlock()
	if st == nil {
		t.Fatal("no payload started for height 2")
	}
	if decidedAt.Before(decided) || !expected.Equal(decidedAt.Add(timeoutCommit)) {
		t.Fatalf("Commit said the next proposal is due %s, want timeout_commit after FinalizeBlock began (%s)", expected, decidedAt)
	}
	if want := decidedAt.Add(2 * timeoutCommit); !late.Equal(want) {
		t.Fatalf("seen from past timeout_commit, the next proposal is due %s, want at once (%s)", late, want)
	}
	st.ask(0) // PrepareProposal asks: the fetch waiting for the hour ends
	<-st.fetched
}

// A node that decides no height for StallAfter says so on /readyz, and
// is ready again at the next height.
func TestStalledNodeIsNotReady(t *testing.T) {
	a := newNode(t, newFakeGeth(), "", func(o *Options) { o.StallAfter = 300 * time.Millisecond })
	decide(t, 1, a, a)
	if ok, reason := a.Ready(); !ok {
		t.Fatalf("not ready after a height: %s", reason)
	}
	eventually(t, func() bool {
		ok, reason := a.Ready()
		return !ok && strings.Contains(reason, "no height decided")
	})
	decide(t, 2, a, a)
	if ok, reason := a.Ready(); !ok {
		t.Fatalf("not ready after the chain moved again: %s", reason)
	}
}

// The drift metric is the head's timestamp less the wall clock.
func TestDriftIsExposed(t *testing.T) {
	a := newNode(t, newFakeGeth(), "", nil)
	var logged bytes.Buffer
	a.log = slog.New(slog.NewTextHandler(&logged, nil))
	ahead := time.Now().Add(30 * time.Second)
	a.observeDrift(state.Head{Number: 9, Timestamp: uint64(ahead.Unix())}, true)
	if d := testutil.ToFloat64(a.m.Drift); d < 28 || d > 31 {
		t.Fatalf("drift %v s for a head 30 s ahead", d)
	}
	if !strings.Contains(logged.String(), "run ahead of the wall clock") {
		t.Fatalf("no log line for a head 30 s ahead: %q", logged.String())
	}
	a.observeDrift(state.Head{Number: 10, Timestamp: uint64(time.Now().Add(-time.Minute).Unix())}, false)
	if d := testutil.ToFloat64(a.m.Drift); d > -59 {
		t.Fatalf("drift %v s for a head a minute old", d)
	}
}

func TestInitChainChecksGethsGenesis(t *testing.T) {
	a := newNode(t, newFakeGeth(), "", func(o *Options) { o.Genesis = common.Hash{9} })
	if _, err := a.InitChain(ctx, &abci.RequestInitChain{InitialHeight: 1}); err == nil || !strings.Contains(err.Error(), "genesis") {
		t.Fatalf("geth on another genesis: %v", err)
	}
	b := newNode(t, newFakeGeth(), "", nil)
	if _, err := b.InitChain(ctx, &abci.RequestInitChain{InitialHeight: 7}); err == nil || !strings.Contains(err.Error(), "initial_height 7") {
		t.Fatalf("initial height 7: %v", err)
	}
}

// A CometBFT genesis whose blocks cannot carry a full execution block is
// refused, naming the parameter and the size to set; CometBFT's defaults
// (21 MB, or -1 for 100 MB) and the size asked for are taken.
func TestInitChainChecksBlockMaxBytes(t *testing.T) {
	vals := make([]abci.ValidatorUpdate, 4)
	need := envelope.BlockMaxBytes(4, 1<<20)
	for _, c := range []struct {
		maxBytes int64
		ok       bool
	}{{4 << 20, false}, {need - 1, false}, {need, true}, {22020096, true}, {-1, true}} {
		params := cmttypes.DefaultConsensusParams()
		params.Block.MaxBytes, params.Evidence.MaxBytes = c.maxBytes, 1<<20
		pp := params.ToProto()
		a := newNode(t, newFakeGeth(), "", nil)
		_, err := a.InitChain(ctx, &abci.RequestInitChain{InitialHeight: 1, ConsensusParams: &pp, Validators: vals})
		if ok := err == nil; ok != c.ok || (err != nil && !strings.Contains(err.Error(), "block.max_bytes to at least that")) {
			t.Errorf("block.max_bytes %d: %v, want accepted %v", c.maxBytes, err, c.ok)
		}
	}
}

func TestCheckTxRejectsEverything(t *testing.T) {
	a := newNode(t, newFakeGeth(), "", nil)
	env := a.prepare(t, 1)
	for _, tx := range [][]byte{nil, []byte("garbage"), env, make([]byte, 1<<20)} {
		res, err := a.CheckTx(ctx, &abci.RequestCheckTx{Tx: tx, Type: abci.CheckTxType_New})
		if err != nil || res.Code != CodeRejected || !strings.Contains(res.Log, "eth_sendRawTransaction") {
			t.Fatalf("CheckTx of %d bytes: code %d %q %v", len(tx), res.GetCode(), res.GetLog(), err)
		}
	}
}

// FinalizeBlock cannot refuse a decided block: it waits for a geth that
// does not answer, and stops on one that finds the block invalid.
func TestFinalizeBlockWaitsForGethAndRefusesInvalid(t *testing.T) {
	a, b := newNode(t, newFakeGeth(), "", nil), newNode(t, newFakeGeth(), "", nil)
	tx := a.prepare(t, 1)
	a.finalize(t, 1, tx)
	b.geth.down = 5
	b.finalize(t, 1, tx)
	if ok, _ := b.Ready(); !ok {
		t.Fatal("not ready after geth came back")
	}

	c := newNode(t, newFakeGeth(), "", nil)
	bad := corrupted(t, tx)
	_, err := c.FinalizeBlock(ctx, &abci.RequestFinalizeBlock{Height: 1, Time: blockTime(1), Txs: [][]byte{bad}, Hash: cometHash(1)})
	if err == nil || !strings.Contains(err.Error(), "invalid") {
		t.Fatalf("decided block geth finds INVALID: %v", err)
	}
	if head := c.geth.head(); head.Number.Sign() != 0 {
		t.Fatalf("geth moved to %d", head.Number)
	}
}

// The next proposer has geth start its payload once the height is final
// (before the proposal is due: at once here, without a block time) and,
// as round 0's proposer, fetches it ahead; PrepareProposal proposes it
// without asking geth for anything.
func TestOptimisticBuilding(t *testing.T) {
	pub := ed25519.GenPrivKey().PubKey()
	proposers := NewProposers(genesisSets([]cmttypes.GenesisValidator{{PubKey: pub, Power: 1}}))
	a := newNode(t, newFakeGeth(), "", func(o *Options) { o.Proposers, o.Address, o.Optimistic = proposers, pub.Address(), true })
	tx := a.prepare(t, 1) // nothing started before height 1: built now
	if s := a.process(t, 1, tx); s != abci.ResponseProcessProposal_ACCEPT {
		t.Fatal(s)
	}
	before := len(a.geth.log())
	a.finalize(t, 1, tx)
	if a.next == nil {
		t.Fatal("FinalizeBlock of height 1 prepared no payload for height 2")
	}
	ts := a.next.timestamp // predicted from the wall clock
	eventually(t, func() bool { return slices.Contains(a.geth.log()[before:], "getPayload 2") })
	if got := a.geth.log()[before:]; !slices.Contains(got, "build 2") || slices.Index(got, "build 2") > slices.Index(got, "getPayload 2") {
		t.Fatalf("engine calls %q: getPayload 2 before build 2", got)
	}

	before = len(a.geth.log())
	res, err := a.PrepareProposal(ctx, &abci.RequestPrepareProposal{Height: 2, Time: time.Unix(int64(ts), 0), MaxTxBytes: 4 << 20})
	if err != nil || len(res.Txs) != 1 {
		t.Fatal(res, err)
	}
	if got := a.geth.log()[before:]; len(got) != 0 {
		t.Fatalf("PrepareProposal's engine calls %q, want none: the payload was fetched ahead", got)
	}
	if n := testutil.ToFloat64(a.m.Optimistic.WithLabelValues("used")); n != 1 {
		t.Fatalf("used %v", n)
	}

	// A block time in another second than predicted: built again.
	pres, err := a.ProcessProposal(ctx, &abci.RequestProcessProposal{Height: 2, Time: time.Unix(int64(ts), 0), Txs: res.Txs})
	if err != nil || pres.Status != abci.ResponseProcessProposal_ACCEPT {
		t.Fatal(pres, err)
	}
	a.finalize(t, 2, res.Txs[0])
	res, err = a.PrepareProposal(ctx, &abci.RequestPrepareProposal{Height: 3, Time: time.Unix(int64(a.next.timestamp)+5, 0), MaxTxBytes: 4 << 20})
	if err != nil || len(res.Txs) != 1 {
		t.Fatal(res, err)
	}
	if n := testutil.ToFloat64(a.m.Optimistic.WithLabelValues("stale")); n != 1 {
		t.Fatalf("stale %v", n)
	}
	// The stale payload was fetched ahead, which stopped geth's work on
	// it, and the fresh one is fetched now: getPayload of block 3 twice.
	eventually(t, func() bool {
		n := 0
		for _, c := range a.geth.log() {
			if c == "getPayload 3" {
				n++
			}
		}
		return n == 2
	})
	p, err := envelope.Decode(res.Txs[0])
	if err != nil || p.ExecutionPayload.Number != 3 {
		t.Fatal(err)
	}
}

func TestProposersFollowCometBFT(t *testing.T) {
	var gen []cmttypes.GenesisValidator
	var vals []*cmttypes.Validator
	for i, power := range []int64{1, 1, 2, 5} {
		pub := ed25519.GenPrivKey().PubKey()
		gen = append(gen, cmttypes.GenesisValidator{PubKey: pub, Power: power, Name: fmt.Sprint(i)})
		vals = append(vals, cmttypes.NewValidator(pub, power))
	}
	p := NewProposers(genesisSets(gen))
	// CometBFT's state at height 1 holds NewValidatorSet(genesis); each
	// saved state advances it once (state.updateState).
	set := cmttypes.NewValidatorSet(vals)
	count := map[string]int{}
	var byHeight [][]byte
	for h := int64(1); h <= 90; h++ {
		want := set.GetProposer().Address
		byHeight = append(byHeight, want)
		for r := int32(1); r <= 3; r++ { // a round on a copy, as consensus.State.enterNewRound does
			if got, want := p.InRound(h, r), set.CopyIncrementProposerPriority(r).GetProposer().Address; string(got) != string(want) {
				t.Fatalf("height %d round %d: %X, CometBFT's set gives %X", h, r, got, want)
			}
		}
		if got := p.At(h); string(got) != string(want) {
			t.Fatalf("height %d: %X, CometBFT's set gives %X", h, got, want)
		}
		count[string(want)]++
		set = set.CopyIncrementProposerPriority(1)
	}
	if got := p.At(3); string(got) != string(byHeight[2]) {
		t.Fatalf("height 3 asked again: %X, want %X", got, byHeight[2])
	}
	if len(count) != 4 || count[string(vals[3].Address)] != 50 {
		t.Fatalf("turns by address %v: want every validator, in proportion to power", count)
	}
}

// eventually polls cond every millisecond for up to 5 s.
func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
	}
}

// A payload that comes back empty while geth's pending block holds
// transactions makes the next proposals wait longer, doubling up to
// maxExtraWait; payloads with transactions bring the wait down again.
func TestEmptyPayloadsLengthenTheWait(t *testing.T) {
	a := newNode(t, newFakeGeth(), "", nil)
	a.geth.pooled = 3
	tx := a.prepare(t, 1)
	if a.extraWait != firstExtraWait {
		t.Fatalf("extra wait %s after an empty payload with 3 transactions pending, want %s", a.extraWait, firstExtraWait)
	}
	if n := testutil.ToFloat64(a.m.Errors.WithLabelValues("empty_payload")); n != 1 {
		t.Fatalf("empty payloads counted: %v", n)
	}
	if s := a.process(t, 1, tx); s != abci.ResponseProcessProposal_ACCEPT {
		t.Fatal(s)
	}
	a.finalize(t, 1, tx)
	start := time.Now()
	a.prepare(t, 2)
	if d := time.Since(start); d < firstExtraWait {
		t.Errorf("the next proposal took %s, less than the extra wait %s", d, firstExtraWait)
	}
	if a.extraWait != 2*firstExtraWait {
		t.Errorf("extra wait %s after a second empty payload, want %s", a.extraWait, 2*firstExtraWait)
	}
	for range 10 {
		a.learnWait(true)
	}
	if a.extraWait != maxExtraWait {
		t.Errorf("extra wait %s after many empty payloads, want the bound %s", a.extraWait, maxExtraWait)
	}
	a.learnWait(false)
	if a.extraWait != maxExtraWait*3/4 {
		t.Errorf("extra wait %s after a full payload, want %s", a.extraWait, maxExtraWait*3/4)
	}
}

// The proposer accepts its own payload without asking geth (CometBFT
// gossips the proposal only after the proposer's ProcessProposal) and has
// geth execute it in FinalizeBlock; another validator executes it in
// ProcessProposal. Neither counts it as a replay.
func TestProposerAcceptsItsOwnPayload(t *testing.T) {
	a, b := newNode(t, newFakeGeth(), "", nil), newNode(t, newFakeGeth(), "", nil)
	tx := a.prepare(t, 1)
	// Its payload re-sent by another proposer with other execution
	// requests and the same block hash is not its own: geth judges it.
	p, err := envelope.Decode(tx)
	if err != nil {
		t.Fatal(err)
	}
	p.Requests = []hexutil.Bytes{{1, 2}}
	other, err := envelope.Encode(p)
	if err != nil {
		t.Fatal(err)
	}
	if s := a.process(t, 1, other); s != abci.ResponseProcessProposal_REJECT {
		t.Fatalf("its payload with other execution requests: %v", s)
	}
	before := len(a.geth.log())
	if s := a.process(t, 1, tx); s != abci.ResponseProcessProposal_ACCEPT {
		t.Fatal(s)
	}
	if got := a.geth.log()[before:]; len(got) != 0 {
		t.Fatalf("the proposer's ProcessProposal called geth: %q", got)
	}
	if s := b.process(t, 1, tx); s != abci.ResponseProcessProposal_ACCEPT || !slices.Contains(b.geth.log(), "newPayload 1") {
		t.Fatalf("another validator: %v, engine calls %q", s, b.geth.log())
	}
	a.finalize(t, 1, tx)
	b.finalize(t, 1, tx)
	if got := a.geth.log()[before:]; !slices.Equal(got, []string{"newPayload 1", "fcu 1"}) {
		t.Fatalf("the proposer's FinalizeBlock: engine calls %q, want newPayload then forkchoiceUpdated", got)
	}
	if a.geth.head().Hash() != b.geth.head().Hash() {
		t.Fatal("the two geths disagree")
	}
	for _, n := range []*node{a, b} {
		if r := testutil.ToFloat64(n.m.Replayed); r != 0 {
			t.Fatalf("replayed %v", r)
		}
	}
}

// PrepareProposal keeps to ProposeBudget: a geth slow to build its pending
// block (2 s here) does not hold the proposal, which asks for the payload
// once the budget is spent and counts it as overdue.
func TestPrepareProposalKeepsItsBudget(t *testing.T) {
	g := newFakeGeth()
	g.pooled, g.slowPending = 3, 2*time.Second
	a := newNode(t, g, "", func(o *Options) { o.BuildWait, o.ProposeBudget = 10*time.Millisecond, 100*time.Millisecond })
	start := time.Now()
	a.prepare(t, 1)
	if d := time.Since(start); d >= g.slowPending {
		t.Fatalf("PrepareProposal took %s, as long as geth's pending block", d)
	}
	if n := testutil.ToFloat64(a.m.Errors.WithLabelValues("overdue_payload")); n != 1 {
		t.Fatalf("overdue payloads counted: %v", n)
	}
	if got := g.log(); !slices.Contains(got, "getPayload 1") {
		t.Fatalf("engine calls %q: no getPayload", got)
	}
}

// Round 1's proposer builds its payload early only when round 0 looks
// likely to fail (the last height took more than round 0, or round 0's
// proposer missed its last turn), and its budget is round 1's.
func TestRoundOneBuildsEarlyAfterALateRound(t *testing.T) {
	var gen []cmttypes.GenesisValidator
	for range 2 {
		gen = append(gen, cmttypes.GenesisValidator{PubKey: ed25519.GenPrivKey().PubKey(), Power: 1})
	}
	proposers := NewProposers(genesisSets(gen))
	me := gen[1].PubKey.Address()
	a := newNode(t, newFakeGeth(), "", func(o *Options) {
		o.Proposers, o.Address, o.Optimistic = proposers, me, true
		o.ProposeBudget, o.ProposeBudgetDelta = 300*time.Millisecond, 1500*time.Millisecond
	})
	finalize := func(h int64, proposer []byte) {
		t.Helper()
		tx := a.prepare(t, h)
		if _, err := a.FinalizeBlock(ctx, &abci.RequestFinalizeBlock{Height: h, Time: blockTime(h), Txs: [][]byte{tx}, Hash: cometHash(h), ProposerAddress: proposer}); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Commit(ctx, &abci.RequestCommit{}); err != nil {
			t.Fatal(err)
		}
		a.blocks[h] = [][]byte{tx}
	}
	var checked, late bool
	for h := int64(1); h <= 8; h++ {
		roundOne := !bytes.Equal(proposers.At(h+1), me) // two validators: round 1's proposer is the other
		if want := 300*time.Millisecond + map[bool]time.Duration{true: 1500 * time.Millisecond}[roundOne]; a.budget(h+1) != want {
			t.Fatalf("height %d: budget %s, want %s", h+1, a.budget(h+1), want)
		}
		decidedBy := proposers.At(h)
		if roundOne && checked && !late {
			decidedBy, late = proposers.InRound(h, 1), true // round 0 of h failed
		}
		finalize(h, decidedBy)
		a.mu.Lock()
		started := a.next != nil
		a.mu.Unlock()
		switch {
		case !roundOne && !started:
			t.Fatalf("height %d: round 0's proposer did not build early", h+1)
		case roundOne && late && !started:
			t.Fatalf("height %d: round 1's proposer did not build early after height %d took round 1", h+1, h)
		case roundOne && !late && started:
			t.Fatalf("height %d: round 1's proposer built early though round 0 of height %d succeeded", h+1, h)
		case roundOne && late:
			return
		case roundOne:
			checked = true
		}
	}
	t.Fatal("never saw round 1's proposer after a late height")
}

// A block that took geth long to execute makes the next payload start
// earlier: need() follows newPayload's duration.
func TestSlowBlocksStartTheBuildEarlier(t *testing.T) {
	g := newFakeGeth()
	a := newNode(t, g, "", func(o *Options) { o.BuildWait = 10 * time.Millisecond })
	decide(t, 1, a, a)
	if n := a.need(); n > 100*time.Millisecond {
		t.Fatalf("need %s after a quick block", n)
	}
	g.mu.Lock()
	g.slowExec = 400 * time.Millisecond
	g.mu.Unlock()
	tx := a.prepare(t, 2) // its own: executed in FinalizeBlock
	if s := a.process(t, 2, tx); s != abci.ResponseProcessProposal_ACCEPT {
		t.Fatal(s)
	}
	a.finalize(t, 2, tx)
	if n, least := a.need(), 10*time.Millisecond+400*time.Millisecond*5/4; n < least {
		t.Fatalf("need %s after a block geth took 400 ms to execute, want at least %s", n, least)
	}
}
