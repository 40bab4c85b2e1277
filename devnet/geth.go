package devnet

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/p2p/enode"
)

// GethNode is one geth process with its datadir and ports. Its HTTP RPC also
// serves WebSocket on the same port (for subscriptions such as
// newPendingTransactions); the Engine API listens on AuthPort behind the JWT
// secret.
type GethNode struct {
	*Process
	DataDir  string
	HTTPPort int
	AuthPort int
	P2PPort  int
	// MetricsPort serves geth's metrics (--metrics) for Prometheus at
	// /debug/metrics/prometheus.
	MetricsPort int
	Key         *ecdsa.PrivateKey // devp2p node key, kept across wipes so peers still find it

	// DevMode is set for a geth started with --dev: it drives itself (its
	// simulated beacon) and opens no Engine API port.
	DevMode bool

	bin, genesis string
	gethDefaults bool
	chainID      uint64
	peers        []string // enode URLs of the other nodes
}

// RPCURL is the JSON-RPC endpoint (eth_*, txpool_*, admin_*).
func (g *GethNode) RPCURL() string { return fmt.Sprintf("http://127.0.0.1:%d", g.HTTPPort) }

// MetricsAddr is host:port of geth's metrics server.
func (g *GethNode) MetricsAddr() string { return fmt.Sprintf("127.0.0.1:%d", g.MetricsPort) }

// MetricsURL is where Prometheus scrapes geth.
func (g *GethNode) MetricsURL() string { return "http://" + g.MetricsAddr() + GethMetricsPath }

// GethMetricsPath is the path of geth's metrics in Prometheus' format.
const GethMetricsPath = "/debug/metrics/prometheus"

// WSURL is the WebSocket endpoint, served on the HTTP port.
func (g *GethNode) WSURL() string { return fmt.Sprintf("ws://127.0.0.1:%d", g.HTTPPort) }

// EngineURL is the authenticated Engine API endpoint.
func (g *GethNode) EngineURL() string { return fmt.Sprintf("http://127.0.0.1:%d", g.AuthPort) }

// Enode is the devp2p URL other nodes dial.
func (g *GethNode) Enode() string {
	return enode.NewV4(&g.Key.PublicKey, net.IPv4(127, 0, 0, 1), g.P2PPort, 0).URLv4()
}

// CrashSafeGethFlags make a geth that is SIGKILLed come back with the state
// of its last persisted block. With geth's defaults (path scheme) the latest
// state lives in memory; after a SIGKILL geth rewinds its head to the last
// flushed state (often genesis), finds its header chain ahead of it, and
// switches itself to snap sync ("snap-sync incomplete"). In that mode it
// ignores newPayload and any forkchoiceUpdated to a block it holds, and only
// a peer can bring it back: a lone geth is stuck. An archive node on the
// hash scheme commits state every block, so it stays in full sync and the CL
// can replay whatever blocks it lost.
var CrashSafeGethFlags = []string{"--gcmode", "archive", "--state.scheme", "hash"}

var stateSchemeFlags = []string{"--state.scheme", "hash"}

func gethArgs(g *GethNode, jwtPath string, extra []string) []string {
	port := strconv.Itoa(g.HTTPPort)
	args := []string{
		"--datadir", g.DataDir,
		"--config", filepath.Join(g.DataDir, "config.toml"),
		"--networkid", strconv.FormatUint(g.chainID, 10),
		"--syncmode", "full",
		"--http", "--http.addr", "127.0.0.1", "--http.port", port,
		"--http.api", "eth,net,web3,txpool,admin,debug",
		"--http.vhosts", "*",
		"--ws", "--ws.addr", "127.0.0.1", "--ws.port", port,
		"--ws.api", "eth,net,web3,txpool", "--ws.origins", "*",
		"--authrpc.addr", "127.0.0.1", "--authrpc.port", strconv.Itoa(g.AuthPort),
		"--authrpc.jwtsecret", jwtPath, "--authrpc.vhosts", "*",
		"--port", strconv.Itoa(g.P2PPort), "--nodiscover", "--nat", "none",
		"--metrics", "--metrics.addr", "127.0.0.1", "--metrics.port", strconv.Itoa(g.MetricsPort),
		"--ipcdisable",
		"--verbosity", "3",
	}
	if !g.gethDefaults {
		args = append(args, CrashSafeGethFlags...)
	}
	return append(args, extra...)
}

// initialize runs `geth init` on an empty datadir and writes the node key and
// the config file that lists the static peers. It is idempotent: an existing
// chain database is left alone.
func (g *GethNode) initialize(ctx context.Context) error {
	if err := os.MkdirAll(filepath.Join(g.DataDir, "geth"), 0o755); err != nil {
		return err
	}
	keyPath := filepath.Join(g.DataDir, "geth", "nodekey")
	if err := crypto.SaveECDSA(keyPath, g.Key); err != nil {
		return fmt.Errorf("%s: save node key: %w", g.Name, err)
	}
	if err := g.writeConfig(); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(g.DataDir, "geth", "chaindata")); err == nil {
		return nil
	}
	args := []string{"init", "--datadir", g.DataDir}
	if !g.gethDefaults {
		args = append(args, stateSchemeFlags...)
	}
	cmd := exec.CommandContext(ctx, g.bin, append(args, g.genesis)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: geth init %s: %w\n%s", g.Name, g.genesis, err, lastLines(string(out), 15))
	}
	return nil
}

