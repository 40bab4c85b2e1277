package main

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	toxiclient "github.com/Shopify/toxiproxy/v2/client"
	"github.com/spf13/cobra"

	"github.com/geth-consensus/tutorial/devnet"
)

// faultsServeCmd is the faults process `up --faults` starts: the links and
// toxiproxy's API, until it is stopped.
func faultsServeCmd() *cobra.Command {
	var (
		api   string
		links []string
	)
	cmd := &cobra.Command{
		Use:    "faults-serve",
		Short:  "Run the fault points (started by up --faults)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			specs := make([]devnet.LinkSpec, len(links))
			for i, l := range links {
				var err error
				if specs[i], err = devnet.ParseLinkSpec(l); err != nil {
					return err
				}
			}
			return devnet.ServeFaults(api, specs)
		},
	}
	cmd.Flags().StringVar(&api, "api", "127.0.0.1:8474", "toxiproxy's API")
	cmd.Flags().StringArrayVar(&links, "link", nil, "name=listen>upstream, repeatable")
	return cmd
}

// faultCmd drives the fault points of a network started with --faults.
func faultCmd(dir *string) *cobra.Command {
	var (
		oneWay string
		jitter time.Duration
	)
	cmd := &cobra.Command{
		Use:   "fault",
		Short: "Cut, slow, throttle or make lossy a link of a network started with --faults; heal it",
		Long: `fault drives the fault points that 'devnet up --faults' puts in front of the
network: each is a TCP proxy (toxiproxy) that a client dials instead of the
server, on the server's port + 10000 (free ports with --free-ports):

  geth-<i>-engine   geth i's Engine API   (18551+i → 8551+i)
  geth-<i>-rpc      geth i's JSON-RPC     (18545+i → 8545+i)
  redis             Redis                 (16379 → 6379)
  postgres-<i>      PostgreSQL i          (15432+i → 5432+i)
  geth-<i>-geth-<j> geth i's peering with geth j: i dials j through it (a
                    free port); cut geth-0-geth-1 and geth-1-geth-0 to part them

The geths are made to peer through their links as the process starts
(admin_removePeer, admin_addPeer); a geth restarted by hand peers directly
again until 'devnet up --faults' runs once more. Point a consensus node at the link (--eth-client-url http://localhost:18551,
--redis-url redis://localhost:16379/0, ...), then harm it. 'devnet status'
and 'devnet fault list' show each link's faults. A fault stays until healed.
'fault add' puts any other TCP link behind a fault point (CometBFT's p2p:
point a node's persistent_peers at the link's port).`,
	}
	apply := func(use, short string, nargs int, fault func(args []string) (devnet.Fault, error)) *cobra.Command {
		return &cobra.Command{Use: use, Short: short, Args: cobra.ExactArgs(nargs), RunE: func(cmd *cobra.Command, args []string) error {
			c, err := faultsClient(*dir)
			if err != nil {
				return err
			}
			f, err := fault(args)
			if err != nil {
				return err
			}
			if oneWay != "" {
				f.Direction = devnet.Direction(oneWay)
			}
			if err := applyFault(c, args[0], f); err != nil {
				return err
			}
			fmt.Printf("%s: %s\n", args[0], describe(f))
			return nil
		}}
	}
	cut := apply("cut LINK", "Hold everything on the link (a partition): nothing crosses until healed", 1,
		func([]string) (devnet.Fault, error) { return devnet.Cut(), nil })
	latency := apply("latency LINK DELAY", "Delay each way by DELAY (e.g. 50ms), ± --jitter", 2, func(args []string) (devnet.Fault, error) {
		d, err := time.ParseDuration(args[1])
		if err != nil || d < 0 {
			return devnet.Fault{}, fmt.Errorf("delay %q: want a duration such as 50ms", args[1])
		}
		return devnet.Latency(d, jitter), nil
	})
	latency.Flags().DurationVar(&jitter, "jitter", 0, "random variation of the delay, each way")
	bandwidth := apply("bandwidth LINK KBPS", "Limit each way to KBPS kilobytes a second", 2, func(args []string) (devnet.Fault, error) {
		k, err := strconv.ParseInt(args[1], 10, 64)
		if err != nil || k <= 0 {
			return devnet.Fault{}, fmt.Errorf("rate %q: want kilobytes a second, at least 1", args[1])
		}
		return devnet.Bandwidth(k), nil
	})
	loss := apply("loss LINK RATE", "Lose RATE (0-1) of the chunks each way, each then resent after 200 ms as TCP would", 2, func(args []string) (devnet.Fault, error) {
		r, err := strconv.ParseFloat(args[1], 64)
		if err != nil || r < 0 || r > 1 {
			return devnet.Fault{}, fmt.Errorf("rate %q: want a fraction from 0 to 1", args[1])
		}
		return devnet.Loss(r), nil
	})
	for _, c := range []*cobra.Command{cut, latency, bandwidth, loss} {
		c.Flags().StringVar(&oneWay, "one-way", "", "upstream (client to server) or downstream only; both ways when empty")
	}
	heal := &cobra.Command{
		Use:   "heal [LINK...]",
		Short: "Remove every fault from the links named, or from all",
		RunE: func(_ *cobra.Command, args []string) error {
			c, err := faultsClient(*dir)
			if err != nil {
				return err
			}
			proxies, err := c.Proxies()
			if err != nil {
				return err
			}
			if len(args) == 0 {
				for name := range proxies {
					args = append(args, name)
				}
				sort.Strings(args)
			}
			var errs []error
			for _, name := range args {
				p, ok := proxies[name]
				if !ok {
					errs = append(errs, unknownLink(name, proxies))
					continue
				}
				var failed []error
				for _, t := range p.ActiveToxics {
					if err := p.RemoveToxic(t.Name); err != nil {
						failed = append(failed, fmt.Errorf("%s: heal %s: %w", name, t.Name, err))
					}
				}
				if len(failed) == 0 {
					fmt.Printf("%s: healed\n", name)
				}
				errs = append(errs, failed...)
			}
			return errors.Join(errs...)
		},
	}
	add := &cobra.Command{
		Use:   "add NAME LISTEN UPSTREAM",
		Short: "Put another TCP link behind a fault point: clients dial LISTEN (host:port) instead of UPSTREAM",
		Args:  cobra.ExactArgs(3),
		RunE: func(_ *cobra.Command, args []string) error {
			c, err := faultsClient(*dir)
			if err != nil {
				return err
			}
			p, err := c.CreateProxy(args[0], args[1], args[2])
			if err != nil {
				return fmt.Errorf("add %s: %w", args[0], err)
			}
			fmt.Printf("%s: %s → %s\n", p.Name, p.Listen, p.Upstream)
			return nil
		},
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "Show the links and their faults",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			s, err := devnet.ReadState(*dir)
			if err != nil {
				return err
			}
			if s.Faults == "" {
				return errors.New("no fault points: start the network with devnet up --faults")
			}
			return printFaults(s)
		},
	}
	cmd.AddCommand(cut, latency, bandwidth, loss, heal, add, list)
	return cmd
}

