package app

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum"
	beacon "github.com/ethereum/go-ethereum/beacon/engine"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"

	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/engine"
)

// fakeGeth is an execution client in memory, for the ABCI method tests: it
// builds payloads whose hashes are computed as geth computes them, checks
// hashes, parents and a state root (keccak of the parent's) in newPayload,
// and answers SYNCING when it lacks a parent. The e2e tests run real geth.
type fakeGeth struct {
	mu          sync.Mutex
	genesis     *types.Header
	blocks      map[common.Hash]*types.Header
	canon       []common.Hash // canonical hashes by number
	payloads    map[beacon.PayloadID]*engine.Payload
	ids         uint64
	stateless   map[common.Hash]bool   // blocks kept through a crash without their state
	down        int                    // calls to fail as unreachable
	syncing     int                    // newPayload calls to answer SYNCING, as a geth syncing from its peers
	snap        bool                   // in snap sync after a crash: VALID to a forkchoice to a held block, ignored; SYNCING to new payloads
	calls       []string               // "fcu 3", "build 4", "newPayload 4", "getPayload 4"
	pooled      int                    // transactions the pending block shows; the payloads carry none
	slowPending time.Duration          // how long building the pending block takes
	slowExec    time.Duration          // how long newPayload takes
	logs        map[uint64][]types.Log // the registry's logs by block number
	beforeLogs  func()                 // called (without the lock) at each Logs call
}

func newFakeGeth() *fakeGeth {
	g := &fakeGeth{genesis: &types.Header{Number: big.NewInt(0), Time: 1_700_000_000, GasLimit: 30_000_000,
		BaseFee: big.NewInt(1_000_000_000), Difficulty: common.Big0, Root: common.Hash{1}}}
	g.wipe()
	return g
}

// wipe forgets every block but genesis, as a geth with a new datadir.
func (g *fakeGeth) wipe() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.blocks = map[common.Hash]*types.Header{g.genesis.Hash(): g.genesis}
	g.canon = []common.Hash{g.genesis.Hash()}
	g.payloads = map[beacon.PayloadID]*engine.Payload{}
	g.stateless = map[common.Hash]bool{}
}

// crash is geth killed before it flushed everything: the head rewinds to
// n, blocks n+1..kept stay without their state (geth knows them but
// executes their children only after forkchoice points at them again),
// the blocks above kept are gone.
func (g *fakeGeth) crash(n, kept uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for i, h := range g.canon[n+1:] {
		if n+1+uint64(i) <= kept {
			g.stateless[h] = true
		} else {
			delete(g.blocks, h)
		}
	}
	g.canon = g.canon[:n+1]
}

// rewind makes block n the head and forgets the blocks above.
func (g *fakeGeth) rewind(n uint64) { g.crash(n, n) }

func (g *fakeGeth) log() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.calls...)
}

func (g *fakeGeth) head() *types.Header {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.blocks[g.canon[len(g.canon)-1]]
}

// call records a call and fails it while the fake is down.
func (g *fakeGeth) call(format string, args ...any) error {
	g.calls = append(g.calls, fmt.Sprintf(format, args...))
	if g.down > 0 {
		g.down--
		return fmt.Errorf("fake: %w", engine.ErrUnreachable)
	}
	return nil
}

func stateRoot(parent *types.Header) common.Hash { return crypto.Keccak256Hash(parent.Root[:]) }

func (g *fakeGeth) ForkchoiceUpdated(_ context.Context, fc beacon.ForkchoiceStateV1, attrs *beacon.PayloadAttributes, _ uint64) (*beacon.PayloadID, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	head, ok := g.blocks[fc.HeadBlockHash]
	if err := g.call("fcu %v", numberOf(head)); err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("fake: %w", engine.ErrSyncing)
	}
	if g.snap { // "Ignoring beacon update to old head while syncing"
		return nil, nil
	}
	var canon []common.Hash
	for h := head; ; h = g.blocks[h.ParentHash] {
		delete(g.stateless, h.Hash()) // re-executed to become the head
		canon = append([]common.Hash{h.Hash()}, canon...)
		if h.Number.Sign() == 0 {
			break
		}
	}
	g.canon = canon
	if attrs == nil {
		return nil, nil
	}
	if attrs.Timestamp <= head.Time {
		return nil, fmt.Errorf("fake: timestamp %d not after the parent's %d", attrs.Timestamp, head.Time)
	}
	g.calls = append(g.calls, fmt.Sprintf("build %d", head.Number.Uint64()+1))
	d := beacon.ExecutableData{
		ParentHash: head.Hash(), FeeRecipient: attrs.SuggestedFeeRecipient, StateRoot: stateRoot(head),
		ReceiptsRoot: types.EmptyReceiptsHash, LogsBloom: make([]byte, 256), Random: attrs.Random,
		Number: head.Number.Uint64() + 1, GasLimit: head.GasLimit, Timestamp: attrs.Timestamp,
		ExtraData: []byte{}, BaseFeePerGas: head.BaseFee, Transactions: [][]byte{}, Withdrawals: attrs.Withdrawals,
		BlobGasUsed: new(uint64), ExcessBlobGas: new(uint64),
	}
	b, err := beacon.ExecutableDataToBlockNoHash(d, nil, attrs.BeaconRoot, [][]byte{})
	if err != nil {
		return nil, err
	}
	d.BlockHash = b.Hash()
	g.ids++
	var id beacon.PayloadID
	big.NewInt(0).SetUint64(g.ids).FillBytes(id[:])
	g.payloads[id] = &engine.Payload{ExecutionPayload: &d, VersionedHashes: []common.Hash{}, Requests: []hexutil.Bytes{}}
	return &id, nil
}

