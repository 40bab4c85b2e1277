// Package loadgen sends signed transfers to an Ethereum JSON-RPC endpoint and
// measures how long each takes to appear in a block: from just before its
// batch is sent to the moment the block that carries it is announced on a
// newHeads subscription. It works against any chain whose accounts it holds
// keys for; by default the funded Foundry/Anvil dev accounts.
package loadgen

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/crypto/kzg4844"
	"github.com/ethereum/go-ethereum/rpc"
	"github.com/holiman/uint256"
)

// DevKeys are the ten Foundry/Anvil development keys funded in genesis.json.
var DevKeys = []string{
	"ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
	"59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
	"5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
	"7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
	"47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
	"8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
	"92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
	"4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
	"dbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
	"2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
}

// ParseKeys parses hex private keys (with or without 0x).
func ParseKeys(hexKeys []string) ([]*ecdsa.PrivateKey, error) {
	keys := make([]*ecdsa.PrivateKey, 0, len(hexKeys))
	for i, h := range hexKeys {
		k, err := crypto.HexToECDSA(strings.TrimPrefix(strings.TrimSpace(h), "0x"))
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", i, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// Generator sends transfers and tracks their inclusion.
type Generator struct {
	http, ws *rpc.Client
	signer   types.Signer
	chainID  *big.Int
	senders  []*sender
	to       common.Address

	// Calldata is how many zero bytes of calldata each transaction carries
	// (0: plain 21,000-gas transfers), at most MaxCalldata.
	Calldata int
	// Blobs makes every transaction a blob transaction (EIP-4844) with this
	// many blobs, at most MaxBlobs, and cell proofs (EIP-7594, Osaka).
	Blobs int

	mu       sync.Mutex
	sentAt   map[common.Hash]time.Time
	size     map[common.Hash]uint64 // encoded bytes of each sent transaction
	included map[common.Hash]time.Duration
	blocks   int
	gas      uint64
	bytes    uint64
	lastSeen time.Time
}

type sender struct {
	key   *ecdsa.PrivateKey
	nonce uint64
}

// New connects to rpcURL (http or https; the newHeads subscription uses the
// same address over ws or wss) and reads each sender's pending nonce.
func New(ctx context.Context, rpcURL string, keys []*ecdsa.PrivateKey) (*Generator, error) {
	if len(keys) == 0 {
		return nil, errors.New("loadgen: no sender keys")
	}
	h, err := rpc.DialContext(ctx, rpcURL)
	if err != nil {
		return nil, err
	}
	ws, err := rpc.DialContext(ctx, "ws"+strings.TrimPrefix(rpcURL, "http"))
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("loadgen: newHeads needs a WebSocket on the RPC address: %w", err)
	}
	g := &Generator{http: h, ws: ws, to: common.HexToAddress("0x000000000000000000000000000000000000dEaD")}
	var id hexutil.Big
	if err := h.CallContext(ctx, &id, "eth_chainId"); err != nil {
		g.Close()
		return nil, fmt.Errorf("loadgen: eth_chainId: %w", err)
	}
	g.chainID, g.signer = id.ToInt(), types.LatestSignerForChainID(id.ToInt())
	for _, k := range keys {
		var nonce hexutil.Uint64
		if err := h.CallContext(ctx, &nonce, "eth_getTransactionCount", crypto.PubkeyToAddress(k.PublicKey), "pending"); err != nil {
			g.Close()
			return nil, fmt.Errorf("loadgen: nonce: %w", err)
		}
		g.senders = append(g.senders, &sender{key: k, nonce: uint64(nonce)})
	}
	return g, nil
}

// Close releases the connections.
func (g *Generator) Close() {
	g.http.Close()
	g.ws.Close()
}

// MaxCalldata is the most calldata a transaction of the generator may
// carry: geth's pool refuses transactions over 128 KiB (txMaxSize), and the
// rest of a signed transaction takes about 120 bytes.
const MaxCalldata = 130_000

// MaxBlobs is the most blobs one transaction may carry since Osaka
// (EIP-7594).
const MaxBlobs = 6

// Gas is what one transaction of the generator costs: 21,000, plus its
// calldata at the EIP-7623 floor (10 gas per token, a zero byte being one
// token), which for zero bytes is above the standard 4 gas per byte.
func (g *Generator) Gas() uint64 { return 21000 + 10*uint64(g.Calldata) }

// sign pre-signs n transfers, round-robin over the senders, so that signing
// is not part of what is measured.
func (g *Generator) sign(n int) ([]*types.Transaction, error) {
	txs := make([]*types.Transaction, n)
	data := make([]byte, g.Calldata)
	for i := range txs {
		s := g.senders[i%len(g.senders)]
		var inner types.TxData = &types.DynamicFeeTx{
			ChainID: g.chainID, Nonce: s.nonce, Gas: g.Gas(), To: &g.to, Value: big.NewInt(1),
			GasTipCap: big.NewInt(1e9), GasFeeCap: big.NewInt(100e9), Data: data,
		}
		if g.Blobs > 0 {
			sidecar, err := blobSidecar(g.Blobs, fmt.Sprintf("loadgen %d %d", i, time.Now().UnixNano()))
			if err != nil {
				return nil, err
			}
			inner = &types.BlobTx{
				ChainID: uint256.MustFromBig(g.chainID), Nonce: s.nonce, Gas: g.Gas(), To: g.to, Value: uint256.NewInt(1),
				GasTipCap: uint256.NewInt(1e9), GasFeeCap: uint256.NewInt(100e9), Data: data,
				BlobFeeCap: uint256.NewInt(100e9), BlobHashes: sidecar.BlobHashes(), Sidecar: sidecar,
			}
		}
		tx, err := types.SignNewTx(s.key, g.signer, inner)
		if err != nil {
			return nil, err
		}
		s.nonce++
		txs[i] = tx
	}
	return txs, nil
}

// blobSidecar makes n distinct blobs, each starting with tag, with their
// commitments and Osaka's cell proofs.
func blobSidecar(n int, tag string) (*types.BlobTxSidecar, error) {
	blobs := make([]kzg4844.Blob, n)
	commitments := make([]kzg4844.Commitment, n)
	var proofs []kzg4844.Proof
	for i := range blobs {
		// 31 bytes after a zero byte: a field element below the modulus.
		copy(blobs[i][1:32], crypto.Keccak256([]byte(fmt.Sprintf("%s blob %d", tag, i))))
		c, err := kzg4844.BlobToCommitment(&blobs[i])
		if err != nil {
			return nil, err
		}
		p, err := kzg4844.ComputeCellProofs(&blobs[i])
		if err != nil {
			return nil, err
		}
		commitments[i], proofs = c, append(proofs, p...)
	}
	return types.NewBlobTxSidecar(types.BlobSidecarVersion1, blobs, commitments, proofs), nil
}

// maxBatchBytes keeps a JSON-RPC batch under geth's 5 MiB HTTP body limit:
// each raw transaction travels as hex, twice its size.
const maxBatchBytes = 2 << 20

// send sends txs in JSON-RPC batches, as few as geth's body limit allows,
// and records their send time.
func (g *Generator) send(ctx context.Context, txs []*types.Transaction) error {
	raws := make([][]byte, len(txs))
	now := time.Now()
	g.mu.Lock()
	for i, tx := range txs {
		raw, err := tx.MarshalBinary()
		if err != nil {
			g.mu.Unlock()
			return err
		}
		raws[i] = raw
		g.sentAt[tx.Hash()] = now
		g.size[tx.Hash()] = uint64(len(raw))
	}
	g.mu.Unlock()
	for len(raws) > 0 {
		n, size := 0, 0
		for n < len(raws) && (n == 0 || size+len(raws[n]) <= maxBatchBytes) {
			size += len(raws[n])
			n++
		}
		batch := make([]rpc.BatchElem, n)
		for i, raw := range raws[:n] {
			batch[i] = rpc.BatchElem{Method: "eth_sendRawTransaction", Args: []any{hexutil.Bytes(raw)}, Result: new(common.Hash)}
		}
		if err := g.http.BatchCallContext(ctx, batch); err != nil {
			return err
		}
		for _, el := range batch {
			if el.Error != nil {
				return fmt.Errorf("eth_sendRawTransaction: %w", el.Error)
			}
		}
		raws = raws[n:]
	}
	return nil
}

// watch records the inclusion time of every sent transaction from newHeads
// until ctx ends.
func (g *Generator) watch(ctx context.Context, ready chan<- error) {
	heads := make(chan *types.Header, 1024)
	sub, err := g.ws.EthSubscribe(ctx, heads, "newHeads")
	ready <- err
	if err != nil {
		return
	}
	defer sub.Unsubscribe()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sub.Err():
			return
		case h := <-heads:
			seen := time.Now()
			var block struct {
				Transactions []common.Hash `json:"transactions"`
				GasUsed      hexutil.Uint64
			}
			if err := g.http.CallContext(ctx, &block, "eth_getBlockByHash", h.Hash(), false); err != nil {
				continue
			}
			g.mu.Lock()
			ours := 0
			for _, tx := range block.Transactions {
				if sent, ok := g.sentAt[tx]; ok {
					if _, dup := g.included[tx]; !dup {
						g.included[tx] = seen.Sub(sent)
						g.gas += g.Gas()
						g.bytes += g.size[tx]
						ours++
					}
				}
			}
			if ours > 0 {
				g.blocks++
				g.lastSeen = seen
			}
			g.mu.Unlock()
		}
	}
}

