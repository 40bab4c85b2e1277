// Command cometbft-consensus is stage 4 of the tutorial: a validator that
// embeds a CometBFT node with an ABCI app driving its own geth, so that
// several validators agree on every execution block with BFT finality.
//
//	cometbft init --home ~/.cometbft
//	go run ./cmd/main.go --cmt-home ~/.cometbft
//
//	go run ./cmd/main.go testnet --validators 4 --output .testnet
//	go run ./cmd/main.go --cmt-home .testnet/validator-0 --eth-client-url http://localhost:8551
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/config"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/node"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/registry"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/testnet"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := rootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func rootCmd() *cobra.Command {
	cfg := config.Default()
	cmd := &cobra.Command{
		Use:     "cometbft-consensus",
		Version: version.Get().String(),
		Short:   "CometBFT validator driving geth through the Engine API (stage 4)",
		Long: `cometbft-consensus runs a CometBFT node in process with an ABCI app that turns
every CometBFT height into one execution block on this validator's geth: the
proposer builds it, every validator executes it before voting, and a committed
block is final (head = safe = finalized in geth).

CometBFT's settings (peers, ports, timeouts, keys, genesis) come from the home's
config directory, as made by 'cometbft init' or the testnet command.
Every flag falls back to the environment variable named in its help.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := errors.Join(config.ApplyEnv(cmd, os.LookupEnv), cfg.Validate()); err != nil {
				return err
			}
			return node.Main(cmd.Context(), cfg, node.NewLogger(cfg))
		},
	}
	cfg.Bind(cmd)
	cmd.AddCommand(testnetCmd(), validatorCmd())
	return cmd
}

func testnetCmd() *cobra.Command {
	var (
		o    testnet.Options
		base int
		wan  bool
	)
	cmd := &cobra.Command{
		Use:   "testnet",
		Short: "Write the CometBFT homes of a local validator network",
		Long: `testnet writes <output>/validator-<i> for each validator: keys, one shared
genesis, every other validator as a persistent peer, loopback ports from
--base-port (p2p base+10i, RPC base+10i+1, Prometheus base+10i+4) and tuned
timeouts. Validator i pairs with the local network's geth i: Engine API
http://localhost:<8551+i>.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if wan { // the preset, under any timeout given on the command line
				f := cmd.Flags()
				w := testnet.WANTimeouts
				for name, pair := range map[string][2]*time.Duration{
					"timeout-propose": {&o.TimeoutPropose, &w.TimeoutPropose}, "timeout-propose-delta": {&o.TimeoutProposeDelta, &w.TimeoutProposeDelta},
					"timeout-prevote": {&o.TimeoutPrevote, &w.TimeoutPrevote}, "timeout-precommit": {&o.TimeoutPrecommit, &w.TimeoutPrecommit},
					"timeout-commit": {&o.TimeoutCommit, &w.TimeoutCommit},
				} {
					if !f.Changed(name) {
						*pair[0] = *pair[1]
					}
				}
			}
			o.Ports = testnet.BasePorts(base)
			if err := testnet.Write(o); err != nil {
				return err
			}
			fmt.Printf("geths: one per validator, from genesis.json and jwt.hex, peered, Engine API 8551 and up; without Docker:\n"+
				"  bin/devnet up --geth %d --geth-arg=--miner.recommit=100ms\n", o.Validators+o.FullNodes)
			for i := range o.Validators + o.FullNodes {
				if i == o.Validators {
					fmt.Printf("full nodes, not in the genesis set (validator add makes them validators); geths %d and up:\n", o.Validators)
				}
				fmt.Printf("validator %d: --cmt-home %s --eth-client-url http://localhost:%d --health-addr :%d\n",
					i, testnet.Home(o.Dir, i), 8551+i, 8080+i)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Validators, "validators", 4, "number of validators")
	f.StringVar(&o.Registry, "registry", registry.Address.Hex(), `the validator registry contract, written into the genesis' app_state: its PowerChanged events change the validator set ("": the genesis set, for good)`)
	f.IntVar(&o.FullNodes, "full-nodes", 0, "homes of nodes that follow the chain without being in the genesis set, after the validators'")
	f.StringVar(&o.Dir, "output", ".testnet", "directory of the homes")
	f.StringVar(&o.ChainID, "chain-id", "geth-consensus", "CometBFT chain id")
	f.IntVar(&base, "base-port", 26656, "first port")
	f.StringVar(&o.HostPattern, "host-pattern", "", `how peers reach validator i, e.g. "validator-%d" in docker-compose (nodes then listen on all interfaces); empty: 127.0.0.1`)
	f.BoolVar(&wan, "wan", false, "timeouts for validators in several regions (BENCHMARKS-wan.md), under any --timeout-* given")
	f.DurationVar(&o.TimeoutPropose, "timeout-propose", testnet.TunedTimeouts.Propose, "consensus.timeout_propose")
	f.DurationVar(&o.TimeoutProposeDelta, "timeout-propose-delta", testnet.TunedTimeouts.ProposeDelta, "consensus.timeout_propose_delta: how much longer each round waits for a proposal than the one before")
	f.DurationVar(&o.TimeoutPrevote, "timeout-prevote", testnet.TunedTimeouts.Prevote, "consensus.timeout_prevote")
	f.DurationVar(&o.TimeoutPrecommit, "timeout-precommit", testnet.TunedTimeouts.Precommit, "consensus.timeout_precommit")
	f.DurationVar(&o.TimeoutCommit, "timeout-commit", testnet.TunedTimeouts.Commit, "consensus.timeout_commit: the pause after each decided height, which sets the block time (this, plus what a height costs); below 1s the validators need --allow-clock-drift")
	return cmd
}
