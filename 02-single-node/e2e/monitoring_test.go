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

// A real Prometheus (Debian's, with devnet/prometheus.yml) scrapes the node
// under load and its geth: every panel of the dashboard draws a number,
// every alert rule loads, evaluates and reads metrics that exist, none
// fires, and the node-down alert does once the node stops.
func TestMonitoringOnARunningNode(t *testing.T) {
	dash, err := devnet.LoadDashboard(filepath.Join("..", "monitoring", "dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, nil)
	h.startNode()
	h.waitHead(2, 30*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	prom, err := h.net.StartPrometheus(ctx, devnet.PrometheusConfig{
		Targets:   map[string][]string{"single-node": {h.cfg.HealthAddr}},
		RuleFiles: []string{filepath.Join("..", "monitoring", "alerts.yml")},
	})
	if err != nil {
		t.Fatal(err)
	}
	g := h.loadgen()
	load := make(chan error, 1)
	go func() { _, err := g.Steady(ctx, 20, 20*time.Second, 30*time.Second); load <- err }()

	// Rates and quantiles over [1m] need two scrapes (5 s apart) with blocks
	// between them.
	if err := prom.Poll(ctx, 90*time.Second, func(ctx context.Context) error { return prom.CheckQueries(ctx, dash.Queries()) }); err != nil {
		t.Fatal(err)
	}
	if err := prom.Poll(ctx, 30*time.Second, func(ctx context.Context) error { return prom.CheckRulesLoaded(ctx, "single-node") }); err != nil {
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
	// A rule goes pending at one bad evaluation (a slow scrape) and clears
	// at the next: healthy means every rule inactive at once within a few
	// evaluations, not at one read.
	if err := prom.Poll(ctx, 20*time.Second, func(ctx context.Context) error {
		for _, r := range rules() {
			if r.State != "inactive" {
				return fmt.Errorf("alert %s is %s on a healthy node", r.Name, r.State)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	if err := h.stopNode(); err != nil {
		t.Fatal(err)
	}
	if err := prom.Poll(ctx, 30*time.Second, func(ctx context.Context) error {
		state, err := prom.AlertState(ctx, "SingleNodeDown")
		if err == nil && state == "inactive" {
			err = fmt.Errorf("SingleNodeDown inactive after the node stopped")
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}
