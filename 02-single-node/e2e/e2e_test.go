package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto/kzg4844"
	"github.com/holiman/uint256"

	"github.com/geth-consensus/tutorial/devnet"

	"github.com/geth-consensus/tutorial/02-single-node/internal/config"
	"github.com/geth-consensus/tutorial/02-single-node/internal/loadgen"
	"github.com/geth-consensus/tutorial/02-single-node/internal/node"
)

var sink = common.HexToAddress("0x000000000000000000000000000000000000dEaD")

func TestBlockTimeMode(t *testing.T) {
	h := newHarness(t, func(c *config.Config) { c.BlockTime = 500 * time.Millisecond })
	h.startNode()
	h.waitHead(2, 10*time.Second)
	start, _ := h.gethHead()
	begin := time.Now()
	h.waitHead(start+6, 10*time.Second)
	// Six blocks at 500 ms take about 3 s; the bound only catches a mode
	// that ignores the block time (far faster) or stalls (far slower).
	if d := time.Since(begin); d < 2*time.Second || d > 15*time.Second {
		t.Fatalf("6 blocks at --block-time 500ms took %s", d)
	}
	if err := h.stopNode(); err != nil {
		t.Fatal(err)
	}
	h.checkStoreMatches(h.chain())
}

func TestIncludesTransferAndBlobTransaction(t *testing.T) {
	h := newHarness(t, func(c *config.Config) { c.BlockTime = 300 * time.Millisecond })
	h.startNode()
	ctx := context.Background()
	transfer, err := devnet.SendTransfer(ctx, h.eth, 1, sink)
	if err != nil {
		t.Fatal(err)
	}
	blob := sendBlobTx(t, h, 2)
	h.receipt(transfer, 10*time.Second)
	r := h.receipt(blob, 10*time.Second)
	if r.BlobGasUsed == 0 {
		t.Fatal("blob transaction included without blob gas")
	}
	h.waitHead(r.BlockNumber.Uint64()+3, 10*time.Second) // and the chain goes on
	if err := h.stopNode(); err != nil {
		t.Fatal(err)
	}
	h.checkStoreMatches(h.chain())
}

