package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto/kzg4844"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/geth-consensus/tutorial/devnet"
	"github.com/holiman/uint256"
)

// These tests run against a real geth process started by the devnet library
// (built from the pinned go-ethereum module): the point of stage 1 is the
// HTTP + JWT boundary, which an in-process node would skip.

type harness struct {
	t    *testing.T
	geth *devnet.GethNode
	eth  *ethclient.Client
	cfg  config
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	return newHarnessOn(t, devnet.StartT(t, devnet.Config{GethNodes: 1}))
}

// newHarnessOn drives the first geth of a network.
func newHarnessOn(t *testing.T, n *devnet.Network) *harness {
	t.Helper()
	g := n.Geth[0]
	eth, err := ethclient.Dial(g.RPCURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eth.Close)
	genesis, jwt := mustFindUp(t, "genesis.json"), mustFindUp(t, "jwt.hex")
	return &harness{t: t, geth: g, eth: eth, cfg: config{
		EngineURL: g.EngineURL(), JWTSecret: jwt, RPCURL: g.RPCURL(), GenesisPath: genesis,
		Blocks: 1, BuildWait: 200 * time.Millisecond, Interval: 0,
		FeeRecipient: "0x000000000000000000000000000000000000fee5", Timeout: 8 * time.Second,
	}}
}

// build runs the program for n blocks and returns its output.
func (h *harness) build(n int) string {
	h.t.Helper()
	cfg := h.cfg
	cfg.Blocks = n
	var out bytes.Buffer
	if err := run(context.Background(), cfg, &out); err != nil {
		h.t.Fatalf("run: %v\noutput:\n%s", err, out.String())
	}
	return out.String()
}

func (h *harness) head() *types.Header {
	h.t.Helper()
	hd, err := h.eth.HeaderByNumber(context.Background(), nil)
	if err != nil {
		h.t.Fatal(err)
	}
	return hd
}

