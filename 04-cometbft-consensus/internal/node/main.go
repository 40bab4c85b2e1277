// Package node wires a validator: the ABCI app, the CometBFT node that runs
// it in process, and the HTTP endpoints.
package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	cmtcfg "github.com/cometbft/cometbft/config"
	cmtlog "github.com/cometbft/cometbft/libs/log"
	cmtnode "github.com/cometbft/cometbft/node"
	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/privval"
	"github.com/cometbft/cometbft/proxy"
	"github.com/cometbft/cometbft/store"
	"github.com/cometbft/cometbft/types"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core"
	"github.com/spf13/viper"

	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/app"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/config"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/engine"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/envelope"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/metrics"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/server"
)

// Main runs a validator until ctx ends.
func Main(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	secret, err := engine.LoadJWTSecret(cfg.JWTSecret)
	if err != nil {
		return err
	}
	genesis, err := LoadGenesis(cfg.GenesisPath)
	if err != nil {
		return err
	}
	sets := &stateStore{}
	h, err := loadHome(cfg.CmtHome)
	if err != nil {
		return err
	}
	if err := checkPace(cfg, h.cmt); err != nil {
		return err
	}
	m := metrics.New()
	client, err := engine.Dial(ctx, engine.Options{URL: cfg.EngineURL, Secret: secret, Chain: genesis.Config, Observer: m})
	if err != nil {
		return err
	}
	defer client.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	opts, err := appOptions(cfg, h, genesis, sets.Validators)
	if err != nil {
		return err
	}
	a, err := app.New(ctx, client, m, log.With("component", "app"), opts)
	if err != nil {
		return err
	}
	defer func() { cancel(); a.Wait() }() // the app's goroutines end with ctx
	abciApp, err := misbehave(a, cfg.Byzantine, log.With("component", "app"))
	if err != nil {
		return err
	}
	// NewNode runs CometBFT's handshake: Info, then a replay of the blocks
	// the app (and geth) lack, through FinalizeBlock. Each ABCI connection
	// (consensus, mempool, query) gets its own lock, so a long FinalizeBlock
	// (geth executing a full block) does not stall /abci_info or CheckTx.
	var pv types.PrivValidator
	if h.pv != nil {
		pv = h.pv
	}
	n, err := cmtnode.NewNodeWithContext(ctx, h.cmt, pv, h.nodeKey, proxy.NewConnSyncLocalClientCreator(abciApp),
		h.genDoc, sets.provider,
		cmtnode.DefaultMetricsProvider(h.cmt.Instrumentation), cometLogger{log.With("component", "cometbft")})
	if err != nil {
		return fmt.Errorf("start CometBFT from %s: %w", cfg.CmtHome, err)
	}
	// The validator's address, from its key file or from the remote
	// signer, which NewNode waited for.
	pub, err := n.PrivValidator().GetPubKey()
	if err != nil {
		return fmt.Errorf("validator key: %w", err)
	}
	a.SetBlocks(blockStore{n.BlockStore()})
	a.SetValidator(pub.Address())
	srv := server.New(cfg.HealthAddr, statusNode{a, n, pub.Address().String()}, m.Handler(), log.With("component", "http"))
	return run(ctx, cancel, cfg, n, srv, pub.Address().String(), log)
}

// home is what a validator reads from its CometBFT home.
type home struct {
	cmt     *cmtcfg.Config
	nodeKey *p2p.NodeKey
	pv      *privval.FilePV // nil with a remote signer
	genDoc  cmtnode.GenesisDocProvider
	doc     *types.GenesisDoc
}

// loadHome reads the CometBFT home: config.toml, the node and validator
// keys, and the genesis.
func loadHome(dir string) (home, error) {
	cmt, err := LoadCometConfig(dir)
	if err != nil {
		return home{}, err
	}
	nodeKey, err := p2p.LoadNodeKey(cmt.NodeKeyFile())
	if err != nil {
		return home{}, fmt.Errorf("--cmt-home %s: node key: %w (run `cometbft init` or this binary's testnet command)", dir, err)
	}
	// With priv_validator_laddr set, CometBFT listens there for a remote
	// signer (tmkms, horcrux, ...) and takes the key from it: the home
	// holds none.
	var pv *privval.FilePV
	if cmt.PrivValidatorListenAddr == "" {
		if _, err := os.Stat(cmt.PrivValidatorKeyFile()); err != nil {
			return home{}, fmt.Errorf("--cmt-home %s: validator key: %w (or set priv_validator_laddr for a remote signer)", dir, err)
		}
		pv = privval.LoadOrGenFilePV(cmt.PrivValidatorKeyFile(), cmt.PrivValidatorStateFile())
	}
	genDoc := cmtnode.DefaultGenesisDocProviderFunc(cmt)
	doc, err := genDoc()
	if err != nil {
		return home{}, fmt.Errorf("--cmt-home %s: %w", dir, err)
	}
	if len(doc.Validators) == 0 {
		return home{}, fmt.Errorf("--cmt-home %s: genesis has no validators", dir)
	}
	return home{cmt: cmt, nodeKey: nodeKey, pv: pv, genDoc: genDoc, doc: doc}, nil
}

