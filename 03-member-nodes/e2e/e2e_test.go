package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/accounts/keystore"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/crypto/kzg4844"
	"github.com/holiman/uint256"

	"github.com/geth-consensus/tutorial/devnet"

	"github.com/geth-consensus/tutorial/03-member-nodes/internal/config"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/loadgen"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/node"
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
	const secret = "b0bb1e5ec2e7000000000000000000000000000000000000000000000000000" // 63 hex digits: one short
	keystoreFile, wrongPassword := filepath.Join(dir, "key.json"), filepath.Join(dir, "password")
	key, err := crypto.HexToECDSA(strings.TrimPrefix(devnet.DevKeys[1], "0x"))
	if err != nil {
		t.Fatal(err)
	}
	encrypted, err := keystore.EncryptKey(&keystore.Key{Address: crypto.PubkeyToAddress(key.PublicKey), PrivateKey: key}, "right", 2, 1)
	if err != nil {
		t.Fatal(err)
	}
	for path, content := range map[string][]byte{keystoreFile: encrypted, wrongPassword: []byte("xyzzy-not-it-but-long-enough-to-check\n")} {
		if err := os.WriteFile(path, content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name   string
		args   []string
		env    []string
		want   []string
		hidden string // must not appear in the output
	}{
		{"flags", []string{"--eth-client-url", "localhost:8551", "--block-time", "-1s", "--max-idle", "-2s", "--mode", "fast",
			"--leaders", "0x12", "--lease-ttl", "2s", "--lease-renew", "1s", "--postgres-url", "localhost:5432"}, nil,
			[]string{"--eth-client-url", "--block-time", "--max-idle", "--mode", "--leaders", "--lease-renew", "--postgres-url"}, ""},
		{"env", nil, []string{"BUILD_WAIT=-5ms", "BLOCK_TIME=soon"}, []string{"--build-wait -5ms", `BLOCK_TIME="soon"`}, ""},
		{"malformed jwt", []string{"--jwt-secret", "0x1234"}, nil, []string{"jwt secret"}, ""},
		{"jwt secret one digit short", []string{"--jwt-secret", secret}, nil, []string{"jwt secret", "not shown"}, secret},
		{"jwt secret quoted, from the environment", nil, []string{`JWT_SECRET="` + secret + `0"`}, []string{"jwt secret", "not shown"}, secret},
		{"keystore without its password file", []string{"--signer-keystore", dir + "/key.json"}, nil, []string{"--signer-password-file"}, ""},
		{"keystore with a wrong password", []string{"--jwt-secret", mustFindUp(t, "jwt.hex"), "--genesis", mustFindUp(t, "genesis.json"),
			"--signer-keystore", keystoreFile, "--signer-password-file", wrongPassword}, nil, []string{"signer keystore", keystoreFile}, "xyzzy-not-it"},
		{"signer key one digit short", []string{"--jwt-secret", mustFindUp(t, "jwt.hex"), "--genesis", mustFindUp(t, "genesis.json"),
			"--signer-key", "0X" + secret}, nil, []string{"signer key", "not shown"}, secret},
		{"malformed genesis", []string{"--jwt-secret", mustFindUp(t, "jwt.hex"), "--genesis", malformed}, nil, []string{malformed}, ""},
		{"malformed signer key", []string{"--jwt-secret", mustFindUp(t, "jwt.hex"), "--genesis", mustFindUp(t, "genesis.json"),
			"--signer-key", "0xnothex"}, nil, []string{"signer key"}, ""},
		{"signer not a listed leader", []string{"--jwt-secret", mustFindUp(t, "jwt.hex"), "--genesis", mustFindUp(t, "genesis.json"),
			"--leaders", "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"}, nil, []string{"0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266", "--leaders does not list"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(bin, append(tc.args, "--health-addr", "127.0.0.1:0")...)
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
			if tc.hidden != "" && strings.Contains(string(out), tc.hidden[2:min(60, len(tc.hidden))]) {
				t.Errorf("output shows the secret:\n%s", out)
			}
		})
	}
}

// A store whose blocks differ from geth's at the same height: the node
// refuses to run and names the block, rather than forking or overwriting.
func TestConflictingStoreRefusesToStart(t *testing.T) {
	h := newHarnessOn(t, devnet.Config{GethNodes: 1, Redis: true, Postgres: 2}, func(c *config.Config) {
		c.BlockMode, c.MaxIdle, c.MaxDrift = "on-demand", 5*time.Millisecond, time.Hour
	})
	firstStore := h.cfg.PostgresURL
	h.startNode()
	h.waitHead(5, 20*time.Second)
	if err := h.stopNode(); err != nil {
		t.Fatal(err)
	}
	// Another CL builds a different chain on a wiped geth.
	h.wipeGeth()
	h.cfg.PostgresURL = h.net.Postgres[1].URL()
	h.startNode()
	h.waitHead(20, 20*time.Second)
	if err := h.stopNode(); err != nil {
		t.Fatal(err)
	}
	want, err := h.gethHead()
	if err != nil {
		t.Fatal(err)
	}
	h.cfg.PostgresURL = firstStore
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

// A stream of transfers makes an on-demand leader busy: it stops listening
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
		t.Errorf("gethcl_busy_streams_total %v after 2,000 transfers: the leader never went busy", n)
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
