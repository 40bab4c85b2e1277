// Package e2e tests the stage-3 CL end to end: real geth, Redis and
// PostgreSQL processes from the devnet library, the CL in-process
// (node.Main) or as its binary when a test must SIGKILL or SIGSTOP it.
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
	"github.com/redis/go-redis/v9"

	"github.com/geth-consensus/tutorial/devnet"

	"github.com/geth-consensus/tutorial/03-member-nodes/internal/config"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/loadgen"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/node"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/state"
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

// newHarness starts one geth, Redis and PostgreSQL and prepares (but does
// not start) a lone leader candidate configured by mutate.
func newHarness(t testing.TB, mutate func(*config.Config)) *harness {
	t.Helper()
	return newHarnessOn(t, devnet.Config{GethNodes: 1, Redis: true, Postgres: 1}, mutate)
}

// newHarnessOn is newHarness with a network configuration of the caller's.
func newHarnessOn(t testing.TB, netCfg devnet.Config, mutate func(*config.Config)) *harness {
	t.Helper()
	netCfg.RedisPassword = redisPassword
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
	cfg.RedisURL = n.Redis.URL()
	cfg.PostgresURL = n.Postgres[0].URL()
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
		dir, err := os.MkdirTemp("", "member-nodes-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "member-nodes")
		// -tags faults: the hooks of the fault tests (internal/state/fault_on.go).
		out, err := exec.Command("go", "build", "-tags", "faults", "-o", binPath, "github.com/geth-consensus/tutorial/03-member-nodes/cmd").CombinedOutput()
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
		h.proc = nodeProcess(h.t, h.cfg)
	}
	if err := h.proc.Start(); err != nil {
		h.t.Fatal(err)
	}
	return h.proc
}

// nodeProcess describes the CL binary run with cfg, as flags.
func nodeProcess(t testing.TB, c config.Config) *devnet.Process {
	return &devnet.Process{
		Name: c.InstanceID, Path: nodeBinary(t), LogPath: filepath.Join(t.TempDir(), c.InstanceID+".log"),
		Args: []string{"--instance-id", c.InstanceID, "--mode", c.Mode, "--eth-client-url", c.EngineURL, "--jwt-secret", c.JWTSecret,
			"--genesis", c.GenesisPath, "--block-mode", c.BlockMode, "--block-time", c.BlockTime.String(),
			"--max-idle", c.MaxIdle.String(), "--build-wait", c.BuildWait.String(), "--max-drift", c.MaxDrift.String(),
			"--health-addr", c.HealthAddr, "--cluster-id", c.ClusterID, "--postgres-url", c.PostgresURL,
			"--signer-key", c.SignerKey, "--leaders", strings.Join(c.Leaders, ","),
			"--lease-ttl", c.LeaseTTL.String(), "--lease-renew", c.LeaseRenew.String(), "--log-level", c.LogLevel,
			"--adopt-chain=" + strconv.FormatBool(c.AdoptChain),
			"--cosigners", strings.Join(c.Cosigners, ","), "--threshold", strconv.Itoa(c.Threshold), "--cosign-timeout", c.CosignTimeout.String()},
		// From the environment, as the README advises: a command line
		// (and the devnet's log of it) shows every user the password.
		Env: []string{"REDIS_URL=" + c.RedisURL},
	}
}

// redisPassword is what the tests' Redis requires, as a shared deployment's
// would: every node connects with --redis-url.
const redisPassword = "devnet-redis-secret"

// redisClient connects to the network's Redis as the nodes do.
func redisClient(t testing.TB, r *devnet.Redis) *redis.Client {
	t.Helper()
	o, err := redis.ParseURL(r.URL())
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(o)
	t.Cleanup(func() { rdb.Close() })
	return rdb
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
	eventually(h.t, timeout, cond)
}

func eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %v", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// chain returns geth's canonical hashes 0..head (see chainOf).
func (h *harness) chain() []common.Hash {
	h.t.Helper()
	return chainOf(h.t, h.eth)
}

