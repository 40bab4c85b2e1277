package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// watchCmd shows the consensus nodes of the running stage, refreshed, so
// that a reader can watch a failover or a halt happen in one terminal.
func watchCmd() *cobra.Command {
	var (
		nodes  []string
		every  time.Duration
		frames int
	)
	cmd := &cobra.Command{
		Use:   "watch",
		Short: "Show every consensus node's role, leader, head, lag, readiness and last error, refreshed",
		Long: `watch reads /status from each consensus node (stages 2, 3 and 4 serve it
on their --health-addr) and prints one line per node: its id, role, the
leader it follows, its head (and CometBFT height), its lag, whether it is
ready, and why not. It redraws every --every until Ctrl-C.

--nodes defaults to the ports make run-stage3 and make run-stage4 use.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			client := &http.Client{Timeout: every}
			for i := 0; frames == 0 || i < frames; i++ {
				if i > 0 {
					select {
					case <-cmd.Context().Done():
						return nil
					case <-time.After(every):
					}
					if frames != 1 {
						fmt.Fprint(out, "\033[H\033[2J") // home, clear: a redraw in place
					}
				}
				renderNodes(out, pollNodes(cmd.Context(), client, nodes), time.Now())
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&nodes, "nodes", []string{"127.0.0.1:8080", "127.0.0.1:8081", "127.0.0.1:8082", "127.0.0.1:8083"}, "host:port of each node's HTTP API (/status)")
	f.DurationVar(&every, "every", time.Second, "time between refreshes, and each request's time limit")
	f.IntVar(&frames, "frames", 0, "stop after this many refreshes (0: until Ctrl-C)")
	bindEnv(f, map[string]string{"nodes": "DEVNET_NODES", "every": "DEVNET_WATCH_EVERY"})
	return cmd
}

// nodeRow is one node's /status as watch shows it. The stages name their
// fields differently: stage 4 has a height and a validator instead of a
// role and an id.
type nodeRow struct {
	addr                     string
	id, role, leader, reason string
	head, height, lag        string
	ready                    bool
	err                      error
}

// pollNodes reads every node's /status at once.
func pollNodes(ctx context.Context, client *http.Client, addrs []string) []nodeRow {
	rows := make([]nodeRow, len(addrs))
	var wg sync.WaitGroup
	for i, addr := range addrs {
		wg.Go(func() { rows[i] = pollNode(ctx, client, addr) })
	}
	wg.Wait()
	return rows
}

func pollNode(ctx context.Context, client *http.Client, addr string) nodeRow {
	row := nodeRow{addr: addr}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/status", nil)
	if err != nil {
		row.err = err
		return row
	}
	resp, err := client.Do(req)
	if err != nil {
		row.err = err
		return row
	}
	defer resp.Body.Close()
	var s map[string]any
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&s); err != nil {
		row.err = fmt.Errorf("/status: %s, %w", resp.Status, err)
		return row
	}
	str := func(keys ...string) string {
		for _, k := range keys {
			switch v := s[k].(type) {
			case string:
				if v != "" {
					return v
				}
			case float64:
				return fmt.Sprint(uint64(v))
			}
		}
		return "-"
	}
	row.id, row.role, row.leader = str("id", "validator"), str("role"), str("leader")
	if row.role == "-" && s["validator"] != nil {
		row.role = "validator"
	}
	row.head, row.height, row.lag = str("head", "execution_head"), str("height"), str("lag")
	row.ready, _ = s["ready"].(bool)
	row.reason = str("reason")
	if row.id != "-" && len(row.id) > 16 {
		row.id = row.id[:16] // a validator address: the first 8 bytes tell them apart
	}
	return row
}

// renderNodes prints rows as a table, with the time of the refresh.
func renderNodes(w io.Writer, rows []nodeRow, at time.Time) {
	fmt.Fprintf(w, "%s\n", at.Format("15:04:05"))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tID\tROLE\tLEADER\tHEAD\tHEIGHT\tLAG\tREADY\tREASON")
	for _, r := range rows {
		if r.err != nil {
			fmt.Fprintf(tw, "%s\t-\tdown\t-\t-\t-\t-\tno\t%s\n", r.addr, oneLine(r.err.Error()))
			continue
		}
		ready := "yes"
		if !r.ready {
			ready = "no"
		}
		reason := r.reason
		if reason == "-" {
			reason = ""
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.addr, r.id, r.role, r.leader, r.head, r.height, r.lag, ready, oneLine(reason))
	}
	_ = tw.Flush()
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 100 {
		s = s[:97] + "..."
	}
	return s
}
