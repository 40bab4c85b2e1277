// Command devnet runs the tutorial's local network without Docker: geth
// nodes built from the pinned go-ethereum module and, on request, Redis and
// PostgreSQL from the Debian packages.
//
//	devnet up --geth 2 --redis --postgres 2   # start (ports as docker-compose.yml)
//	devnet status                             # what runs, heads, peers
//	devnet send --count 10                    # a few transfers from a dev account
//	devnet down [--wipe]                      # stop (and delete the state)
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/geth-consensus/tutorial/devnet"
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
	root := &cobra.Command{
		Use:     "devnet",
		Version: buildVersion(),
		Short:   "Local geth, Redis and PostgreSQL for the tutorial, without Docker",
		Long: `devnet runs the tutorial's local network without Docker: geth nodes built
from the pinned go-ethereum module, peered with each other, and on request
Redis and PostgreSQL from the Debian packages, on docker-compose's ports.

Every flag but --wipe falls back to the environment variable named in its help;
a flag given on the command line wins.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return applyEnv(cmd)
		},
	}
	var dir string
	root.PersistentFlags().StringVar(&dir, "dir", ".devnet", "state directory: datadirs, logs, pid files")
	bindEnv(root.PersistentFlags(), map[string]string{"dir": "DEVNET_DIR"})
	root.AddCommand(upCmd(&dir), downCmd(&dir), statusCmd(&dir), watchCmd(), sendCmd(), faultCmd(&dir), faultsServeCmd())
	return root
}

func upCmd(dir *string) *cobra.Command {
	cfg := devnet.Config{GenesisPath: "genesis.json", JWTPath: "jwt.hex", GethNodes: 1, Detach: true}
	var (
		promJob   string
		promNodes []string
		promRules string
		faults    bool
	)
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start the network in the background (a no-op if it already runs what is asked)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Minute)
			defer cancel()
			var prom *devnet.PrometheusConfig // checked before anything starts
			if promJob != "" {
				var err error
				if prom, err = prometheusConfig(promJob, promNodes, cmd.Flags().Changed("prometheus-nodes"), promRules); err != nil {
					return err
				}
			}
			if s, err := devnet.ReadState(*dir); err == nil && allAlive(s) {
				promOK := prom == nil || slices.Equal(s.PrometheusTargets[promJob], prom.Targets[promJob])
				switch {
				case s.Covers(cfg) && promOK && (!faults || s.Faults != ""):
					if faults { // a geth restarted by hand peers directly
						if err := devnet.PeerThroughFaults(ctx, *dir); err != nil {
							return err
						}
					}
					fmt.Println("already up:")
					return printStatus(cmd.Context(), s)
				case s.Covers(cfg):
					if !promOK {
						fmt.Printf("starting Prometheus for %s beside the running network\n", promJob)
						if _, err := devnet.StartPrometheusIn(ctx, *dir, *prom, cfg.Logger); err != nil {
							return err
						}
					}
					if faults && s.Faults == "" {
						fmt.Println("starting the fault points in front of the running network")
						if err := startFaults(ctx, *dir); err != nil {
							return err
						}
					}
					return printState(cmd.Context(), *dir)
				}
				// Another stage's network (fewer geths, no Redis, other geth
				// flags): restart it as asked; the datadirs stay.
				fmt.Printf("restarting the running network (%d geth, %d PostgreSQL, Redis %t, geth flags %q) as asked\n",
					len(s.Geth), len(s.Postgres), s.Redis != "", s.GethArgs)
			}
			_ = devnet.StopDir(*dir) // what runs, or leftovers of a partial run
			cfg.Dir = *dir
			n, err := devnet.Start(ctx, cfg)
			if err != nil {
				return err
			}
			if len(n.Geth) > 1 {
				if err := n.WaitPeered(ctx, 1); err != nil {
					return err
				}
			}
			if prom != nil {
				if _, err := n.StartPrometheus(ctx, *prom); err != nil {
					return err
				}
			}
			if faults {
				if err := startFaults(ctx, *dir); err != nil {
					return err
				}
			}
			return printState(cmd.Context(), *dir)
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.GethNodes, "geth", cfg.GethNodes, "number of geth nodes (node i: RPC 8545+i, Engine API 8551+i)")
	f.BoolVar(&cfg.Redis, "redis", false, "start Redis on 6379")
	f.StringVar(&cfg.RedisPassword, "redis-password", "", "make Redis require this password (stage 3: --redis-url redis://:PASSWORD@localhost:6379/0)")
	f.IntVar(&cfg.Postgres, "postgres", 0, "number of PostgreSQL servers (5432, then 5433 for the member)")
	f.StringVar(&cfg.GenesisPath, "genesis", cfg.GenesisPath, "genesis file")
	f.StringVar(&cfg.JWTPath, "jwt-secret", cfg.JWTPath, "JWT secret file shared by every geth")
	f.BoolVar(&cfg.FreePorts, "free-ports", false, "use free ports instead of the docker-compose ones")
	f.StringArrayVar(&cfg.GethArgs, "geth-arg", nil, "extra flag for every geth, repeatable (e.g. --geth-arg=--miner.recommit=100ms; in the environment, space-separated)")
	f.StringVar(&promJob, "prometheus", "", "also start Prometheus on 9090 (Debian's prometheus), scraping every geth and the --prometheus-nodes as this job of devnet/prometheus.yml: single-node, member-nodes or cometbft-consensus")
	f.StringSliceVar(&promNodes, "prometheus-nodes", nil, "host:port of each consensus node's /metrics, comma-separated (default: where make run puts stage 2, 127.0.0.1:8080, and make run-stage3 and run-stage4 their nodes, 8080-8083)")
	f.BoolVar(&faults, "faults", false, "also put fault points (TCP proxies) in front of every geth's Engine API and RPC, Redis and PostgreSQL, on their port + 10000, and between the geths: see devnet fault --help")
	f.StringVar(&promRules, "prometheus-rules", "0*-*/monitoring/alerts.yml", "alert rule files (a glob, relative to the working directory) Prometheus loads")
	bindEnv(f, map[string]string{
		"prometheus": "DEVNET_PROMETHEUS", "prometheus-nodes": "DEVNET_PROMETHEUS_NODES", "prometheus-rules": "DEVNET_PROMETHEUS_RULES",
		"geth": "DEVNET_GETH", "redis": "DEVNET_REDIS", "redis-password": "DEVNET_REDIS_PASSWORD", "postgres": "DEVNET_POSTGRES",
		"genesis": "DEVNET_GENESIS", "jwt-secret": "DEVNET_JWT_SECRET",
		"free-ports": "DEVNET_FREE_PORTS", "geth-arg": "DEVNET_GETH_ARGS", "faults": "DEVNET_FAULTS",
	})
	return cmd
}

func downCmd(dir *string) *cobra.Command {
	var wipe bool
	cmd := &cobra.Command{
		Use:   "down",
		Short: "Stop every process of the network",
		RunE: func(*cobra.Command, []string) error {
			if err := devnet.StopDir(*dir); err != nil {
				return err
			}
			if wipe {
				return os.RemoveAll(*dir)
			}
			return nil
		},
	}
	// No environment fallback: deleting the chains takes a word on the command line.
	cmd.Flags().BoolVar(&wipe, "wipe", false, "also delete the state directory (chains, databases, logs)")
	return cmd
}

func statusCmd(dir *string) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the processes, endpoints, heads and peers",
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := devnet.ReadState(*dir)
			if err != nil {
				return err
			}
			if err := printStatus(cmd.Context(), s); err != nil {
				return err
			}
			if !allAlive(s) {
				return errors.New("some processes are down (see the logs in " + *dir + ")")
			}
			return nil
		},
	}
}

func sendCmd() *cobra.Command {
	var (
		rpcURL    string
		count     int
		interval  time.Duration
		key       int
		waitBlock uint64
	)
	cmd := &cobra.Command{
		Use:   "send",
		Short: "Send transfers from a funded dev account, one per interval",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if key < 0 || key >= len(devnet.DevKeys) {
				return fmt.Errorf("--key %d: want 0-%d", key, len(devnet.DevKeys)-1)
			}
			eth, err := ethclient.DialContext(cmd.Context(), rpcURL)
			if err != nil {
				return err
			}
			defer eth.Close()
			if err := waitForBlock(cmd.Context(), eth, waitBlock); err != nil {
				return fmt.Errorf("%s: %w", rpcURL, err)
			}
			sender, err := devnet.NewSender(cmd.Context(), eth, key)
			if err != nil {
				return fmt.Errorf("%s: %w", rpcURL, err)
			}
			to := common.HexToAddress("0x000000000000000000000000000000000000dEaD")
			for i := 0; count == 0 || i < count; i++ {
				tx, err := sender.Transfer(cmd.Context(), to)
				if err != nil {
					return fmt.Errorf("send to %s: %w", rpcURL, err)
				}
				fmt.Printf("sent %s (nonce %d)\n", tx.Hash(), tx.Nonce())
				select {
				case <-cmd.Context().Done():
					return nil
				case <-time.After(interval):
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&rpcURL, "rpc-url", "http://localhost:8545", "geth JSON-RPC URL")
	f.IntVar(&count, "count", 10, "transfers to send, 0 = until interrupted")
	f.DurationVar(&interval, "interval", 300*time.Millisecond, "pause between transfers")
	f.IntVar(&key, "key", 1, "dev account index (0-9) to send from")
	f.Uint64Var(&waitBlock, "wait-block", 0, "send nothing until the node's head reaches this block (for a geth whose peers build the blocks)")
	bindEnv(f, map[string]string{
		"rpc-url": "ETH_RPC_URL", "count": "DEVNET_SEND_COUNT", "interval": "DEVNET_SEND_INTERVAL", "key": "DEVNET_SEND_KEY",
		"wait-block": "DEVNET_SEND_WAIT_BLOCK",
	})
	return cmd
}

// waitForBlock polls until the node's head reaches n. Transfers sent to a
// geth whose peers make the blocks must wait for the chain to start: a geth
// drops transactions gossiped to it until it has had its first
// forkchoiceUpdated, and never asks for them again, so the first transfers
// would be lost to the block makers and every later one from the same sender
// would wait behind the gap in its nonces.
func waitForBlock(ctx context.Context, eth *ethclient.Client, n uint64) error {
	if n == 0 {
		return nil
	}
	for {
		head, err := eth.BlockNumber(ctx)
		if err != nil {
			return fmt.Errorf("waiting for block %d: %w", n, err)
		}
		if head >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for block %d (head %d): %w", n, head, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// prometheusConfig is what `up --prometheus job` starts Prometheus with:
// the nodes given, or those make's targets run for that job; and the rule
// files, of which there must be some.
func prometheusConfig(job string, nodes []string, nodesGiven bool, rules string) (*devnet.PrometheusConfig, error) {
	if err := devnet.CheckPrometheusJob(job); err != nil {
		return nil, err
	}
	files, err := filepath.Glob(rules)
	if err != nil {
		return nil, fmt.Errorf("--prometheus-rules %q: %w", rules, err)
	}
	if len(files) == 0 {
		wd, _ := os.Getwd()
		return nil, fmt.Errorf("--prometheus-rules %q matches no file in %s: run devnet from the repository root, or name the rule files", rules, wd)
	}
	if err := devnet.CheckRules(files...); err != nil {
		return nil, err
	}
	if !nodesGiven {
		nodes = []string{"127.0.0.1:8080"} // make run's single node
		if job != "single-node" {
			nodes = append(nodes, "127.0.0.1:8081", "127.0.0.1:8082", "127.0.0.1:8083")
		}
	}
	return &devnet.PrometheusConfig{Targets: map[string][]string{job: nodes}, RuleFiles: files}, nil
}

// startFaults starts the fault points, run by this very binary.
func startFaults(ctx context.Context, dir string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	if s, err := devnet.ReadState(dir); err == nil && len(s.Geth) > 1 {
		fmt.Println("starting the fault points; the geths then peer through them (geth redials a peer at most every 35 s)")
	}
	return devnet.StartFaultsIn(ctx, dir, exe)
}

// printState prints the status of the network in dir.
func printState(ctx context.Context, dir string) error {
	s, err := devnet.ReadState(dir)
	if err != nil {
		return err
	}
	return printStatus(ctx, s)
}

func allAlive(s *devnet.State) bool {
	for _, p := range s.PIDFiles {
		pid, err := devnet.ReadPIDFile(p)
		if err != nil || pid == 0 || !devnet.Alive(pid) {
			return false
		}
	}
	return len(s.PIDFiles) > 0
}

func printStatus(ctx context.Context, s *devnet.State) error {
	for _, g := range s.Geth {
		pid, _ := devnet.ReadPIDFile(g.PIDFile)
		state := "down"
		if pid != 0 && devnet.Alive(pid) {
			state = fmt.Sprintf("pid %d", pid)
			if eth, err := ethclient.DialContext(ctx, g.RPC); err == nil {
				c, cancel := context.WithTimeout(ctx, 2*time.Second)
				if n, err := eth.BlockNumber(c); err == nil {
					state += fmt.Sprintf(", head #%d", n)
				}
				cancel()
				eth.Close()
			}
		}
		fmt.Printf("%-10s %-28s rpc %s  engine %s\n", g.Name, state, g.RPC, g.Engine)
	}
	if s.RedisURL != "" {
		fmt.Printf("%-10s %s\n", "redis", s.RedisURL)
	} else if s.Redis != "" {
		fmt.Printf("%-10s %s\n", "redis", s.Redis)
	}
	for i, url := range s.Postgres {
		fmt.Printf("postgres-%d %s\n", i, url)
	}
	if s.Prometheus != "" {
		var jobs []string
		for job, addrs := range s.PrometheusTargets {
			jobs = append(jobs, fmt.Sprintf("%s %s", job, strings.Join(addrs, ",")))
		}
		sort.Strings(jobs)
		fmt.Printf("%-10s %s, scraping %s (%s/targets)\n", "prometheus", s.Prometheus, strings.Join(jobs, "; "), s.Prometheus)
	}
	if s.Faults != "" {
		if err := printFaults(s); err != nil {
			fmt.Printf("%-10s %s: %v\n", "faults", s.Faults, err)
		}
	}
	return nil
}

// bindEnv records the environment variable each flag falls back to and names
// it in the flag's help.
func bindEnv(f *pflag.FlagSet, vars map[string]string) {
	for name, key := range vars {
		flag := f.Lookup(name)
		flag.Usage += fmt.Sprintf(" (env %s)", key)
		_ = f.SetAnnotation(name, "env", []string{key})
	}
}

// applyEnv sets every flag of cmd not given on the command line from its
// environment variable; a malformed value is an error that names the
// variable. A repeatable flag takes a space-separated list.
func applyEnv(cmd *cobra.Command) error {
	var errs []error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		keys := f.Annotations["env"]
		if len(keys) == 0 || f.Changed {
			return
		}
		v, ok := os.LookupEnv(keys[0])
		if !ok {
			return
		}
		values := []string{v}
		if f.Value.Type() == "stringArray" {
			values = strings.Fields(v)
		}
		for _, value := range values {
			if err := cmd.Flags().Set(f.Name, value); err != nil { // marks it Changed, as on the command line
				errs = append(errs, fmt.Errorf("%s=%q (for --%s): %w", keys[0], v, f.Name, err))
				return
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