// chainOf returns a geth's canonical hashes 0..head, checking that every
// block's parent is the block below.
func chainOf(t testing.TB, eth *ethclient.Client) []common.Hash {
	t.Helper()
	ctx := context.Background()
	head, err := eth.HeaderByNumber(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	hashes := make([]common.Hash, head.Number.Uint64()+1)
	for n := range hashes {
		hd, err := eth.HeaderByNumber(ctx, big.NewInt(int64(n)))
		if err != nil {
			t.Fatalf("block %d: %v", n, err)
		}
		hashes[n] = hd.Hash()
		if n > 0 && hd.ParentHash != hashes[n-1] {
			t.Fatalf("block %d's parent is %s, block %d is %s", n, hd.ParentHash, n-1, hashes[n-1])
		}
	}
	return hashes
}

// checkStoreMatches checks that the CL's store head and every stored
// block are on geth's chain.
func (h *harness) checkStoreMatches(gethChain []common.Hash) state.Head {
	h.t.Helper()
	head, _ := checkStore(h.t, h.cfg.PostgresURL, gethChain)
	return head
}

// blockSize is what a block carries.
type blockSize struct {
	txs, blobs        int
	gasUsed, gasLimit uint64
	bytes             uint64 // RLP-encoded block
}

// blockSizes returns the size of each block of chain but genesis, by number.
func blockSizes(t testing.TB, eth *ethclient.Client, chain []common.Hash) map[uint64]blockSize {
	t.Helper()
	sizes := map[uint64]blockSize{}
	for n, hash := range chain[1:] {
		b, err := eth.BlockByHash(context.Background(), hash)
		if err != nil {
			t.Fatal(err)
		}
		s := blockSize{txs: len(b.Transactions()), gasUsed: b.GasUsed(), gasLimit: b.GasLimit(), bytes: b.Size()}
		for _, tx := range b.Transactions() {
			s.blobs += len(tx.BlobHashes())
		}
		sizes[uint64(n+1)] = s
	}
	return sizes
}

// openStore opens the block store at url for the test's duration.
func openStore(t testing.TB, url string) *state.Manager {
	t.Helper()
	st, err := state.Open(context.Background(), url, state.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return st
}

// checkStore checks the store at url against a geth chain: its head is on
// the chain and it holds every block up to it, each the chain's. It returns
// the head and the blocks above genesis.
func checkStore(t testing.TB, url string, gethChain []common.Hash) (state.Head, []*state.Block) {
	t.Helper()
	ctx := context.Background()
	st := openStore(t, url)
	head, err := st.Head(ctx)
	if err != nil {
		t.Fatalf("store head: %v", err)
	}
	if head.Number >= uint64(len(gethChain)) || gethChain[head.Number] != head.Hash {
		t.Fatalf("store head %d %s is not on geth's chain (geth head %d)", head.Number, head.Hash, len(gethChain)-1)
	}
	blocks, err := st.BlocksAfter(ctx, 0, int(head.Number)+1)
	if err != nil {
		t.Fatal(err)
	}
	if uint64(len(blocks)) != head.Number {
		t.Fatalf("store holds %d blocks above genesis, head is %d", len(blocks), head.Number)
	}
	for i, b := range blocks {
		if n := uint64(i + 1); b.Number != n || b.Hash != gethChain[n] || b.Payload.ExecutionPayload.BlockHash != b.Hash {
			t.Fatalf("block %d: store has %d %s, geth %s", n, b.Number, b.Hash, gethChain[n])
		}
	}
	return head, blocks
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

// get fetches a path of the node's HTTP API.
func (h *harness) get(path string) (int, string) { return httpGet(h.cfg.HealthAddr, path) }

// httpGet fetches http://addr/path; a node that does not answer within a
// second gives status 0 and the error.
func httpGet(addr, path string) (int, string) {
	client := http.Client{Timeout: time.Second}
	resp, err := client.Get("http://" + addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metric reads one sample from the node's /metrics.
func (h *harness) metric(name string) float64 { return metricAt(h.cfg.HealthAddr, name) }

// metricAt reads one sample from /metrics at addr (0 when absent, -1 when
// the node does not answer).
func metricAt(addr, name string) float64 {
	code, body := httpGet(addr, "/metrics")
	if code != http.StatusOK {
		return -1
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
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