func sendBlobTx(t *testing.T, h *harness, keyIndex int) *types.Transaction {
	t.Helper()
	var blob kzg4844.Blob
	copy(blob[1:], "stage 2 blob")
	commitment, err := kzg4844.BlobToCommitment(&blob)
	if err != nil {
		t.Fatal(err)
	}
	proofs, err := kzg4844.ComputeCellProofs(&blob)
	if err != nil {
		t.Fatal(err)
	}
	sidecar := types.NewBlobTxSidecar(types.BlobSidecarVersion1, []kzg4844.Blob{blob}, []kzg4844.Commitment{commitment}, proofs)
	key, from := devnet.DevKey(keyIndex)
	nonce, err := h.eth.PendingNonceAt(context.Background(), from)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := types.SignNewTx(key, types.LatestSignerForChainID(big.NewInt(1337)), &types.BlobTx{
		ChainID: uint256.NewInt(1337), Nonce: nonce, GasTipCap: uint256.NewInt(1e9), GasFeeCap: uint256.NewInt(50e9),
		Gas: 21000, To: sink, BlobFeeCap: uint256.NewInt(1e9), BlobHashes: sidecar.BlobHashes(), Sidecar: sidecar,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.eth.SendTransaction(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
	return tx
}

func TestOnDemandMakesNoEmptyBlocks(t *testing.T) {
	h := newHarness(t, func(c *config.Config) { c.BlockMode = "on-demand" })
	h.startNode()
	h.eventually(10*time.Second, func() error { return readyErr(h) })

	// Idle: the head must not move. Watching for a while is the point here.
	idle := time.After(1500 * time.Millisecond)
watch:
	for {
		select {
		case <-idle:
			break watch
		case <-time.After(50 * time.Millisecond):
			if head, _ := h.gethHead(); head != 0 {
				t.Fatalf("on-demand node made block %d with nothing pending", head)
			}
		}
	}

	sender, err := devnet.NewSender(context.Background(), h.eth, 3)
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		tx, err := sender.Transfer(context.Background(), sink)
		if err != nil {
			t.Fatal(err)
		}
		h.receipt(tx, 5*time.Second)
	}
	for i, n := range h.blockTxCounts() {
		if n == 0 {
			t.Errorf("block %d is empty", i+1)
		}
	}
}

func TestOnDemandHeartbeat(t *testing.T) {
	h := newHarness(t, func(c *config.Config) { c.BlockMode, c.MaxIdle = "on-demand", 300*time.Millisecond })
	h.startNode()
	h.waitHead(3, 10*time.Second)
	for i, n := range h.blockTxCounts() {
		if n != 0 {
			t.Errorf("heartbeat block %d has %d transactions; nothing was sent", i+1, n)
		}
	}
}

// SIGKILL geth mid-run and restart it: production resumes on the same chain.
func TestGethKilledAndRestarted(t *testing.T) {
	h := newHarness(t, func(c *config.Config) {
		c.BlockMode, c.MaxIdle, c.MaxDrift = "on-demand", 10*time.Millisecond, time.Hour
	})
	h.startNode()
	h.crashGeth(30)
}

// SIGKILL geth and wipe its datadir: the CL replays every block, and the new
// geth has the same hashes.
func TestGethWipedIsReplayed(t *testing.T) {
	h := newHarness(t, func(c *config.Config) {
		c.BlockMode, c.MaxIdle, c.MaxDrift = "on-demand", 10*time.Millisecond, time.Hour
	})
	h.startNode()
	sender, err := devnet.NewSender(context.Background(), h.eth, 4)
	if err != nil {
		t.Fatal(err)
	}
	var last *types.Transaction
	for range 20 {
		if last, err = sender.Transfer(context.Background(), sink); err != nil {
			t.Fatal(err)
		}
	}
	h.receipt(last, 10*time.Second)
	h.waitHead(100, 30*time.Second)
	if err := h.stopNode(); err != nil {
		t.Fatal(err)
	}
	before := h.chain()
	h.wipeGeth()
	if head, _ := h.gethHead(); head != 0 {
		t.Fatalf("wiped geth starts at %d", head)
	}
	h.startNode()
	h.waitHead(uint64(len(before)), 30*time.Second)
	if err := h.stopNode(); err != nil {
		t.Fatal(err)
	}
	after := h.chain()
	for n, hash := range before {
		if after[n] != hash {
			t.Fatalf("block %d after replay is %s, was %s", n, after[n], hash)
		}
	}
	h.receipt(last, time.Second)
	h.checkStoreMatches(after)
}

// SIGKILL the CL process and restart it: it continues from its persisted head.
func TestNodeKilledAndRestarted(t *testing.T) {
	h := newHarness(t, func(c *config.Config) {
		c.BlockMode, c.MaxIdle, c.MaxDrift = "on-demand", 5*time.Millisecond, time.Hour
	})
	proc := h.startProcess()
	for round := range 3 {
		h.waitHead(uint64(20*(round+1)), 30*time.Second)
		if err := proc.Kill(); err != nil {
			t.Fatal(err)
		}
		killedAt, _ := h.gethHead()
		h.startProcess()
		h.waitHead(killedAt+10, 30*time.Second)
	}
	if err := proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited, exitErr := proc.Exited()
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		t.Fatal("node did not exit on SIGTERM")
	}
	if err := exitErr(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, proc.TailLog(3000))
	}
	head := h.checkStoreMatches(h.chain())
	if gethHead, _ := h.gethHead(); gethHead != head.Number {
		t.Fatalf("after a graceful stop geth's head is %d, the store's %d", gethHead, head.Number)
	}
}