func (g *fakeGeth) GetPayload(_ context.Context, id beacon.PayloadID, _ uint64) (*engine.Payload, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	p, ok := g.payloads[id]
	if err := g.call("getPayload %v", numberOfPayload(p)); err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("fake: %w", engine.ErrUnknownPayload)
	}
	cp := *p
	d := *p.ExecutionPayload
	cp.ExecutionPayload = &d
	return &cp, nil
}

func (g *fakeGeth) NewPayload(_ context.Context, p *engine.Payload) error {
	g.mu.Lock()
	slow := g.slowExec
	g.mu.Unlock()
	time.Sleep(slow) // the execution this fake stands for
	g.mu.Lock()
	defer g.mu.Unlock()
	d := p.ExecutionPayload
	if err := g.call("newPayload %d", d.Number); err != nil {
		return err
	}
	for i, r := range p.Requests { // as geth's validateRequests
		if len(r) < 2 || (i > 0 && r[0] <= p.Requests[i-1][0]) {
			return fmt.Errorf("fake: %w: execution request %d: %x", engine.ErrInvalidParams, i, r)
		}
	}
	if g.syncing > 0 {
		g.syncing--
		return fmt.Errorf("fake: %w", engine.ErrSyncing)
	}
	if _, ok := g.blocks[d.BlockHash]; ok {
		return nil // known: VALID without executing, as geth does
	}
	if g.snap {
		return fmt.Errorf("fake: %w", engine.ErrSyncing) // "Ignoring payload while snap syncing"
	}
	b, err := beacon.ExecutableDataToBlockNoHash(*d, p.VersionedHashes, &p.BeaconRoot, requestsOf(p))
	if err != nil {
		return fmt.Errorf("fake: %w: %v", engine.ErrInvalid, err)
	}
	if b.Hash() != d.BlockHash {
		return fmt.Errorf("fake: %w: block hash %s, computed %s", engine.ErrInvalid, d.BlockHash, b.Hash())
	}
	parent, ok := g.blocks[d.ParentHash]
	if !ok {
		return fmt.Errorf("fake: %w", engine.ErrSyncing)
	}
	if g.stateless[d.ParentHash] {
		return fmt.Errorf("fake: %w: state not available", engine.ErrAccepted)
	}
	if d.StateRoot != stateRoot(parent) {
		return fmt.Errorf("fake: %w: state root %s, execution gives %s", engine.ErrInvalid, d.StateRoot, stateRoot(parent))
	}
	g.blocks[d.BlockHash] = b.Header()
	return nil
}

// Logs returns the logs set for the block's number, once geth holds it.
func (g *fakeGeth) Logs(_ context.Context, block common.Hash, _ common.Address, _ common.Hash) ([]types.Log, error) {
	if g.beforeLogs != nil {
		g.beforeLogs()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.call("logs %s", block); err != nil {
		return nil, err
	}
	h, ok := g.blocks[block]
	if !ok {
		return nil, errors.New("fake: unknown block")
	}
	out := append([]types.Log(nil), g.logs[h.Number.Uint64()]...)
	for i := range out {
		out[i].BlockHash = block
	}
	return out, nil
}

func (g *fakeGeth) HeaderByHash(_ context.Context, hash common.Hash) (*types.Header, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.call("header %s", hash); err != nil {
		return nil, err
	}
	if h, ok := g.blocks[hash]; ok {
		return h, nil
	}
	return nil, ethereum.NotFound
}

func (g *fakeGeth) HeaderByNumber(_ context.Context, n *big.Int) (*types.Header, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.call("header %v", n); err != nil {
		return nil, err
	}
	i := uint64(len(g.canon) - 1)
	if n != nil {
		i = n.Uint64()
	}
	if i >= uint64(len(g.canon)) {
		return nil, errors.New("fake: not found")
	}
	return g.blocks[g.canon[i]], nil
}

// PendingBlock shows g.pooled transactions of 21,000 gas, which the fake's
// payloads never carry (a geth too slow for the proposer's wait). It is
// not logged: the tests follow the chain's calls.
func (g *fakeGeth) PendingBlock(ctx context.Context) (*engine.PendingBlock, error) {
	g.mu.Lock()
	slow := g.slowPending
	g.mu.Unlock()
	select {
	case <-time.After(slow):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	pb := &engine.PendingBlock{GasUsed: hexutil.Uint64(21_000 * g.pooled)}
	for i := range g.pooled {
		pb.Transactions = append(pb.Transactions, common.BigToHash(big.NewInt(int64(i))))
	}
	return pb, nil
}

func numberOf(h *types.Header) any {
	if h == nil {
		return "unknown"
	}
	return h.Number
}

func numberOfPayload(p *engine.Payload) any {
	if p == nil {
		return "unknown"
	}
	return p.ExecutionPayload.Number
}

// fakeBlocks is CometBFT's block store: the decided transactions by height.
type fakeBlocks map[int64][][]byte

func (b fakeBlocks) Txs(h int64) ([][]byte, error) {
	txs, ok := b[h]
	if !ok {
		return nil, fmt.Errorf("no block at height %d", h)
	}
	return txs, nil
}

func requestsOf(p *engine.Payload) [][]byte {
	out := make([][]byte, len(p.Requests))
	for i, r := range p.Requests {
		out[i] = r
	}
	return out
}