// Result is what one run measured.
type Result struct {
	Sent, Included int
	Blocks         int           // blocks that carried our transactions
	Duration       time.Duration // first send to last inclusion
	Sending        time.Duration // first send to the last one accepted
	Gas            uint64        // gas of our included transactions
	Bytes          uint64        // encoded size of our included transactions
	Latencies      []time.Duration
}

// Percentile returns the q-th percentile (0-100) of the inclusion latency.
func (r Result) Percentile(q float64) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	i := int(float64(len(r.Latencies)-1) * q / 100)
	return r.Latencies[i]
}

// TxPerSec is included transactions per second of Duration.
func (r Result) TxPerSec() float64 { return float64(r.Included) / r.Duration.Seconds() }

// MgasPerSec is included gas per second of Duration, in millions.
func (r Result) MgasPerSec() float64 { return float64(r.Gas) / 1e6 / r.Duration.Seconds() }

// MBPerSec is included transaction bytes per second of Duration, in MB.
func (r Result) MBPerSec() float64 { return float64(r.Bytes) / 1e6 / r.Duration.Seconds() }

// Pending is how many sent transactions were not seen in a block.
func (r Result) Pending() int { return r.Sent - r.Included }

// Burst sends n transfers in batches of batchSize as fast as the endpoint
// takes them, then waits up to `wait` for all of them to be included.
func (g *Generator) Burst(ctx context.Context, n, batchSize int, wait time.Duration) (Result, error) {
	txs, err := g.sign(n)
	if err != nil {
		return Result{}, err
	}
	return g.run(ctx, wait, func(ctx context.Context) error {
		for i := 0; i < len(txs); i += batchSize {
			if err := g.send(ctx, txs[i:min(i+batchSize, len(txs))]); err != nil {
				return err
			}
		}
		return nil
	}, n)
}

