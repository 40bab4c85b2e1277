package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"

	"github.com/geth-consensus/tutorial/devnet"
)

// Four validators, each with its own geth: heights are decided and every
// geth holds the same block at every height, final.
func TestFourValidatorsFinalizeTheSameChain(t *testing.T) {
	nw := newNetwork(t, 4, 200*time.Millisecond, nil)
	nw.waitHeads(10, 90*time.Second)
	if low := nw.checkSameChain(); low < 10 {
		t.Fatalf("lowest head %d", low)
	}
	for _, v := range nw.vals {
		s, ok := v.status()
		if !ok || !s.Ready || s.Height < 10 || s.ExecutionHead != uint64(s.Height) {
			t.Fatalf("validator-%d status %+v (ok %v)", v.i, s, ok)
		}
	}
}

// A transfer sent to one validator's geth reaches the proposers through
// geth's peering and is included; one validator killed, the other three
// go on; restarted, it catches up from its peers.
func TestTransactionAndOneValidatorDown(t *testing.T) {
	nw := newNetwork(t, 4, 200*time.Millisecond, nil)
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
	nw := newNetwork(t, 4, 200*time.Millisecond, func(i int) []string {
		if i == 0 {
			return []string{"--byzantine"}
		}
		return nil
	})
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
