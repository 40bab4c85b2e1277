// Command member-nodes is stage 3 of the tutorial: leader candidates elected
// through a Redis lease produce blocks into a PostgreSQL store; member nodes
// follow, verify and apply every block to their own geth and database.
//
//	go run ./cmd/main.go --instance-id leader-1 --mode leader
//	go run ./cmd/main.go --instance-id member-1 --mode member \
//	  --eth-client-url http://localhost:8552 \
//	  --postgres-url "postgres://postgres:postgres@localhost:5433/consensus?sslmode=disable" \
//	  --health-addr :8081
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/geth-consensus/tutorial/03-member-nodes/internal/config"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/node"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/version"
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
		Use:     "member-nodes",
		Version: version.Get().String(),
		Short:   "Leader-elected consensus layer for geth with member nodes (stage 3)",
		Long: `member-nodes drives one geth through the Engine API as part of a cluster.

--mode leader: a candidate. While it holds the Redis lease it makes a block every
--block-time (or on demand), signs it and commits it to the cluster's PostgreSQL
in one fenced transaction before geth makes it final; otherwise it follows.
--mode member: follows the leader it finds through Redis, verifies every block
(signature, epoch, number, parent) and applies it to its geth and its own
PostgreSQL. It never produces.

Every node serves /blocks, /status, /metrics, /healthz and /readyz.

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
