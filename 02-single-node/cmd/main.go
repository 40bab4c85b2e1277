// Command single-node is stage 2 of the tutorial: a complete single-node
// block producer for geth (App = BlockBuilder + StateManager).
//
//	go run ./cmd/main.go --instance-id node-1
//	go run ./cmd/main.go --instance-id node-1 --block-mode on-demand --max-idle 10s
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/geth-consensus/tutorial/02-single-node/internal/config"
	"github.com/geth-consensus/tutorial/02-single-node/internal/node"
	"github.com/geth-consensus/tutorial/02-single-node/internal/version"
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
		Use:     "single-node",
		Version: version.Get().String(),
		Short:   "Single-node consensus layer for geth (stage 2)",
		Long: `single-node drives one geth through the Engine API as the only block producer.
It makes a block every --block-time, or on demand when transactions are pending,
persists every block it finalizes, and recovers geth after crashes and wipes.

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
	return cmd
}
