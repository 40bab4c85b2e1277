package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/redis/go-redis/v9"

	"github.com/geth-consensus/tutorial/03-member-nodes/internal/builder"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/config"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/election"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/engine"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/metrics"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/server"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/signer"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/state"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/syncer"
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
	verifier, sgn, quorum, err := loadKeys(cfg, log)
	if err != nil {
		return err
	}
	st, err := openStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer st.Close()
	ropts, err := cfg.RedisOptions()
	if err != nil {
		return err
	}
	ropts.DialTimeout, ropts.ReadTimeout, ropts.WriteTimeout, ropts.MaxRetries = time.Second, cfg.LeaseTTL/4, cfg.LeaseTTL/4, 1
	rdb := redis.NewClient(ropts)
	defer rdb.Close()

	m := metrics.New()
	client, err := engine.Dial(ctx, engine.Options{URL: cfg.EngineURL, Secret: secret, Chain: genesis.Config, Observer: m})
	if err != nil {
		return err
	}
	defer client.Close()
	el, src, err := roleDeps(cfg, rdb, st)
	if err != nil {
		return err
	}
	b := builder.New(client, common.HexToAddress(cfg.FeeRecipient), time.Now)
	app := New(Options{
		ID: cfg.InstanceID, Cluster: cfg.ClusterID, Role: Role(cfg.Mode), APIURL: cfg.Advertise(), ChainID: genesis.Config.ChainID,
		Signer: sgn, Verifier: verifier, Quorum: quorum, CosignTimeout: cfg.CosignTimeout, LeaseRenew: cfg.LeaseRenew, StandDown: cfg.LeaseTTL / 2, Adopt: cfg.AdoptChain,
		Mode: Mode(cfg.BlockMode), BlockTime: cfg.BlockTime, MaxIdle: cfg.MaxIdle, BuildWait: cfg.BuildWait,
		MaxBuild: cfg.MaxBuildWait, MaxDrift: cfg.MaxDrift, GenesisHash: genesis.ToBlock().Hash(),
	}, Deps{Log: log.With("component", "node"), Engine: client, State: st, Builder: b, Metrics: m, Redis: rdb, Elector: el, Source: src,
		Proposals: syncer.NewLeaderAPI(rdb, cfg.ClusterID)})

	srv := server.New(cfg.HealthAddr, statusNode{app}, m.Handler(), log.With("component", "http"))
	srv.HandleBlocks(st)
	srv.HandleProposals(app)
	l, err := srv.Listen()
	if err != nil {
		return fmt.Errorf("--health-addr %s: %w", cfg.HealthAddr, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	srvErr := make(chan error, 1)
	go func() { srvErr <- srv.Serve(ctx, l) }()

	log.Info("starting", "mode", cfg.Mode, "engine", cfg.EngineURL, "redis", cfg.RedisTarget(), "cluster", cfg.ClusterID, "api", cfg.Advertise(),
		"block_mode", cfg.BlockMode, "block_time", cfg.BlockTime)
	runErr := app.Run(ctx)
	cancel()
	if err := <-srvErr; err != nil && runErr == nil {
		runErr = err
	}
	log.Info("stopped", "err", runErr)
	return runErr
}

// openStore opens the store, waiting for a PostgreSQL that does not accept
// connections yet (a node started with, or before, its database) until ctx
// ends; any other error is returned. The lock limits stay below the lease
// TTL: a leader frozen inside its commit must not hold the fencing row past
// its lease (state.Limits). A candidate's calls are bounded by half the
// lease TTL too: a leader whose store hangs (or whose link to it holds
// every packet) then fails to produce within half its lease and stands
// down, where a 10 s bound kept it renewing a lease it could not use. The
// reads of stored blocks (pages of up to 64 MiB for members) keep 10 s.
func openStore(ctx context.Context, cfg config.Config, log *slog.Logger) (*state.Manager, error) {
	limits := state.Limits{Lock: cfg.LeaseTTL / 2}
	if cfg.Mode == "leader" {
		limits.Call = cfg.LeaseTTL / 2
	}
	wait := 100 * time.Millisecond
	for {
		st, err := state.Open(ctx, cfg.PostgresURL, limits)
		var unreachable *pgconn.ConnectError
		if err == nil || !errors.As(err, &unreachable) {
			return st, err
		}
		log.Warn("PostgreSQL unreachable: waiting for it", "err", err, "retry_in", wait)
		if !sleep(ctx, wait) {
			return nil, err
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// loadKeys reads the leaders' allowlist (--leaders), which verifies every
// block; the co-signer quorum, if --threshold is above 1; and the node's
// signing key: a candidate's, which must be on the allowlist, or a
// member's that co-signs.
func loadKeys(cfg config.Config, log *slog.Logger) (*signer.Verifier, *signer.Signer, *signer.Quorum, error) {
	var allowed []common.Address
	for _, a := range cfg.Leaders {
		allowed = append(allowed, common.HexToAddress(a))
	}
	verifier, err := signer.NewVerifier(allowed)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("--leaders: %w", err)
	}
	var quorum *signer.Quorum
	if cfg.Threshold > 1 {
		var cosigners []common.Address
		for _, a := range cfg.Cosigners {
			cosigners = append(cosigners, common.HexToAddress(a))
		}
		if quorum, err = signer.NewQuorum(cosigners, cfg.Threshold); err != nil {
			return nil, nil, nil, fmt.Errorf("--cosigners, --threshold: %w", err)
		}
		verifier = verifier.WithQuorum(quorum)
	}
	if Role(cfg.Mode) != RoleLeader && quorum == nil {
		return verifier, nil, nil, nil
	}
	flag, load := "--signer-key", func() (*signer.Signer, error) { return signer.LoadKey(cfg.SignerKey) }
	if cfg.SignerKeystore != "" {
		flag, load = "--signer-keystore", func() (*signer.Signer, error) { return signer.LoadKeystore(cfg.SignerKeystore, cfg.SignerPasswordFile) }
	}
	sgn, err := load()
	if err != nil {
		return nil, nil, nil, err
	}
	if Role(cfg.Mode) != RoleLeader { // a member co-signs with a listed key, or not at all
		if !quorum.Listed(sgn.Address) {
			log.Info("not a co-signer: this member's key is not in --cosigners", "address", sgn.Address)
			return verifier, nil, quorum, nil
		}
		if slices.Contains(allowed, sgn.Address) {
			// The default --signer-key is the default leader's: one key
			// on two nodes could sign two blocks at one height and epoch.
			return nil, nil, nil, fmt.Errorf("%s of this member is %s, a leader's key (--leaders): a co-signer key belongs to one node; give the member its own", flag, sgn.Address)
		}
		log.Info("co-signing blocks", "address", sgn.Address, "threshold", quorum.Threshold(), "cosigners", quorum.Size())
		return verifier, sgn, quorum, nil
	}
	if !slices.Contains(allowed, sgn.Address) {
		return nil, nil, nil, fmt.Errorf("%s is the key of %s, which --leaders does not list: members would reject every block", flag, sgn.Address)
	}
	return verifier, sgn, quorum, nil
}

// roleDeps returns a candidate's elector, and where a node follows from: a
// candidate from the cluster store it writes to, a member from the
// leader's block API.
func roleDeps(cfg config.Config, rdb redis.UniversalClient, st *state.Manager) (*election.Elector, Source, error) {
	if Role(cfg.Mode) != RoleLeader {
		return nil, syncer.NewLeaderAPI(rdb, cfg.ClusterID), nil
	}
	el, err := election.New(rdb, election.Options{Prefix: cfg.ClusterID, ID: cfg.InstanceID, TTL: cfg.LeaseTTL})
	if err != nil {
		return nil, nil, err
	}
	return el, st, nil
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