// maxBatch keeps steady-load batches well under geth's default
// --rpc.batch-request-limit of 1000 when the sender falls behind.
const maxBatch = 200

// Steady sends rate transfers per second for d, in batches every 10 ms, then
// waits up to `wait` for the rest to be included.
func (g *Generator) Steady(ctx context.Context, rate float64, d, wait time.Duration) (Result, error) {
	n := int(rate * d.Seconds())
	txs, err := g.sign(n)
	if err != nil {
		return Result{}, err
	}
	return g.run(ctx, wait, func(ctx context.Context) error {
		start, sent := time.Now(), 0
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for sent < n {
			due := min(n, int(rate*time.Since(start).Seconds())+1)
			for sent < due { // geth refuses batches over --rpc.batch-request-limit (1000)
				next := min(due, sent+maxBatch)
				if err := g.send(ctx, txs[sent:next]); err != nil {
					return err
				}
				sent = next
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-tick.C:
			}
		}
		return nil
	}, n)
}

func (g *Generator) run(ctx context.Context, wait time.Duration, sendAll func(context.Context) error, n int) (Result, error) {
	g.mu.Lock()
	g.sentAt, g.size, g.included = make(map[common.Hash]time.Time, n), make(map[common.Hash]uint64, n), make(map[common.Hash]time.Duration, n)
	g.blocks, g.gas, g.bytes = 0, 0, 0
	g.mu.Unlock()
	watchCtx, stop := context.WithCancel(ctx)
	defer stop()
	ready := make(chan error, 1)
	go g.watch(watchCtx, ready)
	if err := <-ready; err != nil {
		return Result{}, fmt.Errorf("loadgen: subscribe newHeads: %w", err)
	}
	start := time.Now()
	if err := sendAll(ctx); err != nil {
		return Result{}, err
	}
	sending := time.Since(start)
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		g.mu.Lock()
		done := len(g.included) == n
		g.mu.Unlock()
		if done {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	g.mu.Lock()
	defer g.mu.Unlock()
	r := Result{Sent: n, Included: len(g.included), Blocks: g.blocks, Gas: g.gas, Bytes: g.bytes, Duration: g.lastSeen.Sub(start), Sending: sending}
	for _, l := range g.included {
		r.Latencies = append(r.Latencies, l)
	}
	slices.Sort(r.Latencies)
	return r, nil
}
