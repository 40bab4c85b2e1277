// Package e2e tests the single-node CL end to end: real geth processes from
// the devnet library, the CL in-process (node.Main) or as its binary when a
// test must SIGKILL it.
package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/ethclient"

	"github.com/geth-consensus/tutorial/devnet"

	"github.com/geth-consensus/tutorial/02-single-node/internal/config"
	"github.com/geth-consensus/tutorial/02-single-node/internal/loadgen"
	"github.com/geth-consensus/tutorial/02-single-node/internal/node"
	"github.com/geth-consensus/tutorial/02-single-node/internal/state"
)

type harness struct {
	t    testing.TB
	net  *devnet.Network
	geth *devnet.GethNode
	eth  *ethclient.Client
	cfg  config.Config

	logs    *logBuffer         // what the in-process node logged
	stop    context.CancelFunc // in-process node
	stopped chan error
	proc    *devnet.Process // node as a process
}

// newHarness starts one geth and prepares (but does not start) a CL
// configured by mutate.
func newHarness(t testing.TB, mutate func(*config.Config)) *harness {
	t.Helper()
	return newHarnessOn(t, devnet.Config{GethNodes: 1}, mutate)
}

// newHarnessOn is newHarness with a network configuration of the caller's.
func newHarnessOn(t testing.TB, netCfg devnet.Config, mutate func(*config.Config)) *harness {
	t.Helper()
	n := devnet.StartT(t, netCfg)
	g := n.Geth[0]
	eth, err := ethclient.Dial(g.RPCURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eth.Close)
	port, err := devnet.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.EngineURL = g.EngineURL()
	cfg.JWTSecret = mustFindUp(t, "jwt.hex")
	cfg.GenesisPath = mustFindUp(t, "genesis.json")
	cfg.DataDir = t.TempDir()
	cfg.HealthAddr = "127.0.0.1:" + strconv.Itoa(port)
	cfg.LogLevel = "debug"
	if mutate != nil {
		mutate(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, net: n, geth: g, eth: eth, cfg: cfg}
	t.Cleanup(h.stopAll)
	return h
}

func mustFindUp(t testing.TB, name string) string {
	t.Helper()
	p, err := devnet.FindUp(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// startNode runs the CL in this process.
func (h *harness) startNode() {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h.stop, h.stopped = cancel, make(chan error, 1)
	if h.logs == nil {
		h.logs = &logBuffer{}
	}
	log := slog.New(slog.NewTextHandler(io.MultiWriter(testWriter{h.t}, h.logs), &slog.HandlerOptions{Level: slog.LevelDebug}))
	go func() { h.stopped <- node.Main(ctx, h.cfg, log) }()
}

// stopNode cancels the in-process CL and returns what Main returned.
func (h *harness) stopNode() error {
	h.t.Helper()
	h.stop()
	select {
	case err := <-h.stopped:
		h.stop = nil
		return err
	case <-time.After(30 * time.Second):
		h.t.Fatal("node did not stop within 30s")
		return nil
	}
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// nodeBinary builds cmd/main.go once per test run.
func nodeBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "single-node-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "single-node")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/geth-consensus/tutorial/02-single-node/cmd").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// startProcess runs the CL as its own process, configured through flags.
func (h *harness) startProcess() *devnet.Process {
	h.t.Helper()
	if h.proc == nil {
		c := h.cfg
		h.proc = &devnet.Process{
			Name: "single-node", Path: nodeBinary(h.t), LogPath: filepath.Join(h.t.TempDir(), "node.log"),
			Args: []string{"--instance-id", c.InstanceID, "--eth-client-url", c.EngineURL, "--jwt-secret", c.JWTSecret,
				"--genesis", c.GenesisPath, "--data-dir", c.DataDir, "--block-mode", c.BlockMode, "--block-time", c.BlockTime.String(),
				"--max-idle", c.MaxIdle.String(), "--build-wait", c.BuildWait.String(), "--max-drift", c.MaxDrift.String(),
				"--health-addr", c.HealthAddr, "--log-level", c.LogLevel},
		}
	}
	if err := h.proc.Start(); err != nil {
		h.t.Fatal(err)
	}
	return h.proc
}

func (h *harness) stopAll() {
	if h.stop != nil {
		h.stop()
		<-h.stopped
	}
	if h.proc != nil {
		if h.t.Failed() {
			h.t.Logf("--- node log:\n%s", h.proc.TailLog(6000))
		}
		_ = h.proc.Stop(10 * time.Second)
	}
}

// wipeGeth SIGKILLs geth, deletes its datadir, initialises it again from
// genesis and starts it: a replaced disk.
func (h *harness) wipeGeth() {
	h.t.Helper()
	ctx := context.Background()
	for _, step := range []func() error{h.geth.Kill, func() error { return h.geth.Wipe(ctx) }, h.geth.Start,
		func() error { return h.geth.WaitReady(ctx) }} {
		if err := step(); err != nil {
			h.t.Fatal(err)
		}
	}
}

// gethHead returns geth's head number, or an error while it is down.
func (h *harness) gethHead() (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return h.eth.BlockNumber(ctx)
}

// waitHead polls until geth's head reaches n.
func (h *harness) waitHead(n uint64, timeout time.Duration) {
	h.t.Helper()
	h.eventually(timeout, func() error {
		head, err := h.gethHead()
		if err == nil && head < n {
			err = fmt.Errorf("head %d, want %d", head, n)
		}
		return err
	})
}

// eventually polls cond every 20 ms until it returns nil or timeout passes.
func (h *harness) eventually(timeout time.Duration, cond func() error) {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("not within %s: %v", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// chain returns geth's canonical hashes 0..head and checks that every block's
// parent is the block below.
func (h *harness) chain() []common.Hash {
	h.t.Helper()
	ctx := context.Background()
	head, err := h.eth.HeaderByNumber(ctx, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	hashes := make([]common.Hash, head.Number.Uint64()+1)
	for n := range hashes {
		hd, err := h.eth.HeaderByNumber(ctx, big.NewInt(int64(n)))
		if err != nil {
			h.t.Fatalf("block %d: %v", n, err)
		}
		hashes[n] = hd.Hash()
		if n > 0 && hd.ParentHash != hashes[n-1] {
			h.t.Fatalf("block %d's parent is %s, block %d is %s", n, hd.ParentHash, n-1, hashes[n-1])
		}
	}
	return hashes
}

// checkStoreMatches opens the (stopped) CL's store and checks that its head
// and every stored payload are on geth's chain.
func (h *harness) checkStoreMatches(gethChain []common.Hash) state.Head {
	h.t.Helper()
	st, err := state.Open(filepath.Join(h.cfg.DataDir, h.cfg.InstanceID))
	if err != nil {
		h.t.Fatal(err)
	}
	defer st.Close()
	head, ok, err := st.Head()
	if err != nil || !ok {
		h.t.Fatalf("store head: %v %v", ok, err)
	}
	if head.Number >= uint64(len(gethChain)) || gethChain[head.Number] != head.Hash {
		h.t.Fatalf("store head %d %s is not on geth's chain (geth head %d)", head.Number, head.Hash, len(gethChain)-1)
	}
	for n := uint64(1); n <= head.Number; n++ {
		p, err := st.Payload(n)
		if err != nil {
			h.t.Fatalf("store lacks block %d: %v", n, err)
		}
		if p.ExecutionPayload.BlockHash != gethChain[n] {
			h.t.Fatalf("block %d: store %s, geth %s", n, p.ExecutionPayload.BlockHash, gethChain[n])
		}
	}
	return head
}

// blockTxCounts returns the transaction count of blocks 1..head.
func (h *harness) blockTxCounts() []int {
	h.t.Helper()
	var counts []int
	for n, hash := range h.chain() {
		if n == 0 {
			continue
		}
		b, err := h.eth.BlockByHash(context.Background(), hash)
		if err != nil {
			h.t.Fatal(err)
		}
		counts = append(counts, len(b.Transactions()))
	}
	return counts
}

// blockSize is what a block carries.
type blockSize struct {
	txs, blobs        int
	gasUsed, gasLimit uint64
	bytes             uint64 // RLP-encoded block
}

// blockSizes returns the size of blocks 1..head, by number.
func (h *harness) blockSizes() map[uint64]blockSize {
	h.t.Helper()
	sizes := map[uint64]blockSize{}
	for n, hash := range h.chain()[1:] {
		b, err := h.eth.BlockByHash(context.Background(), hash)
		if err != nil {
			h.t.Fatal(err)
		}
		s := blockSize{txs: len(b.Transactions()), gasUsed: b.GasUsed(), gasLimit: b.GasLimit(), bytes: b.Size()}
		for _, tx := range b.Transactions() {
			s.blobs += len(tx.BlobHashes())
		}
		sizes[uint64(n+1)] = s
	}
	return sizes
}

func (h *harness) receipt(tx *types.Transaction, timeout time.Duration) *types.Receipt {
	h.t.Helper()
	var r *types.Receipt
	h.eventually(timeout, func() (err error) {
		r, err = h.eth.TransactionReceipt(context.Background(), tx.Hash())
		return err
	})
	if r.Status != types.ReceiptStatusSuccessful {
		h.t.Fatalf("tx %s failed", tx.Hash())
	}
	return r
}

// get fetches a health endpoint.
func (h *harness) get(path string) (int, string) {
	resp, err := http.Get("http://" + h.cfg.HealthAddr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metric reads one unlabelled metric from /metrics; -1 when it is absent.
func (h *harness) metric(name string) float64 {
	_, body := h.get("/metrics")
	for _, line := range strings.Split(body, "\n") {
		if value, ok := strings.CutPrefix(line, name+" "); ok {
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				h.t.Fatalf("metric %s: %v", name, err)
			}
			return v
		}
	}
	return -1
}

// waitUnreachable waits until /readyz says geth cannot be reached.
func (h *harness) waitUnreachable() {
	h.t.Helper()
	h.eventually(10*time.Second, func() error {
		if code, body := h.get("/readyz"); code != 503 || !strings.Contains(body, "unreachable") {
			return fmt.Errorf("readyz %d %s", code, body)
		}
		return nil
	})
}

// crashGeth SIGKILLs geth once the head is at least n and restarts it;
// production must resume on the same chain: 20 more blocks, none of the
// earlier ones changed, and the store agreeing with geth. It stops the node.
func (h *harness) crashGeth(n uint64) {
	h.t.Helper()
	h.waitHead(n, 20*time.Second)
	before := h.chain()
	if err := h.geth.Kill(); err != nil {
		h.t.Fatal(err)
	}
	h.waitUnreachable()
	if err := h.geth.Start(); err != nil {
		h.t.Fatal(err)
	}
	h.waitHead(uint64(len(before))+20, 30*time.Second)
	if err := h.stopNode(); err != nil {
		h.t.Fatal(err)
	}
	after := h.chain()
	for i, hash := range before {
		if after[i] != hash {
			h.t.Fatalf("block %d changed across the geth crash: %s → %s", i, hash, after[i])
		}
	}
	h.checkStoreMatches(after)
}

// wantWrongSecretStop waits for the node to stop with the wrong-secret
// explanation.
func (h *harness) wantWrongSecretStop() {
	h.t.Helper()
	select {
	case err := <-h.stopped:
		h.stop = nil
		if err == nil || !strings.Contains(err.Error(), "not the one geth was started with") {
			h.t.Fatalf("err = %v; want the wrong-secret explanation", err)
		}
	case <-time.After(20 * time.Second):
		h.t.Fatal("node kept running with a wrong JWT secret")
	}
}

// loadgen returns a load generator on geth's RPC, sending from dev accounts
// 5-9 (the tests' own senders use the first ones).
func (h *harness) loadgen() *loadgen.Generator {
	keys, err := loadgen.ParseKeys(loadgen.DevKeys[5:])
	if err != nil {
		h.t.Fatal(err)
	}
	g, err := loadgen.New(context.Background(), h.geth.RPCURL(), keys)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(g.Close)
	return g
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}

// logBuffer keeps what a node logged, for tests that check a log line.
type logBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}