// writeConfig writes the TOML file with the static and trusted peers: static
// peers are redialled after a restart, so peering survives kills and wipes.
func (g *GethNode) writeConfig() error {
	quoted := make([]string, len(g.peers))
	for i, p := range g.peers {
		quoted[i] = strconv.Quote(p)
	}
	list := "[" + strings.Join(quoted, ", ") + "]"
	toml := fmt.Sprintf("[Node.P2P]\nStaticNodes = %s\nTrustedNodes = %s\n", list, list)
	return os.WriteFile(filepath.Join(g.DataDir, "config.toml"), []byte(toml), 0o644)
}

// Wipe deletes the node's datadir and initialises it again from genesis, as
// an operator replacing a lost disk would. The node must be stopped.
func (g *GethNode) Wipe(ctx context.Context) error {
	if g.Running() {
		return fmt.Errorf("%s: wipe while running", g.Name)
	}
	if err := os.RemoveAll(g.DataDir); err != nil {
		return fmt.Errorf("%s: wipe: %w", g.Name, err)
	}
	return g.initialize(ctx)
}

// WaitReady polls until both the JSON-RPC and the Engine API ports answer, the
// process exits (the error carries the end of its log), or ctx ends.
func (g *GethNode) WaitReady(ctx context.Context) error {
	return waitFor(ctx, g.Process, func() error {
		if _, err := g.Call(ctx, "eth_blockNumber"); err != nil {
			return err
		}
		if err := g.checkOurs(ctx); err != nil || g.DevMode {
			return err
		}
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", g.AuthPort), time.Second)
		if err != nil {
			return err
		}
		return conn.Close()
	})
}

// checkOurs checks that the geth answering is this node: its enode id is
// the one of the node key the devnet gave it (the devnet's geths serve the
// admin API; one that does not cannot be told apart).
func (g *GethNode) checkOurs(ctx context.Context) error {
	raw, err := g.Call(ctx, "admin_nodeInfo")
	if err != nil && strings.Contains(err.Error(), "does not exist") {
		return nil // a geth without the admin API (compose's): no id to compare
	}
	if err != nil {
		return err
	}
	var info struct{ ID string }
	if err := json.Unmarshal(raw, &info); err != nil {
		return err
	}
	if want := enode.PubkeyToIDV4(&g.Key.PublicKey).String(); info.ID != want {
		return fmt.Errorf("%w: the geth on %d has enode id %s, this node's is %s", errNotOurs, g.HTTPPort, info.ID, want)
	}
	return nil
}

// Call makes one JSON-RPC call on the node's HTTP endpoint and returns the raw
// result. It is a convenience for tests and the CLI; stages use their own
// clients.
func (g *GethNode) Call(ctx context.Context, method string, params ...any) (json.RawMessage, error) {
	return rpcCall(ctx, g.RPCURL(), method, params...)
}

func rpcCall(ctx context.Context, url, method string, params ...any) (json.RawMessage, error) {
	if params == nil {
		params = []any{}
	}
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out struct {
		Result json.RawMessage `json:"result"`
		Error  *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("%s: HTTP %d: %w", method, resp.StatusCode, err)
	}
	if out.Error != nil {
		return nil, fmt.Errorf("%s: rpc error %d: %s", method, out.Error.Code, out.Error.Message)
	}
	return out.Result, nil
}

// BlockNumber returns the node's head number.
func (g *GethNode) BlockNumber(ctx context.Context) (uint64, error) {
	raw, err := g.Call(ctx, "eth_blockNumber")
	if err != nil {
		return 0, err
	}
	var hex string
	if err := json.Unmarshal(raw, &hex); err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimPrefix(hex, "0x"), 16, 64)
}

// PeerCount returns the number of connected devp2p peers.
func (g *GethNode) PeerCount(ctx context.Context) (int, error) {
	raw, err := g.Call(ctx, "net_peerCount")
	if err != nil {
		return 0, err
	}
	var hex string
	if err := json.Unmarshal(raw, &hex); err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(strings.TrimPrefix(hex, "0x"), 16, 32)
	return int(n), err
}

// waitFor polls check every 50 ms until it succeeds, proc exits, or ctx ends.
func waitFor(ctx context.Context, proc *Process, check func() error) error {
	exited, exitErr := proc.Exited()
	var last error
	for {
		if last = check(); last == nil {
			return nil
		}
		if errors.Is(last, errNotOurs) {
			return fmt.Errorf("%s: %w", proc.Name, last)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w (last error: %v)", proc.Name, ctx.Err(), last)
		case <-exited:
			return fmt.Errorf("%s exited during start-up (%v); end of %s:\n%s",
				proc.Name, exitErr(), proc.LogPath, lastLines(proc.TailLog(4096), 20))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// genesisChainID reads config.chainId from a genesis file and checks that it
// parses, so a malformed genesis fails here with its path rather than inside
// geth init.
func genesisChainID(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("genesis: %w", err)
	}
	var g struct {
		Config *struct {
			ChainID *uint64 `json:"chainId"`
		} `json:"config"`
	}
	if err := json.Unmarshal(b, &g); err != nil {
		return 0, fmt.Errorf("genesis %s: %w", path, err)
	}
	if g.Config == nil || g.Config.ChainID == nil {
		return 0, errors.New("genesis " + path + ": config.chainId missing")
	}
	return *g.Config.ChainID, nil
}