// checkPace refuses settings that make heights faster than one a second,
// unless --allow-clock-drift: an execution timestamp is whole seconds,
// above its parent's, so the chain's clock would run ahead of the wall
// clock by the difference at every height. timeout_commit is the pause
// between heights; skip_timeout_commit drops it once every vote is in.
func checkPace(cfg config.Config, cmt *cmtcfg.Config) error {
	if cfg.AllowClockDrift {
		return nil
	}
	toml := filepath.Join(cfg.CmtHome, "config", "config.toml")
	const why = "heights would come faster than one a second, and execution timestamps (whole seconds, each above its parent's) run ahead of the wall clock"
	if tc := cmt.Consensus.TimeoutCommit; tc < time.Second {
		return fmt.Errorf("consensus.timeout_commit %s in %s: %s; set it to 1s or more, or pass --allow-clock-drift", tc, toml, why)
	}
	if cmt.Consensus.SkipTimeoutCommit {
		return fmt.Errorf("consensus.skip_timeout_commit = true in %s: %s; set it to false, or pass --allow-clock-drift", toml, why)
	}
	return nil
}

// appOptions derives the app's options from the flags and the home: its
// budgets and its expectations of the pace follow CometBFT's timeouts in
// config.toml; the validator sets, and the proposers predicted from them,
// are CometBFT's (sets); the set's bound is what the genesis'
// block.max_bytes carries.
func appOptions(cfg config.Config, h home, genesis *core.Genesis, sets app.ValidatorSets) (app.Options, error) {
	to := h.cmt.Consensus
	p := h.doc.ConsensusParams // ValidateAndComplete set CometBFT's defaults where it had none
	maxVals := envelope.MaxValidators(p.Block.MaxBytes, p.Evidence.MaxBytes)
	if maxVals < len(h.doc.Validators) {
		return app.Options{}, fmt.Errorf("--cmt-home %s: the genesis' block.max_bytes %d carries the commit of %d validators beside a full execution block; it has %d",
			cfg.CmtHome, p.Block.MaxBytes, maxVals, len(h.doc.Validators))
	}
	registry, err := registryOf(h.doc)
	if err != nil {
		return app.Options{}, fmt.Errorf("--cmt-home %s: genesis: %w", cfg.CmtHome, err)
	}
	return app.Options{
		StatePath:          filepath.Join(h.cmt.DBDir(), "app-state.json"),
		Genesis:            genesis.ToBlock().Hash(),
		FeeRecipient:       common.HexToAddress(cfg.FeeRecipient),
		BuildWait:          cfg.BuildWait,
		ProposeBudget:      to.TimeoutPropose * 3 / 4,
		ProposeBudgetDelta: to.TimeoutProposeDelta * 3 / 4,
		TimeoutCommit:      to.TimeoutCommit,
		StallAfter:         time.Duration(cfg.StallBlocks) * (max(to.TimeoutCommit, time.Second) + to.TimeoutPropose),
		Optimistic:         cfg.Optimistic,
		Proposers:          app.NewProposers(sets),
		Registry:           registry,
		Sets:               sets,
		MaxValidators:      maxVals,
	}, nil
}

// AppState is the app's part of the CometBFT genesis (app_state): rules
// of the chain that every validator must share, so they come with the
// genesis rather than from each validator's flags.
type AppState struct {
	// ValidatorRegistry is the contract whose PowerChanged events change
	// the validator set (absent: the genesis set, for good).
	ValidatorRegistry string `json:"validator_registry,omitempty"`
}

// registryOf returns the validator registry the genesis names (zero:
// none), refusing one the genesis' key types cannot take: the registry
// holds ed25519 keys, and CometBFT halts on an update of a type its
// consensus parameters do not allow.
func registryOf(doc *types.GenesisDoc) (common.Address, error) {
	var st AppState
	if len(doc.AppState) > 0 {
		if err := json.Unmarshal(doc.AppState, &st); err != nil {
			return common.Address{}, fmt.Errorf("app_state: %w", err)
		}
	}
	if st.ValidatorRegistry == "" {
		return common.Address{}, nil
	}
	if !common.IsHexAddress(st.ValidatorRegistry) {
		return common.Address{}, fmt.Errorf("app_state.validator_registry %q: not a 20-byte hex address", st.ValidatorRegistry)
	}
	if p := doc.ConsensusParams; p != nil && !slices.Contains(p.Validator.PubKeyTypes, types.ABCIPubKeyTypeEd25519) {
		return common.Address{}, fmt.Errorf("app_state.validator_registry is set, and consensus_params.validator.pub_key_types %v lacks %s, the registry's key type",
			p.Validator.PubKeyTypes, types.ABCIPubKeyTypeEd25519)
	}
	return common.HexToAddress(st.ValidatorRegistry), nil
}

