package e2e

import (
	"context"
	"math/big"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/ethclient"

	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/loadgen"
)

// The largest transactions geth's pool takes (130,000 bytes of calldata,
// 1.32 Mgas each), sent to one validator's geth, fill four consecutive
// blocks to the gas limit (about 6 MB each): every one is decided and every
// validator's geth holds the same blocks; then the chain keeps its pace.
// Before envelope version 2 the proposer could not fit such a payload in
// its envelope and the chain halted for good. Four validators and their
// geths on two vCPUs take tens of seconds for the four (README: *Full
// blocks*).
func TestFullBlocksAreDecided(t *testing.T) {
	// At debug level CometBFT's own lines cost much of the two cores with
	// blocks this big; info keeps the app's.
	nw := newNetwork(t, spec{flags: func(int) []string { return []string{"--log-level", "info"} }})
	nw.waitHeads(2, 90*time.Second)
	g := generator(t, loadgen.DevKeys[5:], nw.vals[0].geth.RPCURL())
	g.Calldata = loadgen.MaxCalldata
	const perBlock = 45 // 60 Mgas / 1.321 Mgas
	r, err := g.Burst(context.Background(), 4*perBlock, 20, 4*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if r.Pending() != 0 {
		t.Fatalf("%d of %d large transactions never included", r.Pending(), r.Sent)
	}
	t.Logf("MEASURED %d large transactions included in %d blocks, %.1f MB/s, p50 %s p99 %s", r.Included, r.Blocks, r.MBPerSec(), r.Percentile(50), r.Percentile(99))
	nw.checkSameChain()
	// From the chain's head, not the lowest validator's: one still
	// applying the last full block would make the next heights look fast.
	var head uint64
	for _, v := range nw.vals {
		head = max(head, mustHead(t, v))
	}
	begin := time.Now()
	nw.waitHeads(head+5, 30*time.Second)
	t.Logf("MEASURED 5 heights after the full blocks in %.1f s (timeout_commit %s)", time.Since(begin).Seconds(), testTimeoutCommit)
	for _, v := range nw.vals {
		if full := fullBlocks(t, v); len(full) < 3 {
			t.Errorf("validator-%d's geth holds %d blocks filled to 95%% of the gas limit, want 3 or more", v.i, len(full))
		}
	}
	full := fullBlocks(t, nw.vals[0])
	rounds := nw.decidingRounds(int64(nw.checkSameChain()))
	t.Logf("MEASURED heights by the round that decided them: %v; full blocks: %v", byRound(rounds, nil), byRound(rounds, func(h int64) bool { return full[h] }))
}

// fullBlocks returns the heights of v's chain whose block is filled to 95%
// of the gas limit (execution block n is height n's).
func fullBlocks(t testing.TB, v *validator) map[int64]bool {
	t.Helper()
	full := map[int64]bool{}
	for i, s := range blockSizes(t, v.eth) {
		if s.gasUsed*100 >= s.gasLimit*95 {
			full[int64(i+1)] = true
		}
	}
	return full
}

// A burst of blob transactions (3 blobs each, Osaka cell proofs) sent to
// one validator's geth is decided in blocks of up to the schedule's 9
// blobs, whoever proposes: the sidecars reach the proposers' geths through
// geth's own pool gossip, never through CometBFT (the README's data
// availability policy). Every validator's geth executes the blocks from
// their versioned hashes alone and holds the same chain.
func TestBlobBurstIsDecided(t *testing.T) {
	nw := newNetwork(t, spec{})
	nw.waitHeads(2, 90*time.Second)
	g := generator(t, loadgen.DevKeys[5:], nw.vals[0].geth.RPCURL())
	g.Blobs = 3
	r, err := g.Burst(context.Background(), 12, 3, 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if r.Pending() != 0 {
		t.Fatalf("%d of %d blob transactions never included", r.Pending(), r.Sent)
	}
	t.Logf("MEASURED 12 blob transactions (36 blobs) included in %d blocks, p50 %s p99 %s", r.Blocks, r.Percentile(50), r.Percentile(99))
	// The generator watched validator-0's geth: the others may still be
	// applying the last blob block.
	var head uint64
	for _, v := range nw.vals {
		head = max(head, mustHead(t, v))
	}
	nw.waitHeads(head, 30*time.Second)
	nw.checkSameChain()
	for _, v := range nw.vals {
		blobs, most := 0, 0
		for _, s := range blockSizes(t, v.eth) {
			if s.blobs > 9 {
				t.Errorf("validator-%d's geth holds a block of %d blobs, the schedule's maximum is 9", v.i, s.blobs)
			}
			blobs, most = blobs+s.blobs, max(most, s.blobs)
		}
		if blobs != 36 || most < 6 {
			t.Errorf("validator-%d's geth holds %d blobs, at most %d in a block; want 36, and blocks of 6 or more", v.i, blobs, most)
		}
	}
}

// generator is a load generator on rpcURL sending from keys (the tests'
// own senders use the first dev accounts, the benchmarks all ten).
func generator(t testing.TB, keys []string, rpcURL string) *loadgen.Generator {
	t.Helper()
	parsed, err := loadgen.ParseKeys(keys)
	if err != nil {
		t.Fatal(err)
	}
	g, err := loadgen.New(context.Background(), rpcURL, parsed)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	return g
}

// blockSize is what a block carries.
type blockSize struct {
	txs, blobs        int
	gasUsed, gasLimit uint64
}

// blockSizes returns the size of every block of eth's chain but genesis.
func blockSizes(t testing.TB, eth *ethclient.Client) []blockSize {
	t.Helper()
	ctx := context.Background()
	head, err := eth.BlockNumber(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var sizes []blockSize
	for n := uint64(1); n <= head; n++ {
		b, err := eth.BlockByNumber(ctx, new(big.Int).SetUint64(n))
		if err != nil {
			t.Fatal(err)
		}
		s := blockSize{txs: len(b.Transactions()), gasUsed: b.GasUsed(), gasLimit: b.GasLimit()}
		for _, tx := range b.Transactions() {
			s.blobs += len(tx.BlobHashes())
		}
		sizes = append(sizes, s)
	}
	return sizes
}
