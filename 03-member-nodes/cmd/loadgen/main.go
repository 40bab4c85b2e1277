// Command loadgen sends signed transfers to a chain and reports inclusion
// latency and throughput. Point it at your own chain's RPC (it needs HTTP and
// WebSocket on the same address, as geth's --http + --ws on one port gives).
//
//	go run ./cmd/loadgen --rpc-url http://localhost:8545 --rate 200 --duration 30s
//	go run ./cmd/loadgen --burst 5000
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/geth-consensus/tutorial/03-member-nodes/internal/config"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/loadgen"
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
	var (
		rpcURL   string
		keys     string
		rate     float64
		duration time.Duration
		burst    int
		batch    int
		wait     time.Duration
		calldata int
		blobs    int
	)
	cmd := &cobra.Command{
		Use:     "loadgen",
		Version: version.Get().String(),
		Short:   "Send transfers and measure their inclusion latency and throughput",
		Long: `loadgen sends signed transfers from funded accounts and reports how long they
took to be included, and at what rate.

Every flag falls back to the environment variable named in its help.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := config.ApplyEnv(cmd, os.LookupEnv); err != nil {
				return err
			}
			var errs []error
			if burst < 0 || rate < 0 || batch <= 0 || duration <= 0 {
				errs = append(errs, errors.New("--burst and --rate must not be negative; --batch and --duration must be positive"))
			}
			if calldata < 0 || calldata > loadgen.MaxCalldata {
				errs = append(errs, fmt.Errorf("--calldata %d: want 0 to %d bytes (geth's pool refuses transactions over 128 KB)", calldata, loadgen.MaxCalldata))
			}
			if blobs < 0 || blobs > loadgen.MaxBlobs {
				errs = append(errs, fmt.Errorf("--blobs %d: want 0 to %d per transaction (EIP-7594)", blobs, loadgen.MaxBlobs))
			}
			if (burst == 0) == (rate == 0) {
				errs = append(errs, errors.New("give exactly one of --burst N or --rate R"))
			}
			hexKeys := loadgen.DevKeys
			if keys != "" {
				hexKeys = strings.Split(keys, ",")
			}
			parsed, err := loadgen.ParseKeys(hexKeys)
			errs = append(errs, err)
			if err := errors.Join(errs...); err != nil {
				return err
			}
			g, err := loadgen.New(cmd.Context(), rpcURL, parsed)
			if err != nil {
				return err
			}
			defer g.Close()
			g.Calldata, g.Blobs = calldata, blobs
			var r loadgen.Result
			if burst > 0 {
				r, err = g.Burst(cmd.Context(), burst, batch, wait)
			} else {
				r, err = g.Steady(cmd.Context(), rate, duration, wait)
			}
			if err != nil {
				return err
			}
			fmt.Printf("sent %d, included %d in %d blocks, pending %d\n", r.Sent, r.Included, r.Blocks, r.Pending())
			if r.Included > 0 { // no latency or rate to report otherwise
				fmt.Printf("latency p50 %s  p99 %s  max %s\n", r.Percentile(50), r.Percentile(99), r.Percentile(100))
				fmt.Printf("throughput %.0f tx/s  %.1f Mgas/s  %.2f MB/s over %s (sending took %s)\n", r.TxPerSec(), r.MgasPerSec(), r.MBPerSec(), r.Duration.Round(time.Millisecond), r.Sending.Round(time.Millisecond))
			}
			if r.Pending() > 0 {
				return fmt.Errorf("%d transactions still pending after %s", r.Pending(), wait)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&rpcURL, "rpc-url", "http://localhost:8545", "JSON-RPC URL (HTTP; WebSocket on the same address)")
	f.StringVar(&keys, "private-keys", "", "comma-separated sender keys (default: the ten dev accounts)")
	f.Float64Var(&rate, "rate", 0, "steady load: transfers per second")
	f.DurationVar(&duration, "duration", 20*time.Second, "steady load: how long")
	f.IntVar(&burst, "burst", 0, "burst: this many transfers as fast as possible")
	f.IntVar(&batch, "batch", 200, "burst: transfers per JSON-RPC batch")
	f.DurationVar(&wait, "wait", 30*time.Second, "how long to wait for inclusion after the last send")
	f.IntVar(&blobs, "blobs", 0, "blobs per transaction, with cell proofs; 0 sends no blob transactions")
	f.IntVar(&calldata, "calldata", 0, "zero bytes of calldata per transaction (EIP-7623 floor: 10 gas each)")
	config.BindEnv(f, map[string]string{
		"rpc-url": "ETH_RPC_URL", "private-keys": "LOADGEN_KEYS", "rate": "LOADGEN_RATE", "duration": "LOADGEN_DURATION",
		"burst": "LOADGEN_BURST", "batch": "LOADGEN_BATCH", "wait": "LOADGEN_WAIT", "calldata": "LOADGEN_CALLDATA", "blobs": "LOADGEN_BLOBS",
	})
	return cmd
}