// With geth down at start-up the node waits, says why, and produces once
// geth is back.
func TestStartsBeforeGeth(t *testing.T) {
	h := newHarness(t, nil)
	if err := h.geth.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	h.startNode()
	h.waitUnreachable()
	if code, _ := h.get("/healthz"); code != 200 {
		t.Fatalf("healthz %d while geth is down: the process is alive", code)
	}
	if err := h.geth.Start(); err != nil {
		t.Fatal(err)
	}
	h.waitHead(2, 20*time.Second)
	h.eventually(5*time.Second, func() error { return readyErr(h) })
	_, metrics := h.get("/metrics")
	for _, m := range []string{"gethcl_blocks_produced_total", `gethcl_errors_total{kind="unreachable"}`, "gethcl_engine_call_duration_seconds_bucket"} {
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
}

// Over a ws:// Engine API URL the CL behaves as over HTTP: it starts before
// geth and waits for it, and after geth is SIGKILLed and restarted its
// client connects again by itself and production resumes on the same chain.
func TestOverWebSocket(t *testing.T) {
	h := newHarness(t, func(c *config.Config) {
		c.EngineURL = "ws" + strings.TrimPrefix(c.EngineURL, "http")
		c.BlockMode, c.MaxIdle, c.MaxDrift = "on-demand", 10*time.Millisecond, time.Hour
	})
	if err := h.geth.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	h.startNode()
	h.waitUnreachable()
	if err := h.geth.Start(); err != nil {
		t.Fatal(err)
	}
	h.crashGeth(20)
}

// A wrong secret over ws:// is refused in the handshake, where geth gives no
// reason: the error still names the secret (and the clock).
func TestWrongJWTSecretOverWebSocket(t *testing.T) {
	h := newHarness(t, func(c *config.Config) {
		c.EngineURL = "ws" + strings.TrimPrefix(c.EngineURL, "http")
		c.JWTSecret = "0x" + strings.Repeat("11", 32)
	})
	h.startNode()
	h.wantWrongSecretStop()
}

func TestWrongJWTSecretStopsWithClearError(t *testing.T) {
	h := newHarness(t, func(c *config.Config) { c.JWTSecret = "0x" + strings.Repeat("11", 32) })
	h.startNode()
	h.wantWrongSecretStop()
}

func readyErr(h *harness) error {
	if code, body := h.get("/readyz"); code != 200 {
		return fmt.Errorf("readyz %d %s", code, body)
	}
	return nil
}

// Bad flags, environment and files: the binary exits 1 with an error that
// names each problem.
func TestBadInputIsNamed(t *testing.T) {
	devnet.SkipIfShort(t) // runs the built binary
	bin := nodeBinary(t)
	dir := t.TempDir()
	malformed := dir + "/genesis.json"
	if err := os.WriteFile(malformed, []byte(`{"config": {"chainId": 1337,`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		want []string
	}{
		{"flags", []string{"--eth-client-url", "localhost:8551", "--block-time", "-1s", "--max-idle", "-2s", "--block-mode", "fast"}, nil,
			[]string{"--eth-client-url", "--block-time", "--max-idle", "--block-mode"}},
		{"env", nil, []string{"BUILD_WAIT=-5ms", "BLOCK_TIME=soon"}, []string{"--build-wait -5ms", `BLOCK_TIME="soon"`}},
		{"malformed jwt", []string{"--jwt-secret", "0x1234"}, nil, []string{"jwt secret"}},
		{"malformed genesis", []string{"--jwt-secret", mustFindUp(t, "jwt.hex"), "--genesis", malformed}, nil, []string{malformed}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(bin, append(tc.args, "--data-dir", dir, "--health-addr", "127.0.0.1:0")...)
			cmd.Env = append(os.Environ(), tc.env...)
			out, err := cmd.CombinedOutput()
			if code := cmd.ProcessState.ExitCode(); err == nil || code != 1 {
				t.Fatalf("exit %d (%v), want 1\n%s", code, err, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("output does not name %q:\n%s", w, out)
				}
			}
		})
	}
}

// A store whose blocks differ from geth's at the same height: the node
// refuses to run and names the block, rather than forking or overwriting.
func TestConflictingStoreRefusesToStart(t *testing.T) {
	h := newHarness(t, func(c *config.Config) {
		c.BlockMode, c.MaxIdle, c.MaxDrift = "on-demand", 5*time.Millisecond, time.Hour
	})
	firstStore := h.cfg.DataDir
	h.startNode()
	h.waitHead(5, 20*time.Second)
	if err := h.stopNode(); err != nil {
		t.Fatal(err)
	}
	// Another CL builds a different chain on a wiped geth.
	h.wipeGeth()
	h.cfg.DataDir = t.TempDir()
	h.startNode()
	h.waitHead(20, 20*time.Second)
	if err := h.stopNode(); err != nil {
		t.Fatal(err)
	}
	want, err := h.gethHead()
	if err != nil {
		t.Fatal(err)
	}
	h.cfg.DataDir = firstStore
	h.startNode()
	select {
	case err := <-h.stopped:
		h.stop = nil
		if !errors.Is(err, node.ErrConflict) || !strings.Contains(err.Error(), "in the store but") {
			t.Fatalf("err = %v; want ErrConflict naming the block", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("node ran on a store that conflicts with geth")
	}
	if head, _ := h.gethHead(); head != want {
		t.Fatalf("geth's chain was changed: head %d, was %d", head, want)
	}
}

// A stream of transfers makes an on-demand node busy: it stops listening
// to announcements while it builds back to back, and when the stream ends it
// counts what geth would include and listens again. Nothing is left behind,
// and a transfer sent afterwards is announced and included as usual.
func TestOnDemandStreamWithoutAnnouncements(t *testing.T) {
	h := newHarness(t, func(c *config.Config) { c.BlockMode, c.MaxDrift = "on-demand", time.Hour })
	h.startNode()
	h.eventually(10*time.Second, func() error { return readyErr(h) })
	g := h.loadgen()
	r, err := g.Burst(context.Background(), 2000, 200, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if r.Pending() != 0 {
		t.Fatalf("%d of %d transfers never included", r.Pending(), r.Sent)
	}
	if n := h.metric("gethcl_busy_streams_total"); n < 1 {
		t.Errorf("gethcl_busy_streams_total %v after 2,000 transfers: the node never went busy", n)
	}
	h.eventually(10*time.Second, func() error {
		if busy := h.metric("gethcl_busy"); busy != 0 {
			return fmt.Errorf("gethcl_busy %v with nothing sent", busy)
		}
		return nil
	})
	after, err := g.Steady(context.Background(), 20, 500*time.Millisecond, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if after.Pending() != 0 {
		t.Errorf("after the stream, %d of %d transfers never included", after.Pending(), after.Sent)
	}
}

// The load generator users point at their own chain: every transfer it
// sends is found in a block, with a latency, in both modes.
func TestLoadgenMeasuresInclusion(t *testing.T) {
	h := newHarness(t, func(c *config.Config) { c.BlockMode, c.MaxDrift = "on-demand", time.Hour })
	h.startNode()
	g := h.loadgen()
	burst, err := g.Burst(context.Background(), 300, 100, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	steady, err := g.Steady(context.Background(), 50, 2*time.Second, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for name, r := range map[string]loadgen.Result{"burst": burst, "steady": steady} {
		if r.Pending() != 0 || r.Included != r.Sent || r.Blocks == 0 || r.Percentile(50) <= 0 || r.TxPerSec() <= 0 {
			t.Errorf("%s: %+v (p50 %s)", name, r, r.Percentile(50))
		}
		if r.Gas != uint64(r.Included)*21000 {
			t.Errorf("%s: gas %d for %d transfers", name, r.Gas, r.Included)
		}
	}
	if steady.Sent != 100 {
		t.Errorf("steady 50 tx/s for 2 s sent %d", steady.Sent)
	}
}

// Transactions of the largest size geth's pool takes (130,000 bytes of
// calldata, 1.32 Mgas each at the EIP-7623 floor), sent at once, fill four
// consecutive blocks to the gas limit (about 6 MB each); every one is
// included, and the chain keeps its block time afterwards. A node whose
// build wait cannot grow to what geth needs for such a block makes empty
// blocks for ever while they wait in the pool.
func TestFullBlocksOfLargeCalldata(t *testing.T) {
	h := newHarness(t, nil) // block-time mode, 1 s
	h.startNode()
	h.waitHead(1, 10*time.Second)
	g := h.loadgen()
	g.Calldata = loadgen.MaxCalldata
	const perBlock = 45 // 60 Mgas / 1.321 Mgas
	r, err := g.Burst(context.Background(), 4*perBlock, 20, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if r.Pending() != 0 {
		t.Fatalf("%d of %d large transactions never included (%d blocks carried the rest)", r.Pending(), r.Sent, r.Blocks)
	}
	full := 0
	for n, size := range h.blockSizes() {
		if size.gasUsed*100 >= size.gasLimit*95 {
			full++
			t.Logf("block %d: %d txs, %.1f Mgas, %.2f MB", n, size.txs, float64(size.gasUsed)/1e6, float64(size.bytes)/1e6)
		}
	}
	if full < 3 {
		t.Errorf("%d blocks filled to 95%% of the gas limit by %d transactions of %d bytes, want at least 3", full, r.Sent, g.Calldata)
	}
	t.Logf("%d large transactions included in %d blocks, %.1f MB/s, p50 %s p99 %s", r.Included, r.Blocks, r.MBPerSec(), r.Percentile(50), r.Percentile(99))
	// Afterwards, a block a second again: five take about 5 s.
	head, err := h.gethHead()
	if err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	h.waitHead(head+5, 20*time.Second)
	if d := time.Since(begin); d < 3*time.Second || d > 8*time.Second {
		t.Errorf("5 blocks after the large ones took %s at --block-time 1s", d)
	}
	if err := h.stopNode(); err != nil {
		t.Fatal(err)
	}
	h.checkStoreMatches(h.chain())
}

// A burst of blob transactions with Osaka's cell proofs fills blocks up to
// the blob schedule's maximum (9 per block, genesis.json), and every one is
// included with its blobs accounted for.
func TestBlobBurst(t *testing.T) {
	h := newHarness(t, func(c *config.Config) { c.BlockTime = 500 * time.Millisecond })
	h.startNode()
	h.waitHead(1, 10*time.Second)
	g := h.loadgen()
	g.Blobs = 3
	r, err := g.Burst(context.Background(), 12, 3, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if r.Pending() != 0 {
		t.Fatalf("%d of %d blob transactions never included", r.Pending(), r.Sent)
	}
	most := 0
	for n, size := range h.blockSizes() {
		if size.blobs > 9 {
			t.Errorf("block %d carries %d blobs, the schedule's maximum is 9", n, size.blobs)
		}
		most = max(most, size.blobs)
	}
	if most != 9 {
		t.Errorf("the fullest block carries %d blobs; 36 sent at once should fill one to the maximum of 9", most)
	}
	if err := h.stopNode(); err != nil {
		t.Fatal(err)
	}
	h.checkStoreMatches(h.chain())
}
