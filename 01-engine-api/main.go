// Command engine-api is stage 1 of the tutorial: a bare Engine API client
// that makes geth build blocks. Read it top to bottom:
//
//  1. configuration: flags with environment fallbacks;
//  2. the JWT secret and the authenticated Engine API connection;
//  3. the chain checks: chain ID, genesis hash, engine_exchangeCapabilities;
//  4. the fork schedule, which picks the Engine API method versions;
//  5. one block: forkchoiceUpdated with payload attributes → wait →
//     getPayload → newPayload → forkchoiceUpdated;
//  6. what geth's answers mean, turned into errors a person can act on.
//
// Everything is in this one file so that `go run main.go` works and the
// program reads like the first post of the series. Stage 2 splits it into
// packages and adds persistence, recovery and metrics.
package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/ethereum/go-ethereum/beacon/engine"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto/kzg4844"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/ethereum/go-ethereum/params"
	"github.com/ethereum/go-ethereum/params/forks"
	"github.com/ethereum/go-ethereum/rpc"
	"github.com/golang-jwt/jwt/v5"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCmd(os.Stdout).ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

// ---------------------------------------------------------------------------
// 1. Configuration
// ---------------------------------------------------------------------------

type config struct {
	EngineURL    string        // geth's authenticated Engine API (--authrpc.port)
	JWTSecret    string        // a file path or the hex secret itself
	RPCURL       string        // geth's public JSON-RPC, for eth_chainId and eth_getBlockByNumber
	GenesisPath  string        // the genesis.json geth was initialised with
	Blocks       int           // how many blocks to build; 0 = until interrupted
	BuildWait    time.Duration // how long geth may fill the block before getPayload
	Interval     time.Duration // pause between blocks
	FeeRecipient string        // coinbase of the built blocks
	Timeout      time.Duration // per Engine API call
}

