package e2e

import (
	"context"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/beacon/engine"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/ethclient"

	"github.com/geth-consensus/tutorial/03-member-nodes/internal/builder"
	stage "github.com/geth-consensus/tutorial/03-member-nodes/internal/engine"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/node"
	"github.com/geth-consensus/tutorial/devnet"
)

// A chain a single node made (stage 2's binary, built from the monorepo, on
// the leader's geth) is refused by default, then adopted with
// --adopt-chain: the leader imports geth's finalized blocks into the empty
// cluster store, signed under its epoch; a member syncs them from genesis,
// and the cluster goes on from them. Every geth and store agree at the end.
func TestAdoptAChainASingleNodeMade(t *testing.T) {
	var single []common.Hash
	stage2 := stage2Binary(t)
	c := startCluster(t, nil, func(n *devnet.Network) {
		if stage2 != "" {
			single = runSingleNode(t, stage2, n.Geth[0], 12)
		} else { // this stage copied out on its own: the same calls, made here
			single = singleNodeChain(t, n.Geth[0], 12)
		}
	}, 1, 1, nil)
	leader, member := c.candidates()[0], c.members()[0]
	made := uint64(len(single) - 1)

	exited, _ := leader.proc.Exited()
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatal("a leader whose geth holds blocks the cluster store lacks did not refuse to run")
	}
	log, err := os.ReadFile(leader.proc.LogPath)
	if err != nil || !strings.Contains(string(log), fmt.Sprintf("geth finalized blocks 1 to %d that the cluster store lacks", made)) ||
		!strings.Contains(string(log), "--adopt-chain") {
		t.Fatalf("the refusal does not name the blocks and the way out (%v):\n%s", err, leader.proc.TailLog(2000))
	}

	leader.cfg.AdoptChain = true
	leader.proc = nodeProcess(t, leader.cfg)
	c.start(leader)
	c.waitHeads(made+10, 60*time.Second)
	for n, hash := range single {
		if got := chainOf(t, member.eth)[n]; got != hash {
			t.Fatalf("block %d: the member's geth has %s, the single node made %s", n, got, hash)
		}
	}
	// Restarted with the flag still set, there is nothing to adopt.
	if err := leader.proc.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	c.start(leader)
	c.waitHeads(c.clusterHead()+5, 30*time.Second)
	c.stopNodes()
	if log, err := os.ReadFile(leader.proc.LogPath); err != nil || strings.Count(string(log), "msg=adopted") != 1 {
		t.Fatalf("want one adoption in the leader's log (%v)", err)
	}
	c.checkInvariants()
}

// runSingleNode runs stage 2's binary on g until it has made at least
// `blocks` blocks, a transfer sent after each of the first few, and stops
// it. It returns geth's chain.
func runSingleNode(t testing.TB, bin string, g *devnet.GethNode, blocks uint64) []common.Hash {
	t.Helper()
	port, err := devnet.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	p := &devnet.Process{Name: "single-node", Path: bin, LogPath: filepath.Join(t.TempDir(), "single-node.log"),
		Args: []string{"--instance-id", "node-1", "--eth-client-url", g.EngineURL(), "--jwt-secret", mustFindUp(t, "jwt.hex"),
			"--genesis", mustFindUp(t, "genesis.json"), "--data-dir", t.TempDir(), "--block-time", "250ms",
			"--health-addr", "127.0.0.1:" + strconv.Itoa(port)}}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	defer p.Stop(10 * time.Second) //nolint:errcheck // stopped below; this is for a failed test
	eth, err := ethclient.Dial(g.RPCURL())
	if err != nil {
		t.Fatal(err)
	}
	defer eth.Close()
	ctx := context.Background()
	sent := 0
	var last *types.Transaction
	eventually(t, 60*time.Second, func() error {
		head, err := eth.BlockNumber(ctx)
		if err != nil || head < 2 {
			return fmt.Errorf("stage 2 at block %d (%v)", head, err)
		}
		if sent < 5 { // after block 2: geth drops what it gets before its first forkchoiceUpdated
			tx, err := devnet.SendTransfer(ctx, eth, 2, common.HexToAddress("0x5151"))
			if err != nil {
				return err
			}
			last = tx
			sent++
		}
		if head < blocks || sent < 5 {
			return fmt.Errorf("stage 2 at block %d, %d transfers sent", head, sent)
		}
		// One sender: the last one included means all are.
		if _, err := eth.TransactionReceipt(ctx, last.Hash()); err != nil {
			return fmt.Errorf("transfer %d not included yet: %v", sent, err)
		}
		return nil
	})
	if err := p.Stop(10 * time.Second); err != nil {
		t.Fatalf("stage 2 did not stop: %v\n%s", err, p.TailLog(2000))
	}
	chain := chainOf(t, eth)
	txs := 0
	for n := range chain {
		b, err := eth.BlockByNumber(ctx, new(big.Int).SetInt64(int64(n)))
		if err != nil {
			t.Fatal(err)
		}
		txs += len(b.Transactions())
	}
	if txs != sent {
		t.Fatalf("stage 2's chain of %d blocks holds %d transactions, %d were sent", len(chain)-1, txs, sent)
	}
	return chain
}

// singleNodeChain makes blocks on g the way stage 2 does, without any
// cluster: each built, executed, and made head, safe and finalized at once,
// with a transfer in each block after the first. It returns the chain.
func singleNodeChain(t testing.TB, g *devnet.GethNode, blocks int) []common.Hash {
	t.Helper()
	ctx := context.Background()
	secret, err := stage.LoadJWTSecret(mustFindUp(t, "jwt.hex"))
	if err != nil {
		t.Fatal(err)
	}
	genesis, err := node.LoadGenesis(mustFindUp(t, "genesis.json"))
	if err != nil {
		t.Fatal(err)
	}
	client, err := stage.Dial(ctx, stage.Options{URL: g.EngineURL(), Secret: secret, Chain: genesis.Config})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	eth, err := ethclient.Dial(g.RPCURL())
	if err != nil {
		t.Fatal(err)
	}
	defer eth.Close()
	b := builder.New(client, common.HexToAddress("0x5150"), time.Now)
	gen := genesis.ToBlock()
	parent := builder.Parent{Hash: gen.Hash(), Timestamp: gen.Time()}
	chain := []common.Hash{gen.Hash()}
	for range blocks {
		if parent.Number > 0 {
			if _, err := devnet.SendTransfer(ctx, eth, 2, common.HexToAddress("0x5151")); err != nil {
				t.Fatal(err)
			}
		}
		p, err := b.Build(ctx, parent, 100*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if err := client.NewPayload(ctx, p); err != nil {
			t.Fatal(err)
		}
		d := p.ExecutionPayload
		fc := engine.ForkchoiceStateV1{HeadBlockHash: d.BlockHash, SafeBlockHash: d.BlockHash, FinalizedBlockHash: d.BlockHash}
		if _, err := client.ForkchoiceUpdated(ctx, fc, nil, d.Timestamp); err != nil {
			t.Fatal(err)
		}
		parent = builder.Parent{Number: d.Number, Hash: d.BlockHash, Timestamp: d.Timestamp}
		chain = append(chain, d.BlockHash)
	}
	last, err := eth.BlockByNumber(ctx, nil)
	if err != nil || last.Hash() != parent.Hash || len(last.Transactions()) != 1 {
		t.Fatalf("the single node's last block: %v; want block %d with its transfer", err, blocks)
	}
	return chain
}