// waitPending polls until geth's pool holds tx, so the next block can include it.
func (h *harness) waitPending(tx *types.Transaction) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, pending, err := h.eth.TransactionByHash(context.Background(), tx.Hash())
		if err == nil && pending {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("tx %s not in geth's pool: %v", tx.Hash(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (h *harness) receipt(tx *types.Transaction) *types.Receipt {
	h.t.Helper()
	r, err := h.eth.TransactionReceipt(context.Background(), tx.Hash())
	if err != nil {
		h.t.Fatalf("receipt of %s: %v", tx.Hash(), err)
	}
	if r.Status != types.ReceiptStatusSuccessful {
		h.t.Fatalf("tx %s failed", tx.Hash())
	}
	return r
}

func (h *harness) signAndSend(keyIndex int, data types.TxData) *types.Transaction {
	h.t.Helper()
	key, _ := devnet.DevKey(keyIndex)
	tx, err := types.SignNewTx(key, types.LatestSignerForChainID(big.NewInt(1337)), data)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := h.eth.SendTransaction(context.Background(), tx); err != nil {
		h.t.Fatalf("send tx: %v", err)
	}
	return tx
}

func TestBuildsBlocks(t *testing.T) {
	h := newHarness(t)
	const k = 3
	out := h.build(k)
	head := h.head()
	if head.Number.Uint64() != k {
		t.Fatalf("head = %d after building %d blocks on genesis\n%s", head.Number, k, out)
	}
	// Osaka is active at time 0 in genesis.json: the versions must follow.
	for _, m := range []string{"engine_forkchoiceUpdatedV3", "engine_getPayloadV5", "engine_newPayloadV4"} {
		if !strings.Contains(out, m) {
			t.Errorf("output does not mention %s:\n%s", m, out)
		}
	}
	// Each block is finalized, has a strictly increasing timestamp and our
	// fee recipient.
	fin, err := h.eth.HeaderByNumber(context.Background(), big.NewInt(-3)) // finalized
	if err != nil || fin.Hash() != head.Hash() {
		t.Fatalf("finalized = %v (%v), want head %s", fin, err, head.Hash())
	}
	for n := uint64(1); n <= k; n++ {
		b, err := h.eth.HeaderByNumber(context.Background(), new(big.Int).SetUint64(n))
		if err != nil {
			t.Fatal(err)
		}
		parent, _ := h.eth.HeaderByNumber(context.Background(), new(big.Int).SetUint64(n-1))
		if b.Time <= parent.Time || b.ParentHash != parent.Hash() {
			t.Errorf("block %d: time %d parent time %d, parent %s want %s", n, b.Time, parent.Time, b.ParentHash, parent.Hash())
		}
		if b.Coinbase != common.HexToAddress(h.cfg.FeeRecipient) {
			t.Errorf("block %d: coinbase %s", n, b.Coinbase)
		}
	}
}

func TestIncludesPendingTransfer(t *testing.T) {
	h := newHarness(t)
	to := common.HexToAddress("0x00000000000000000000000000000000000000aa")
	tx := h.signAndSend(1, &types.DynamicFeeTx{
		ChainID: big.NewInt(1337), Nonce: 0, GasTipCap: big.NewInt(1e9), GasFeeCap: big.NewInt(10e9),
		Gas: 21000, To: &to, Value: big.NewInt(12345),
	})
	h.waitPending(tx)
	out := h.build(1)
	r := h.receipt(tx)
	if r.BlockNumber.Uint64() != 1 {
		t.Fatalf("transfer included in block %d, want 1\n%s", r.BlockNumber, out)
	}
	bal, err := h.eth.BalanceAt(context.Background(), to, nil)
	if err != nil || bal.Int64() != 12345 {
		t.Fatalf("recipient balance %v (%v)", bal, err)
	}
}

// A blob transaction is the classic way to halt a CL that passes no
// versioned hashes to newPayload: geth answers INVALID for ever.
func TestIncludesPendingBlobTransaction(t *testing.T) {
	h := newHarness(t)
	var blob kzg4844.Blob
	copy(blob[1:], "stage 1 blob") // byte 0 of each field element stays 0: canonical
	commitment, err := kzg4844.BlobToCommitment(&blob)
	if err != nil {
		t.Fatal(err)
	}
	// Osaka (EIP-7594) pools want cell proofs: sidecar version 1.
	proofs, err := kzg4844.ComputeCellProofs(&blob)
	if err != nil {
		t.Fatal(err)
	}
	sidecar := types.NewBlobTxSidecar(types.BlobSidecarVersion1, []kzg4844.Blob{blob}, []kzg4844.Commitment{commitment}, proofs)
	to := common.HexToAddress("0x00000000000000000000000000000000000000bb")
	tx := h.signAndSend(2, &types.BlobTx{
		ChainID: uint256.NewInt(1337), Nonce: 0, GasTipCap: uint256.NewInt(1e9), GasFeeCap: uint256.NewInt(10e9),
		Gas: 21000, To: to, BlobFeeCap: uint256.NewInt(1e9), BlobHashes: sidecar.BlobHashes(), Sidecar: sidecar,
	})
	h.waitPending(tx)
	out := h.build(1)
	r := h.receipt(tx)
	if r.BlockNumber.Uint64() != 1 || r.BlobGasUsed == 0 {
		t.Fatalf("blob tx in block %d with blob gas %d, want block 1 with blob gas\n%s", r.BlockNumber, r.BlobGasUsed, out)
	}
	if !strings.Contains(out, "1 blobs") {
		t.Errorf("output does not report the blob:\n%s", out)
	}
	// The chain keeps going after the blob block.
	h.build(2)
	if n := h.head().Number.Uint64(); n != 3 {
		t.Fatalf("head = %d after the blob block and two more, want 3", n)
	}
}

// A transaction sent to another geth reaches the producer's pool through
// devp2p gossip and is included. geth drops gossiped transactions until it
// has seen its first forkchoiceUpdated, so one block comes first.
func TestIncludesTransactionGossipedFromPeer(t *testing.T) {
	n := devnet.StartT(t, devnet.Config{GethNodes: 2})
	h := newHarnessOn(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := n.WaitPeered(ctx, 1); err != nil {
		t.Fatal(err)
	}
	h.build(1)
	peer, err := ethclient.Dial(n.Geth[1].RPCURL())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	tx, err := devnet.SendTransfer(ctx, peer, 3, common.HexToAddress("0x00000000000000000000000000000000000000cc"))
	if err != nil {
		t.Fatal(err)
	}
	h.waitPending(tx) // polls the producer's geth, not the peer
	h.build(1)
	if r := h.receipt(tx); r.BlockNumber.Uint64() != 2 {
		t.Fatalf("gossiped tx in block %d, want 2", r.BlockNumber)
	}
}

func TestWrongJWTSecret(t *testing.T) {
	h := newHarness(t)
	cfg := h.cfg
	cfg.JWTSecret = "0x" + strings.Repeat("ab", 32)
	err := run(context.Background(), cfg, new(bytes.Buffer))
	if !errors.Is(err, ErrJWTRejected) || !strings.Contains(err.Error(), "not the one geth was started with") {
		t.Fatalf("err = %v; want ErrJWTRejected naming the secret", err)
	}
}

func TestJWTClockSkew(t *testing.T) {
	h := newHarness(t)
	secret, err := loadJWTSecret(h.cfg.JWTSecret)
	if err != nil {
		t.Fatal(err)
	}
	skewed := func() time.Time { return time.Now().Add(-2 * time.Minute) }
	e, err := dialEngine(context.Background(), h.cfg.EngineURL, secret, time.Second, skewed)
	if err != nil {
		t.Fatal(err)
	}
	var caps []string
	err = e.call(context.Background(), &caps, "engine_exchangeCapabilities", []string{})
	if !errors.Is(err, ErrJWTClockSkew) || !strings.Contains(err.Error(), "clock") {
		t.Fatalf("err = %v; want ErrJWTClockSkew naming the clock", err)
	}
}

// An endpoint that accepts TCP connections but never answers: the call must
// fail with a clear error once --timeout has passed, not hang.
func TestUnreachableEngineFailsInBoundedTime(t *testing.T) {
	h := newHarness(t)
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	closedPort, _ := devnet.FreePort()

	for name, url := range map[string]string{
		"refused": "http://127.0.0.1:" + strconv.Itoa(closedPort),
		"silent":  "http://" + silent.Addr().String(),
	} {
		t.Run(name, func(t *testing.T) {
			cfg := h.cfg
			cfg.EngineURL, cfg.Timeout = url, time.Second
			start := time.Now()
			err := run(context.Background(), cfg, new(bytes.Buffer))
			if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), url) {
				t.Fatalf("err = %v; want ErrUnreachable naming %s", err, url)
			}
			if elapsed := time.Since(start); elapsed > 5*time.Second {
				t.Fatalf("took %s to give up; the bound is the 1s timeout plus set-up", elapsed)
			}
		})
	}
}

func TestGenesisMismatchAndMalformedGenesis(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	b, err := os.ReadFile(h.cfg.GenesisPath)
	if err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "other.json")
	if err := os.WriteFile(other, bytes.Replace(b, []byte(`"gasLimit": "0x3938700"`), []byte(`"gasLimit": "0x3938701"`), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	malformed := filepath.Join(dir, "malformed.json")
	if err := os.WriteFile(malformed, b[:100], 0o644); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		other:                              "initialised from another genesis.json",
		malformed:                          malformed,
		filepath.Join(dir, "missing.json"): "missing.json",
	} {
		cfg := h.cfg
		cfg.GenesisPath = path
		if err := run(context.Background(), cfg, new(bytes.Buffer)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("genesis %s: err = %v; want it to mention %q", filepath.Base(path), err, want)
		}
	}
}

// Without the EIP-7002 withdrawal queue contract geth cannot build a Prague
// block; the error must carry geth's reason, not just "Invalid payload attributes".
func TestMissingSystemContractIsExplained(t *testing.T) {
	b, err := os.ReadFile(mustFindUp(t, "genesis.json"))
	if err != nil {
		t.Fatal(err)
	}
	var genesis map[string]any
	if err := json.Unmarshal(b, &genesis); err != nil {
		t.Fatal(err)
	}
	delete(genesis["alloc"].(map[string]any), "0x00000961Ef480Eb55e80D19ad83579A64c007002")
	path := filepath.Join(t.TempDir(), "genesis.json")
	b, _ = json.Marshal(genesis)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	h := newHarnessOn(t, devnet.StartT(t, devnet.Config{GethNodes: 1, GenesisPath: path}))
	h.cfg.GenesisPath = path
	err = run(context.Background(), h.cfg, new(bytes.Buffer))
	if err == nil || !strings.Contains(err.Error(), "empty system contract") || !strings.Contains(err.Error(), "troubleshooting") {
		t.Fatalf("err = %v; want geth's reason and a pointer to the README", err)
	}
}

func mustFindUp(t *testing.T, name string) string {
	t.Helper()
	p, err := devnet.FindUp(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A fork schedule that disagrees with geth's: the builder believes Prague is
// the latest fork and asks for engine_getPayloadV4, geth (on Osaka) answers
// -38005, and the error names the block, the fork and the method version.
func TestUnsupportedForkNamesForkAndVersion(t *testing.T) {
	h := newHarness(t)
	secret, err := loadJWTSecret(h.cfg.JWTSecret)
	if err != nil {
		t.Fatal(err)
	}
	e, err := dialEngine(context.Background(), h.cfg.EngineURL, secret, 8*time.Second, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	genesis, err := loadGenesis(h.cfg.GenesisPath)
	if err != nil {
		t.Fatal(err)
	}
	pragueOnly := *genesis.Config
	pragueOnly.OsakaTime = nil
	b := &builder{engine: e, chain: &pragueOnly, out: new(bytes.Buffer), wait: 10 * time.Millisecond}
	head := h.head()
	_, err = b.buildBlock(context.Background(), blockRef{number: head.Number.Uint64(), hash: head.Hash(), time: head.Time})
	if !errors.Is(err, ErrUnsupportedFork) {
		t.Fatalf("err = %v; want ErrUnsupportedFork", err)
	}
	for _, want := range []string{"fork Prague", "engine_getPayloadV4", "-38005", "block #1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %q: %v", want, err)
		}
	}
}
