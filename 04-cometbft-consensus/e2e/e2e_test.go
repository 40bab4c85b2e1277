package e2e

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"

	"github.com/geth-consensus/tutorial/devnet"

	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/app"
)

// Four validators, each with its own geth: heights are decided and every
// geth holds the same block at every height, final. With optimistic
// building on, the proposers use the payloads they started early.
func TestFourValidatorsFinalizeTheSameChain(t *testing.T) {
	nw := newNetwork(t, spec{flags: func(int) []string { return []string{"--optimistic-build"} }})
	nw.waitHeads(10, 90*time.Second)
	if low := nw.checkSameChain(); low < 10 {
		t.Fatalf("lowest head %d", low)
	}
	used := 0.0
	for _, v := range nw.vals {
		s, ok := v.status()
		if !ok || !s.Ready || s.Height < 10 || s.ExecutionHead != uint64(s.Height) {
			t.Fatalf("validator-%d status %+v (ok %v)", v.i, s, ok)
		}
		used += v.metric(`consensus_optimistic_builds_total{outcome="used"}`)
	}
	if used < 3 {
		t.Errorf("%v proposals used a payload started early, in 10 heights", used)
	}

	// The app's guess of each height's round-0 proposer, which decides who
	// starts building early, is CometBFT's choice.
	ctx := context.Background()
	c := nw.vals[0].cometbft(t)
	gen, err := c.Genesis(ctx)
	if err != nil {
		t.Fatal(err)
	}
	proposers, err := app.NewProposers(gen.Genesis.Validators)
	if err != nil {
		t.Fatal(err)
	}
	round0 := 0
	for h := int64(1); h <= 10; h++ {
		commit, err := c.Commit(ctx, &h)
		if err != nil {
			t.Fatal(err)
		}
		if commit.Commit.Round != 0 {
			continue
		}
		round0++
		if want, got := commit.Header.ProposerAddress, proposers.At(h); !bytes.Equal(want, got) {
			t.Fatalf("height %d: proposer %X, the app predicted %X", h, want, got)
		}
	}
	if round0 < 5 {
		t.Fatalf("only %d of 10 heights decided in round 0", round0)
	}
}

// A transfer sent to one validator's geth reaches the proposers through
// geth's peering and is included; one validator killed, the other three
// go on; restarted, it catches up from its peers.
func TestTransactionAndOneValidatorDown(t *testing.T) {
	nw := newNetwork(t, spec{})
	nw.waitHeads(3, 90*time.Second)
	sink := common.HexToAddress("0x00000000000000000000000000000000000c0ffe")
	tx, err := devnet.SendTransfer(context.Background(), nw.vals[3].eth, 3, sink)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		_, err := nw.vals[0].eth.TransactionReceipt(context.Background(), tx.Hash())
		return err
	})

	down := nw.vals[2]
	if err := down.proc.Kill(); err != nil {
		t.Fatal(err)
	}
	up := []*validator{nw.vals[0], nw.vals[1], nw.vals[3]}
	h, _ := nw.vals[0].head()
	nw.waitHeads(h+10, 60*time.Second, up...)
	nw.start(down)
	h, _ = nw.vals[0].head()
	nw.waitHeads(h+3, 60*time.Second)
	nw.checkSameChain()
}

// A Byzantine proposer corrupts every payload it proposes: the others'
// geth find it INVALID, its proposals are rejected, and the chain goes on
// through the other proposers; no validator halts.
func TestByzantineProposerIsRejected(t *testing.T) {
	nw := newNetwork(t, spec{flags: func(i int) []string {
		if i == 0 {
			return []string{"--byzantine"}
		}
		return nil
	}})
	nw.waitHeads(12, 120*time.Second)
	nw.checkSameChain()
	eventually(t, 10*time.Second, func() error {
		for _, v := range nw.vals[1:] {
			if n := v.metric(`consensus_process_proposal_total{reason="invalid",verdict="reject"}`); n < 1 {
				return fmt.Errorf("validator-%d rejected %v invalid proposals", v.i, n)
			}
		}
		return nil
	})
	for _, v := range nw.vals {
		if !v.proc.Running() {
			t.Fatalf("validator-%d stopped", v.i)
		}
	}
}

// Two of four validators killed: the other two hold half the voting power,
// less than the 2/3 CometBFT needs, and no height is decided. Restarted,
// the chain resumes; validator-3's geth was killed too, and both restarted
// nodes and their geths catch up to the same chain.
func TestTwoValidatorsDownHaltThenResume(t *testing.T) {
	nw := newNetwork(t, spec{})
	nw.waitHeads(5, 90*time.Second)
	down := nw.vals[2:]
	for _, v := range down {
		if err := v.proc.Kill(); err != nil {
			t.Fatal(err)
		}
	}
	if err := nw.vals[3].geth.Kill(); err != nil {
		t.Fatal(err)
	}
	up := nw.vals[:2]
	// The height in flight when they died may still be decided; after that,
	// nothing. Watch for ten block times.
	settled, _ := up[0].head()
	nw.waitHeads(settled, 10*time.Second, up...)
	settled = max(settled, mustHead(t, up[0]), mustHead(t, up[1]))
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		for _, v := range up {
			if h := mustHead(t, v); h > settled+1 {
				t.Fatalf("validator-%d reached block %d with two of four validators down (halted at %d)", v.i, h, settled)
			}
		}
	}
	if err := nw.vals[3].geth.Start(); err != nil {
		t.Fatal(err)
	}
	for _, v := range down {
		nw.start(v)
	}
	nw.waitHeads(settled+5, 90*time.Second)
	nw.checkSameChain()
}

// A validator's geth killed and its datadir wiped recovers every block
// from CometBFT's block store: while the node runs (FinalizeBlock finds
// geth lacking the parent and replays), and across a restart of the node
// (Info reports geth's height and CometBFT's handshake replays).
func TestWipedGethRecoversFromBlockStore(t *testing.T) {
	nw := newNetwork(t, spec{})
	nw.waitHeads(8, 90*time.Second)
	ctx := context.Background()
	wipe := func(v *validator) {
		t.Helper()
		for _, step := range []func() error{v.geth.Kill, func() error { return v.geth.Wipe(ctx) }, v.geth.Start} {
			if err := step(); err != nil {
				t.Fatal(err)
			}
		}
	}

	lost := mustHead(t, nw.vals[1]) // what the wiped geths must get back
	running := nw.vals[1]
	wipe(running)
	restarted := nw.vals[2]
	if err := restarted.proc.Kill(); err != nil {
		t.Fatal(err)
	}
	wipe(restarted)
	nw.start(restarted)

	nw.waitHeads(mustHead(t, nw.vals[0])+5, 120*time.Second)
	nw.checkSameChain()
	for _, v := range []*validator{running, restarted} {
		if n := v.metric("consensus_blocks_replayed_total"); n < float64(lost) {
			t.Fatalf("validator-%d replayed %v blocks into its wiped geth, want at least %d", v.i, n, lost)
		}
		if !v.proc.Running() {
			t.Fatalf("validator-%d stopped", v.i)
		}
	}
}

func mustHead(t testing.TB, v *validator) uint64 {
	t.Helper()
	h, err := v.head()
	if err != nil {
		t.Fatalf("validator-%d: %v", v.i, err)
	}
	return h
}
