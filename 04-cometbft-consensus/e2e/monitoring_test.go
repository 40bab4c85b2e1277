package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/geth-consensus/tutorial/devnet"

	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/loadgen"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/testnet"
)

// The stage's dashboard (monitoring/dashboard.json, provisioned in Grafana by
// docker compose) is a dashboard Grafana can show: JSON, ids, grid, every
// panel on the provisioned Prometheus; and its alert rules are ones
// Prometheus loads (promtool check rules).
func TestDashboardAndRulesAreValid(t *testing.T) {
	if _, err := devnet.LoadDashboard(filepath.Join("..", "monitoring", "dashboard.json")); err != nil {
		t.Fatal(err)
	}
	if err := devnet.CheckRules(filepath.Join("..", "monitoring", "alerts.yml")); err != nil {
		t.Fatal(err)
	}
}

// A real Prometheus (Debian's, with devnet/prometheus.yml) scrapes four
// validators under load, with the testnet command's 1 s timeout_commit, and
// their geths: every panel of the dashboard draws a number (CometBFT's
// metrics included), every alert rule loads, evaluates and reads metrics
// that exist, none fires, and the validator-down alerts (missing from the
// commits, /metrics unreachable) do once a validator is SIGKILLed.
func TestMonitoringOnRunningValidators(t *testing.T) {
	dash, err := devnet.LoadDashboard(filepath.Join("..", "monitoring", "dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	nw := newNetwork(t, spec{
		timeouts: testnet.Options{TimeoutCommit: time.Second},
		flags:    func(int) []string { return []string{"--optimistic-build"} },
	})
	nw.waitHeads(3, 90*time.Second)
	var addrs []string
	for _, v := range nw.vals {
		addrs = append(addrs, v.health)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	prom, err := nw.net.StartPrometheus(ctx, devnet.PrometheusConfig{
		Targets:   map[string][]string{"cometbft-consensus": addrs},
		RuleFiles: []string{filepath.Join("..", "monitoring", "alerts.yml")},
	})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := loadgen.ParseKeys(loadgen.DevKeys[5:])
	if err != nil {
		t.Fatal(err)
	}
	g, err := loadgen.New(ctx, nw.vals[1].geth.RPCURL(), keys)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	load := make(chan error, 1)
	go func() { _, err := g.Steady(ctx, 20, 20*time.Second, 30*time.Second); load <- err }()

	// Rates and quantiles over [1m] need two scrapes (5 s apart) with
	// heights between them.
	if err := prom.Poll(ctx, 90*time.Second, func(ctx context.Context) error { return prom.CheckQueries(ctx, dash.Queries()) }); err != nil {
		t.Fatal(err)
	}
	if err := prom.Poll(ctx, 30*time.Second, func(ctx context.Context) error { return prom.CheckRulesLoaded(ctx, "cometbft-consensus") }); err != nil {
		t.Fatal(err)
	}
	if err := <-load; err != nil {
		t.Fatal(err)
	}
	rules := func() []devnet.Rule {
		rs, err := prom.Rules(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return rs
	}
	// A rule goes pending at one bad evaluation (a precommit a second late,
	// a slow scrape) and clears at the next: healthy means every rule
	// inactive at once within a few evaluations, not at one read.
	if err := prom.Poll(ctx, 20*time.Second, func(ctx context.Context) error {
		for _, r := range rules() {
			if r.State != "inactive" {
				return fmt.Errorf("alert %s is %s on healthy validators", r.Name, r.State)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	if err := nw.vals[3].proc.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := prom.Poll(ctx, 30*time.Second, func(ctx context.Context) error {
		for _, name := range []string{"ValidatorDown", "ValidatorNodeDown"} {
			state, err := prom.AlertState(ctx, name)
			if err == nil && state == "inactive" {
				err = fmt.Errorf("%s inactive after validator-3's SIGKILL", name)
			}
			if err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