func newRootCmd(out io.Writer) *cobra.Command {
	var cfg config
	cmd := &cobra.Command{
		Use:     "engine-api",
		Version: buildVersion(),
		Short:   "Build blocks on geth through the Engine API (stage 1)",
		Long: `engine-api drives an unmodified geth through the Engine API (HTTP + JWT):
it checks the chain, then builds blocks with forkchoiceUpdated, getPayload,
newPayload and forkchoiceUpdated, printing every step.

Every flag falls back to the environment variable named in its help.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Report every bad setting at once, from the environment and flags.
			if err := errors.Join(applyEnv(cmd), cfg.validate()); err != nil {
				return err
			}
			return run(cmd.Context(), cfg, out)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.EngineURL, "eth-client-url", "http://localhost:8551", "geth Engine API URL")
	f.StringVar(&cfg.JWTSecret, "jwt-secret", "../jwt.hex", "JWT secret: a file, or 32 bytes as hex with or without 0x")
	f.StringVar(&cfg.RPCURL, "rpc-url", "http://localhost:8545", "geth JSON-RPC URL")
	f.StringVar(&cfg.GenesisPath, "genesis", "../genesis.json", "genesis.json geth was initialised with; its fork schedule picks the method versions")
	f.IntVar(&cfg.Blocks, "blocks", 5, "number of blocks to build, 0 = until interrupted")
	f.DurationVar(&cfg.BuildWait, "build-wait", 200*time.Millisecond, "time geth gets to fill a block before getPayload")
	f.DurationVar(&cfg.Interval, "interval", time.Second, "pause between blocks")
	f.StringVar(&cfg.FeeRecipient, "fee-recipient", "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266", "address that receives the priority fees")
	f.DurationVar(&cfg.Timeout, "timeout", 8*time.Second, "timeout of each Engine API call (the spec's is 8s)")
	bindEnv(cmd, map[string]string{
		"eth-client-url": "ETH_CLIENT_URL", "jwt-secret": "JWT_SECRET", "rpc-url": "ETH_RPC_URL",
		"genesis": "GENESIS", "blocks": "BLOCKS", "build-wait": "BUILD_WAIT", "interval": "INTERVAL",
		"fee-recipient": "FEE_RECIPIENT", "timeout": "ENGINE_TIMEOUT",
	})
	return cmd
}

// validate names every wrong setting at once.
func (c config) validate() error {
	var errs []error
	for _, u := range []struct{ flag, url string }{{"--eth-client-url", c.EngineURL}, {"--rpc-url", c.RPCURL}} {
		if !strings.HasPrefix(u.url, "http://") && !strings.HasPrefix(u.url, "https://") {
			errs = append(errs, fmt.Errorf("%s %q: want an http:// or https:// URL", u.flag, u.url))
		}
	}
	if c.Blocks < 0 {
		errs = append(errs, fmt.Errorf("--blocks %d: must be 0 or more", c.Blocks))
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"--build-wait", c.BuildWait}, {"--interval", c.Interval}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s %s: must not be negative", d.flag, d.v))
		}
	}
	if c.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("--timeout %s: must be positive", c.Timeout))
	}
	if !common.IsHexAddress(c.FeeRecipient) {
		errs = append(errs, fmt.Errorf("--fee-recipient %q: not a 20-byte hex address", c.FeeRecipient))
	}
	return errors.Join(errs...)
}

// ---------------------------------------------------------------------------
// 2. JWT secret and the Engine API connection
// ---------------------------------------------------------------------------

// loadJWTSecret accepts either the secret itself (64 hex characters, with or
// without 0x) or the path of a file holding it, the way geth's
// --authrpc.jwtsecret file is written.
func loadJWTSecret(value string) ([32]byte, error) {
	var secret [32]byte
	text, source := strings.TrimSpace(value), "--jwt-secret"
	if !looksLikeHexSecret(text) {
		b, err := os.ReadFile(value)
		if err != nil {
			return secret, fmt.Errorf("jwt secret: %s", notASecretFile(value, err))
		}
		text, source = strings.TrimSpace(string(b)), "file "+value
	}
	text = strings.TrimPrefix(strings.TrimPrefix(text, "0x"), "0X")
	b, err := hex.DecodeString(text)
	switch {
	case err != nil:
		return secret, fmt.Errorf("jwt secret in %s: not hex: %w", source, err)
	case len(b) != 32:
		return secret, fmt.Errorf("jwt secret in %s: %d bytes, the Engine API needs exactly 32 (64 hex characters; make one with `openssl rand -hex 32`)", source, len(b))
	}
	copy(secret[:], b)
	return secret, nil
}

// notASecretFile describes a --jwt-secret value that is neither a secret
// nor a readable file, without printing it unless it names a file: a
// malformed secret (63 hex digits, quotes) is still nearly the secret.
func notASecretFile(value string, err error) string {
	var pathErr *fs.PathError
	if errors.As(err, &pathErr) {
		err = pathErr.Err // the path is the value, shown or not below
	}
	if strings.ContainsAny(value, `/\.`) {
		return fmt.Sprintf("%q is neither 64 hex characters nor a readable file: %v", value, err)
	}
	return fmt.Sprintf("the value (%d characters, not shown: it may be the secret) is neither 64 hex characters nor a readable file: %v", len(value), err)
}

func looksLikeHexSecret(s string) bool {
	s = strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X")
	_, err := hex.DecodeString(s)
	return len(s) == 64 && err == nil
}

// jwtAuth signs a fresh HS256 token for every request: geth rejects tokens
// whose iat is more than 60 s from its own clock
// (execution-apis, src/engine/authentication.md).
func jwtAuth(secret [32]byte, now func() time.Time) rpc.HTTPAuth {
	return func(h http.Header) error {
		token := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"iat": now().Unix()})
		signed, err := token.SignedString(secret[:])
		if err != nil {
			return fmt.Errorf("sign jwt: %w", err)
		}
		h.Set("Authorization", "Bearer "+signed)
		return nil
	}
}

// engineClient is the Engine API over one authenticated JSON-RPC connection.
type engineClient struct {
	rpc     *rpc.Client
	url     string
	timeout time.Duration
}

func dialEngine(ctx context.Context, url string, secret [32]byte, timeout time.Duration, now func() time.Time) (*engineClient, error) {
	c, err := rpc.DialOptions(ctx, url,
		rpc.WithHTTPAuth(jwtAuth(secret, now)),
		rpc.WithHTTPClient(&http.Client{Timeout: timeout}))
	if err != nil {
		return nil, fmt.Errorf("dial engine API %s: %w", url, err)
	}
	return &engineClient{rpc: c, url: url, timeout: timeout}, nil
}

func (e *engineClient) call(ctx context.Context, result any, method string, args ...any) error {
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	if err := e.rpc.CallContext(ctx, result, method, args...); err != nil {
		return explainCallError(method, e.url, err)
	}
	return nil
}

// ---------------------------------------------------------------------------
// 3. Chain checks
// ---------------------------------------------------------------------------

// checkChain makes sure geth runs the chain genesis.json describes: same chain
// ID and same genesis block hash. Otherwise the fork schedule read from the
// file could pick method versions geth does not expect.
func checkChain(ctx context.Context, eth *ethclient.Client, genesis *core.Genesis, rpcURL string) error {
	chainID, err := eth.ChainID(ctx)
	if err != nil {
		return fmt.Errorf("eth_chainId on %s: %w", rpcURL, err)
	}
	if want := genesis.Config.ChainID; chainID.Cmp(want) != 0 {
		return fmt.Errorf("geth at %s runs chain %s but the genesis file says %s: pass the genesis.json geth was initialised with", rpcURL, chainID, want)
	}
	block0, err := eth.HeaderByNumber(ctx, common.Big0)
	if err != nil {
		return fmt.Errorf("read geth's genesis block: %w", err)
	}
	if want := genesis.ToBlock().Hash(); block0.Hash() != want {
		return fmt.Errorf("geth's genesis block is %s but the genesis file gives %s: geth was initialised from another genesis.json", block0.Hash(), want)
	}
	return nil
}

// checkCapabilities asks geth which Engine API methods it serves
// (engine_exchangeCapabilities) and fails if one we need is missing.
func checkCapabilities(ctx context.Context, e *engineClient, v methods) ([]string, error) {
	ours := []string{v.forkchoiceUpdated, v.getPayload, v.newPayload}
	var theirs []string
	if err := e.call(ctx, &theirs, "engine_exchangeCapabilities", ours); err != nil {
		return nil, err
	}
	for _, m := range ours {
		if !slices.Contains(theirs, m) {
			return nil, fmt.Errorf("geth does not offer %s, which the fork schedule requires: upgrade geth", m)
		}
	}
	return ours, nil
}

// ---------------------------------------------------------------------------
// 4. The fork schedule picks the method versions
// ---------------------------------------------------------------------------

// methods are the Engine API method names for one payload.
type methods struct {
	fork                                      forks.Fork
	forkchoiceUpdated, getPayload, newPayload string
}

// methodsAt returns the method versions for a payload with this timestamp,
// the way geth's simulated beacon does (eth/catalyst/simulated_beacon.go).
// Calling the wrong version gets error -38005 "Unsupported fork".
func methodsAt(cfg *params.ChainConfig, timestamp uint64) (methods, error) {
	fork := cfg.LatestFork(timestamp)
	m := func(fcu, get, newp int) (methods, error) {
		return methods{fork,
			fmt.Sprintf("engine_forkchoiceUpdatedV%d", fcu),
			fmt.Sprintf("engine_getPayloadV%d", get),
			fmt.Sprintf("engine_newPayloadV%d", newp)}, nil
	}
	switch fork {
	case forks.Osaka, forks.BPO1, forks.BPO2:
		return m(3, 5, 4)
	case forks.Prague:
		return m(3, 4, 4)
	case forks.Cancun:
		return m(3, 3, 3)
	case forks.Shanghai:
		return m(2, 2, 2)
	}
	// Amsterdam (and the BPO3+ forks geth groups with it) add a slot number
	// and block access lists; before Shanghai there were no withdrawals.
	return methods{}, fmt.Errorf("fork %s at timestamp %d is not supported by this client (it speaks Shanghai through Osaka/BPO2)", fork, timestamp)
}

// ---------------------------------------------------------------------------
// 5. Building one block
// ---------------------------------------------------------------------------

func run(ctx context.Context, cfg config, out io.Writer) error {
	secret, err := loadJWTSecret(cfg.JWTSecret)
	if err != nil {
		return err
	}
	genesis, err := loadGenesis(cfg.GenesisPath)
	if err != nil {
		return err
	}
	eth, err := ethclient.DialContext(ctx, cfg.RPCURL)
	if err != nil {
		return fmt.Errorf("dial %s: %w", cfg.RPCURL, err)
	}
	defer eth.Close()
	engineAPI, err := dialEngine(ctx, cfg.EngineURL, secret, cfg.Timeout, time.Now)
	if err != nil {
		return err
	}
	defer engineAPI.rpc.Close()

	// ethclient has no timeout of its own: bound the checks by --timeout.
	checkCtx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	if err := checkChain(checkCtx, eth, genesis, cfg.RPCURL); err != nil {
		return err
	}
	head, err := eth.HeaderByNumber(checkCtx, nil)
	if err != nil {
		return fmt.Errorf("read head from %s: %w", cfg.RPCURL, err)
	}
	v, err := methodsAt(genesis.Config, uint64(time.Now().Unix()))
	if err != nil {
		return err
	}
	if _, err := checkCapabilities(ctx, engineAPI, v); err != nil {
		return err
	}
	fmt.Fprintf(out, "chain %s, fork %s, head #%d %s\n", genesis.Config.ChainID, v.fork, head.Number, head.Hash().TerminalString())

	b := &builder{engine: engineAPI, chain: genesis.Config, out: out, wait: cfg.BuildWait,
		feeRecipient: common.HexToAddress(cfg.FeeRecipient)}
	parent := blockRef{number: head.Number.Uint64(), hash: head.Hash(), time: head.Time}
	for i := 0; cfg.Blocks == 0 || i < cfg.Blocks; i++ {
		if parent, err = b.buildBlock(ctx, parent); err != nil {
			return err
		}
		if cfg.Blocks != 0 && i == cfg.Blocks-1 {
			break
		}
		select {
		case <-ctx.Done():
			fmt.Fprintln(out, "interrupted")
			return nil
		case <-time.After(cfg.Interval):
		}
	}
	return nil
}

func loadGenesis(path string) (*core.Genesis, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("genesis: %w", err)
	}
	var g core.Genesis
	if err := json.Unmarshal(b, &g); err != nil {
		return nil, fmt.Errorf("genesis %s: %w", path, err)
	}
	if g.Config == nil || g.Config.ChainID == nil {
		return nil, fmt.Errorf("genesis %s: no config.chainId", path)
	}
	return &g, nil
}

type blockRef struct {
	number uint64
	hash   common.Hash
	time   uint64
}

type builder struct {
	engine       *engineClient
	chain        *params.ChainConfig
	out          io.Writer
	wait         time.Duration
	feeRecipient common.Address
}

// buildBlock makes geth build, execute and adopt one block on top of parent.
// A failure names the block, its timestamp and the fork that chose the
// method versions (what an "Unsupported fork" answer needs to be read).
func (b *builder) buildBlock(ctx context.Context, parent blockRef) (blockRef, error) {
	timestamp := max(uint64(time.Now().Unix()), parent.time+1)
	next, err := b.build(ctx, parent, timestamp)
	if err != nil {
		return parent, fmt.Errorf("block #%d, timestamp %d, fork %s: %w", parent.number+1, timestamp, b.chain.LatestFork(timestamp), err)
	}
	return next, nil
}

func (b *builder) build(ctx context.Context, parent blockRef, timestamp uint64) (blockRef, error) {
	// Block timestamps are whole seconds and must exceed the parent's, so
	// more than one block per second runs the chain's clock ahead of ours.
	start := time.Now()
	v, err := methodsAt(b.chain, timestamp)
	if err != nil {
		return parent, err
	}
	step := func(format string, args ...any) {
		fmt.Fprintf(b.out, "  %7s  "+format+"\n", append([]any{time.Since(start).Round(100 * time.Microsecond)}, args...)...)
	}
	fmt.Fprintf(b.out, "block #%d on %s (timestamp %d, %s)\n", parent.number+1, parent.hash.TerminalString(), timestamp, v.fork)

	// (a) forkchoiceUpdated with payload attributes: "the head is parent;
	// start building a block on it". prevRandao would come from the beacon
	// chain's RANDAO; we have none, so we draw it from crypto/rand.
	var random common.Hash
	if _, err := rand.Read(random[:]); err != nil {
		return parent, err
	}
	attrs := &engine.PayloadAttributes{
		Timestamp:             timestamp,
		Random:                random,
		SuggestedFeeRecipient: b.feeRecipient,
		Withdrawals:           []*types.Withdrawal{}, // must be [] (not null) since Shanghai
		// EIP-4788 stores this root in the beacon roots contract. There is
		// no beacon chain here, so we pass the zero hash as geth --dev does.
		BeaconRoot: &common.Hash{},
	}
	fc := engine.ForkchoiceStateV1{HeadBlockHash: parent.hash, SafeBlockHash: parent.hash, FinalizedBlockHash: parent.hash}
	var fcResp engine.ForkChoiceResponse
	if err := b.engine.call(ctx, &fcResp, v.forkchoiceUpdated, fc, attrs); err != nil {
		return parent, err
	}
	if err := checkStatus(v.forkchoiceUpdated, fcResp.PayloadStatus); err != nil {
		if errors.Is(err, ErrSyncing) {
			// parent is geth's own head, or a block it just called VALID.
			err = fmt.Errorf("%w; yet geth holds block #%d: %s", err, parent.number, stuckHint)
		}
		return parent, err
	}
	if fcResp.PayloadID == nil {
		return parent, fmt.Errorf("%s answered VALID without a payloadId: geth already built a block with these attributes on this head; pick a new timestamp", v.forkchoiceUpdated)
	}
	step("%s → %s, payloadId %s", v.forkchoiceUpdated, fcResp.PayloadStatus.Status, fcResp.PayloadID)

	// (b) Wait: geth starts with an empty block and fills it in the
	// background. getPayload returns the best block so far, so asking at
	// once returns an empty block.
	select {
	case <-time.After(b.wait):
	case <-ctx.Done():
		return parent, ctx.Err()
	}

	// (c) getPayload: take the block geth built.
	var env engine.ExecutionPayloadEnvelope
	if err := b.engine.call(ctx, &env, v.getPayload, fcResp.PayloadID); err != nil {
		return parent, err
	}
	payload := env.ExecutionPayload
	step("%s → #%d %s: %d txs, %d gas, %d blobs", v.getPayload, payload.Number,
		payload.BlockHash.TerminalString(), len(payload.Transactions), payload.GasUsed, blobCount(env.BlobsBundle))

	// (d) newPayload: hand the block back for execution and validation.
	// The versioned hashes are recomputed from the blob commitments (EIP-4844);
	// the execution requests (EIP-7685) are passed through, [] when none.
	hashes, err := versionedHashes(env.BlobsBundle)
	if err != nil {
		return parent, err
	}
	requests := make([]hexutil.Bytes, len(env.Requests))
	for i, r := range env.Requests {
		requests[i] = r
	}
	var status engine.PayloadStatusV1
	if err := b.engine.call(ctx, &status, v.newPayload, payload, hashes, attrs.BeaconRoot, requests); err != nil {
		return parent, err
	}
	if err := checkStatus(v.newPayload, status); err != nil {
		if errors.Is(err, ErrSyncing) {
			// geth built this block on parent: it holds parent.
			err = fmt.Errorf("%w; yet geth holds block #%d, which it just built on: %s", err, parent.number, stuckHint)
		}
		return parent, err
	}
	step("%s → %s", v.newPayload, status.Status)

	// (e) forkchoiceUpdated without attributes: make the block the head.
	// With a single producer nothing can reorg it, so it is safe and
	// finalized at once.
	fc = engine.ForkchoiceStateV1{HeadBlockHash: payload.BlockHash, SafeBlockHash: payload.BlockHash, FinalizedBlockHash: payload.BlockHash}
	if err := b.engine.call(ctx, &fcResp, v.forkchoiceUpdated, fc, nil); err != nil {
		return parent, err
	}
	if err := checkStatus(v.forkchoiceUpdated, fcResp.PayloadStatus); err != nil {
		return parent, err
	}
	step("%s → %s: head = safe = finalized = #%d", v.forkchoiceUpdated, fcResp.PayloadStatus.Status, payload.Number)
	for _, raw := range payload.Transactions {
		var tx types.Transaction
		if err := tx.UnmarshalBinary(raw); err == nil {
			step("  tx %s type %d nonce %d", tx.Hash().TerminalString(), tx.Type(), tx.Nonce())
		}
	}
	return blockRef{number: payload.Number, hash: payload.BlockHash, time: payload.Timestamp}, nil
}

func blobCount(b *engine.BlobsBundle) int {
	if b == nil {
		return 0
	}
	return len(b.Commitments)
}

// versionedHashes derives the EIP-4844 versioned hash of every blob in the
// bundle: sha256(commitment) with the first byte set to 0x01. Passing an
// empty list while the block carries blobs makes geth answer INVALID.
func versionedHashes(b *engine.BlobsBundle) ([]common.Hash, error) {
	hashes := []common.Hash{} // never nil: newPayload rejects null
	if b == nil {
		return hashes, nil
	}
	hasher := sha256.New()
	for i, c := range b.Commitments {
		var commitment kzg4844.Commitment
		if len(c) != len(commitment) {
			return nil, fmt.Errorf("blob commitment %d: %d bytes, want %d", i, len(c), len(commitment))
		}
		copy(commitment[:], c)
		hashes = append(hashes, kzg4844.CalcBlobHashV1(hasher, &commitment))
	}
	return hashes, nil
}

// ---------------------------------------------------------------------------
// 6. What geth's answers mean
// ---------------------------------------------------------------------------

// Errors a caller can tell apart with errors.Is.
var (
	ErrInvalidPayload  = errors.New("geth says INVALID")
	ErrSyncing         = errors.New("geth says SYNCING")
	ErrAccepted        = errors.New("geth says ACCEPTED")
	ErrJWTClockSkew    = errors.New("JWT rejected: clock skew")
	ErrJWTRejected     = errors.New("JWT rejected: wrong secret")
	ErrUnsupportedFork = errors.New("unsupported fork")
	ErrUnreachable     = errors.New("engine API unreachable")
)

// stuckHint explains a geth that answers SYNCING for a block it holds.
// geth v1.17 on its default storage (path scheme), SIGKILLed within a
// minute of its start (before it moved the blocks to its freezer), comes
// back at genesis still holding the blocks' headers, and switches to snap
// sync ("snap-sync incomplete"): it takes a new block 1, then answers
// SYNCING to every payload ("Ignoring payload while snap syncing").
const stuckHint = "geth is in snap sync (its log says \"Switching from full-sync to snap-sync\") and ignores payloads: " +
	"a crash on geth's default --state.scheme path leaves it so when it kept the blocks but not their state; " +
	"fix: stop geth, delete its chain data (geth removedb --datadir DIR), initialise it again (geth init --datadir DIR genesis.json) " +
	"and start it: the chain starts again from genesis, since this program keeps no copy of its blocks; " +
	"run geth with --gcmode archive --state.scheme hash to avoid this"

// checkStatus turns a payload status into an error unless it is VALID.
func checkStatus(method string, s engine.PayloadStatusV1) error {
	switch s.Status {
	case engine.VALID:
		return nil
	case engine.INVALID:
		reason := "no reason given"
		if s.ValidationError != nil {
			reason = *s.ValidationError
		}
		// INVALID is final: sending the same payload again gets the same answer.
		return fmt.Errorf("%s: %w: %s (latest valid ancestor %v)", method, ErrInvalidPayload, reason, s.LatestValidHash)
	case engine.SYNCING:
		return fmt.Errorf("%s: %w: geth lacks the parent block or the head and is fetching it; nothing was validated", method, ErrSyncing)
	case engine.ACCEPTED:
		return fmt.Errorf("%s: %w: the block extends a side chain geth has not validated; it is not the head", method, ErrAccepted)
	}
	return fmt.Errorf("%s: unknown status %q", method, s.Status)
}

// explainCallError names the cause of a failed Engine API call.
func explainCallError(method, url string, err error) error {
	var httpErr rpc.HTTPError
	if errors.As(err, &httpErr) && httpErr.StatusCode == http.StatusUnauthorized {
		body := strings.TrimSpace(string(httpErr.Body))
		// geth's node/jwt_handler.go: "stale token" and "future token" mean
		// the iat claim is more than 60 s away from geth's clock.
		if strings.Contains(body, "stale token") || strings.Contains(body, "future token") {
			return fmt.Errorf("%s: %w: geth says %q; this machine's clock and geth's differ by more than 60 s (check NTP)", method, ErrJWTClockSkew, body)
		}
		return fmt.Errorf("%s: %w: geth says %q; the secret is not the one geth was started with (--authrpc.jwtsecret)", method, ErrJWTRejected, body)
	}
	var rpcErr rpc.Error
	if errors.As(err, &rpcErr) && rpcErr.ErrorCode() == engine.UnsupportedFork.ErrorCode() {
		return fmt.Errorf("%s: %w (-38005): geth has another fork active at this timestamp than --genesis says, so it wants another version of this method; check that --genesis is the file geth was initialised with: %v", method, ErrUnsupportedFork, err)
	}
	if rpcErr != nil {
		// geth puts the underlying reason in the error's data field.
		detail := ""
		var dataErr rpc.DataError
		if errors.As(err, &dataErr) {
			if m, ok := dataErr.ErrorData().(map[string]any); ok && m["err"] != nil {
				detail = fmt.Sprint(": ", m["err"])
			} else if d := dataErr.ErrorData(); d != nil {
				detail = fmt.Sprint(": ", d)
			}
		}
		if strings.Contains(detail, "empty system contract") {
			detail += " (genesis.json lacks a Prague system contract: see the README's troubleshooting)"
		}
		return fmt.Errorf("%s: %w%s", method, err, detail)
	}
	return fmt.Errorf("%s: %w at %s: %v", method, ErrUnreachable, url, err)
}

// ---------------------------------------------------------------------------
// Environment fallbacks for flags
// ---------------------------------------------------------------------------

// bindEnv records the environment variable of each flag and names it in the
// flag's help.
func bindEnv(cmd *cobra.Command, vars map[string]string) {
	for name, key := range vars {
		f := cmd.Flags().Lookup(name)
		f.Usage += fmt.Sprintf(" (env %s)", key)
		_ = cmd.Flags().SetAnnotation(name, "env", []string{key})
	}
}

// applyEnv sets every flag not given on the command line from its
// environment variable, so flags win over the environment, and a malformed
// value is an error that names the variable.
func applyEnv(cmd *cobra.Command) error {
	var errs []error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		keys := f.Annotations["env"]
		if len(keys) == 0 || f.Changed {
			return
		}
		if v, ok := os.LookupEnv(keys[0]); ok {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q (for --%s): %w", keys[0], v, f.Name, err))
			}
		}
	})
	return errors.Join(errs...)
}

// buildVersion is what --version prints: the module version and the commit
// `go build` recorded in the binary (runtime/debug.ReadBuildInfo).
func buildVersion() string {
	version, commit, modified := "(unknown)", "commit unknown", ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		version = bi.Main.Version
		for _, s := range bi.Settings {
			switch {
			case s.Key == "vcs.revision":
				commit = "commit " + s.Value[:min(12, len(s.Value))]
			case s.Key == "vcs.modified" && s.Value == "true":
				modified = ", modified"
			}
		}
	}
	return fmt.Sprintf("%s (%s%s), %s", version, commit, modified, runtime.Version())
}