// run starts CometBFT and the HTTP endpoints of validator (its address),
// and stops both when ctx ends.
func run(ctx context.Context, cancel context.CancelFunc, cfg config.Config, n *cmtnode.Node, srv *server.Server, validator string, log *slog.Logger) error {
	l, err := srv.Listen()
	if err != nil {
		return fmt.Errorf("--health-addr %s: %w", cfg.HealthAddr, err)
	}
	srvErr := make(chan error, 1)
	go func() { srvErr <- srv.Serve(ctx, l) }()
	if err := n.Start(); err != nil {
		cancel()
		<-srvErr
		return fmt.Errorf("start CometBFT: %w", err)
	}
	c := n.Config()
	log.Info("validator running", "cmt_home", cfg.CmtHome, "engine", cfg.EngineURL,
		"validator", validator, "p2p", c.P2P.ListenAddress, "rpc", c.RPC.ListenAddress)
	<-ctx.Done()
	log.Info("stopping")
	var errs []error
	if err := n.Stop(); err != nil {
		errs = append(errs, err)
	}
	n.Wait()
	cancel()
	if err := <-srvErr; err != nil {
		errs = append(errs, err)
	}
	log.Info("stopped")
	return errors.Join(errs...)
}

// LoadCometConfig reads <home>/config/config.toml over CometBFT's defaults,
// as the cometbft binary does.
func LoadCometConfig(home string) (*cmtcfg.Config, error) {
	c := cmtcfg.DefaultConfig()
	path := filepath.Join(home, "config", "config.toml")
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("--cmt-home %s: %w (run `cometbft init --home %s` or this binary's testnet command)", home, err, home)
	}
	v := viper.New()
	v.SetConfigFile(path)
	if err := v.ReadInConfig(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := v.Unmarshal(c); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	c.SetRoot(home)
	if err := c.ValidateBasic(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// LoadGenesis reads geth's genesis.json with geth's own types.
func LoadGenesis(path string) (*core.Genesis, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--genesis: %w", err)
	}
	var g core.Genesis
	if err := json.Unmarshal(b, &g); err != nil {
		return nil, fmt.Errorf("--genesis %s: %w", path, err)
	}
	if g.Config == nil || g.Config.ChainID == nil {
		return nil, fmt.Errorf("--genesis %s: no config.chainId", path)
	}
	if _, err := engine.MethodsAt(g.Config, 0); err != nil {
		return nil, fmt.Errorf("--genesis %s: %w", path, err)
	}
	return &g, nil
}

// blockStore gives the app the transactions of decided blocks.
type blockStore struct{ s *store.BlockStore }

func (b blockStore) Txs(height int64) ([][]byte, error) {
	blk := b.s.LoadBlock(height)
	if blk == nil {
		return nil, fmt.Errorf("no block at height %d (store holds %d-%d)", height, b.s.Base(), b.s.Height())
	}
	out := make([][]byte, len(blk.Txs))
	for i, tx := range blk.Txs {
		out[i] = tx
	}
	return out, nil
}

// statusNode is what /status, /readyz report.
type statusNode struct {
	app       *app.App
	node      *cmtnode.Node
	validator string // its address
}

// Status is /status.
type Status struct {
	Height        int64  `json:"height"`
	ExecutionHead uint64 `json:"execution_head"`
	ExecutionHash string `json:"execution_hash"`
	Validator     string `json:"validator"`
	Peers         int    `json:"peers"`
	CatchingUp    bool   `json:"catching_up"`
	Ready         bool   `json:"ready"`
	Reason        string `json:"reason,omitempty"`
	// LastReplay is the latest time geth lost blocks and the app replayed
	// them: which, why, and how to avoid it.
	LastReplay *app.Replay `json:"last_replay,omitempty"`
}

func (s statusNode) Ready() (bool, string) {
	if s.node.ConsensusReactor().WaitSync() {
		return false, "catching up with the other validators (block sync)"
	}
	return s.app.Ready()
}

func (s statusNode) Status() any {
	c := s.app.Committed()
	ready, reason := s.Ready()
	return Status{Height: c.Height, ExecutionHead: c.Head.Number, ExecutionHash: c.Head.Hash.Hex(),
		Validator: s.validator,
		Peers:     s.node.Switch().Peers().Size(), CatchingUp: s.node.ConsensusReactor().WaitSync(),
		Ready: ready, Reason: reason, LastReplay: s.app.LastReplay()}
}

// NewLogger builds the structured logger the configuration asks for.
func NewLogger(cfg config.Config) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// cometLogger writes CometBFT's logs through slog. CometBFT logs a lot at
// info (every vote, every part); its info becomes our debug.
type cometLogger struct{ l *slog.Logger }

func (c cometLogger) Debug(msg string, kv ...any) { c.l.Debug(msg, kv...) }
func (c cometLogger) Info(msg string, kv ...any)  { c.l.Debug(msg, kv...) }
func (c cometLogger) Warn(msg string, kv ...any)  { c.l.Warn(msg, kv...) }
func (c cometLogger) Error(msg string, kv ...any) { c.l.Error(msg, kv...) }
func (c cometLogger) With(kv ...any) cmtlog.Logger {
	return cometLogger{c.l.With(kv...)}
}
