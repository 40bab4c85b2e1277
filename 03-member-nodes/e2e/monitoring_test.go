package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/geth-consensus/tutorial/devnet"
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

// A real Prometheus (Debian's, with devnet/prometheus.yml) scrapes a running
// cluster under load and its geths: every panel of the dashboard draws a
// number, every alert rule loads, evaluates and reads metrics that exist,
// and the node-down alert fires for a member that is SIGKILLed, after the
// 30 s it must hold.
func TestMonitoringOnARunningCluster(t *testing.T) {
	dash, err := devnet.LoadDashboard(filepath.Join("..", "monitoring", "dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	c := newCluster(t, 2, 1, nil)
	leader := c.waitLeader(20*time.Second, nil)
	c.waitHeads(3, 30*time.Second)
	var addrs []string
	for _, cn := range c.nodes {
		addrs = append(addrs, cn.cfg.HealthAddr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	prom, err := c.net.StartPrometheus(ctx, devnet.PrometheusConfig{
		Targets:   map[string][]string{"member-nodes": addrs},
		RuleFiles: []string{filepath.Join("..", "monitoring", "alerts.yml")},
	})
	if err != nil {
		t.Fatal(err)
	}
	load := make(chan error, 1)
	go func() { _, err := sendSteady(leader, 50, 20*time.Second); load <- err }()

	// Rates and quantiles over [1m] need two scrapes (5 s apart) with blocks
	// between them.
	if err := prom.Poll(ctx, 90*time.Second, func(ctx context.Context) error { return prom.CheckQueries(ctx, dash.Queries()) }); err != nil {
		t.Fatal(err)
	}
	if err := prom.Poll(ctx, 30*time.Second, func(ctx context.Context) error { return prom.CheckRulesLoaded(ctx, "member-nodes") }); err != nil {
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
	// Healthy but for one thing: the test cluster makes a block every 50 ms
	// with timestamps a second apart (--max-drift 1h), so its chain runs
	// ahead of the clock, and the drift alert says so.
	// A rule goes pending at one bad evaluation (a slow scrape, a moment of
	// lag) and clears at the next: healthy means so within a few
	// evaluations, not at one read.
	if err := prom.Poll(ctx, 20*time.Second, func(ctx context.Context) error {
		for _, r := range rules() {
			if active := r.State != "inactive"; active != (r.Name == "ClusterDrift") {
				return fmt.Errorf("alert %s is %s", r.Name, r.State)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// The member's SIGKILL: its alert goes pending at the next evaluation
	// and fires once it has held for the rule's 30 s.
	member := c.members()[0]
	if err := member.proc.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := prom.Poll(ctx, 60*time.Second, func(ctx context.Context) error {
		state, err := prom.AlertState(ctx, "ClusterNodeDown")
		if err == nil && state != "firing" {
			err = fmt.Errorf("ClusterNodeDown %s after %s's SIGKILL", state, member.cfg.InstanceID)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}
