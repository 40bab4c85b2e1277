package node

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core"

	"github.com/geth-consensus/tutorial/02-single-node/internal/builder"
	"github.com/geth-consensus/tutorial/02-single-node/internal/config"
	"github.com/geth-consensus/tutorial/02-single-node/internal/engine"
	"github.com/geth-consensus/tutorial/02-single-node/internal/metrics"
	"github.com/geth-consensus/tutorial/02-single-node/internal/server"
	"github.com/geth-consensus/tutorial/02-single-node/internal/state"
)

// Main wires a node from a validated configuration and runs it, with its
// HTTP server, until ctx ends.
func Main(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	log = log.With("node", cfg.InstanceID)
	secret, err := engine.LoadJWTSecret(cfg.JWTSecret)
	if err != nil {
		return err
	}
	genesis, err := LoadGenesis(cfg.GenesisPath)
	if err != nil {
		return err
	}
	st, err := state.Open(filepath.Join(cfg.DataDir, cfg.InstanceID))
	if err != nil {
		return err
	}
	defer st.Close()

	m := metrics.New()
	client, err := engine.Dial(ctx, engine.Options{URL: cfg.EngineURL, Secret: secret, Chain: genesis.Config, Observer: m})
	if err != nil {
		return err
	}
	defer client.Close()
	b := builder.New(client, common.HexToAddress(cfg.FeeRecipient), time.Now)
	app := New(Options{
		Mode: Mode(cfg.BlockMode), BlockTime: cfg.BlockTime, MaxIdle: cfg.MaxIdle, BuildWait: cfg.BuildWait,
		MaxBuild: cfg.MaxBuildWait, MaxDrift: cfg.MaxDrift, GenesisHash: genesis.ToBlock().Hash(),
	}, Deps{Log: log.With("component", "node"), Engine: client, State: st, Builder: b, Metrics: m})

	srv := server.New(cfg.HealthAddr, statusNode{app}, m.Handler(), log.With("component", "http"))
	l, err := srv.Listen()
	if err != nil {
		return fmt.Errorf("--health-addr %s: %w", cfg.HealthAddr, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	srvErr := make(chan error, 1)
	go func() { srvErr <- srv.Serve(ctx, l) }()

	log.Info("starting", "block_mode", cfg.BlockMode, "engine", cfg.EngineURL, "data_dir", cfg.DataDir, "block_time", cfg.BlockTime)
	runErr := app.Run(ctx)
	cancel()
	if err := <-srvErr; err != nil && runErr == nil {
		runErr = err
	}
	log.Info("stopped", "err", runErr)
	return runErr
}

// LoadGenesis reads genesis.json with geth's own types.
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

// statusNode adapts the app to the server's interface.
type statusNode struct{ *App }

func (s statusNode) Status() any { return s.App.Status() }

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