// faultsClient connects to the faults process of the network in dir.
func faultsClient(dir string) (*toxiclient.Client, error) {
	s, err := devnet.ReadState(dir)
	if err != nil {
		return nil, err
	}
	if s.Faults == "" {
		return nil, errors.New("no fault points: start the network with devnet up --faults")
	}
	return toxiclient.NewClient(s.Faults), nil
}

func unknownLink(name string, proxies map[string]*toxiclient.Proxy) error {
	var names []string
	for n := range proxies {
		names = append(names, n)
	}
	sort.Strings(names)
	return fmt.Errorf("no link %q (links: %s)", name, strings.Join(names, ", "))
}

// applyFault adds the fault to the link, changing one of the same kind
// and direction in place, as devnet.Link.Apply does in process.
func applyFault(c *toxiclient.Client, name string, f devnet.Fault) error {
	specs, err := f.Toxics()
	if err != nil {
		return err
	}
	proxies, err := c.Proxies()
	if err != nil {
		return err
	}
	p, ok := proxies[name]
	if !ok {
		return unknownLink(name, proxies)
	}
	for _, s := range specs {
		if slices.ContainsFunc(p.ActiveToxics, func(t toxiclient.Toxic) bool { return t.Name == s.Name }) {
			_, err = p.UpdateToxic(s.Name, s.Toxicity, toxiclient.Attributes(s.Attributes))
		} else {
			_, err = p.AddToxic(s.Name, s.Type, s.Stream, s.Toxicity, toxiclient.Attributes(s.Attributes))
		}
		if err != nil {
			return fmt.Errorf("%s: %s %s: %w", name, f.Kind, s.Stream, err)
		}
	}
	return nil
}

// describe says what a fault does, for the command's answer.
func describe(f devnet.Fault) string {
	way := "both ways"
	if f.Direction != "" && f.Direction != devnet.Both {
		way = string(f.Direction) + " only"
	}
	switch f.Kind {
	case "latency":
		return fmt.Sprintf("latency %dms ± %dms, %s", f.Attrs["latency"], f.Attrs["jitter"], way)
	case "bandwidth":
		return fmt.Sprintf("%d KB/s, %s", f.Attrs["rate"], way)
	case "loss":
		return fmt.Sprintf("loss %v, %s", f.Attrs["rate"], way)
	}
	return "cut, " + way
}

// printFaults prints each link with its faults, as the faults process has
// them now.
func printFaults(s *devnet.State) error {
	proxies, err := toxiclient.NewClient(s.Faults).Proxies()
	if err != nil {
		return fmt.Errorf("faults process at %s: %w", s.Faults, err)
	}
	names := make([]string, 0, len(proxies))
	for n := range proxies {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Printf("%-10s %s (toxiproxy API)\n", "faults", s.Faults)
	for _, n := range names {
		p := proxies[n]
		var faults []string
		for _, t := range p.ActiveToxics {
			faults = append(faults, fmt.Sprintf("%s %v", t.Name, t.Attributes))
		}
		sort.Strings(faults)
		state := "ok"
		if len(faults) > 0 {
			state = strings.Join(faults, ", ")
		}
		fmt.Fprintf(os.Stdout, "  %-16s %s → %s  %s\n", n, p.Listen, p.Upstream, state)
	}
	return nil
}
