// Package metrics defines the app's Prometheus metrics on a registry of its
// own. /metrics serves them together with CometBFT's, which CometBFT
// registers on Prometheus' default registry when `instrumentation.prometheus`
// is on in config.toml.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/version"
)

const namespace = "gethcl"

// Metrics are the app's own metrics. Names carry the unit.
type Metrics struct {
	Registry *prometheus.Registry

	ProposalBuild   prometheus.Histogram
	ProposalTxs     prometheus.Histogram
	Verdicts        *prometheus.CounterVec
	FinalizeLatency prometheus.Histogram
	Decided         prometheus.Gauge
	Drift           prometheus.Gauge
	HeadNumber      prometheus.Gauge
	Height          prometheus.Gauge
	Replayed        prometheus.Counter
	Optimistic      *prometheus.CounterVec
	Ready           prometheus.Gauge
	Errors          *prometheus.CounterVec
	EngineCalls     *prometheus.HistogramVec
	// ValidatorUpdates counts the registry's changes: applied (handed
	// to CometBFT) or refused.
	ValidatorUpdates *prometheus.CounterVec
	Validators       prometheus.Gauge
	VotingPower      prometheus.Gauge
}

// RejectReasons are the reasons ProcessProposal rejects a proposal for
// (the app's reason* constants). New starts each at 0, so that the first
// rejection is an increase Prometheus sees.
var RejectReasons = []string{"malformed", "mismatch", "invalid", "syncing", "unavailable"}

// New creates and registers the metrics.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		ProposalBuild: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace,
			Name: "proposal_build_seconds", Help: "PrepareProposal: from the request to the envelope (forkchoiceUpdated, wait, getPayload).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		ProposalTxs: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace,
			Name: "proposal_transactions", Help: "Ethereum transactions per proposed payload.",
			Buckets: []float64{0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000}}),
		Verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace,
			Name: "process_proposal_total", Help: "ProcessProposal verdicts: accept, or reject with the reason."}, []string{"verdict", "reason"}),
		FinalizeLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace,
			Name: "finalize_block_seconds", Help: "FinalizeBlock: newPayload if needed and forkchoiceUpdated (head = safe = finalized).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		Decided: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace,
			Name: "height_decided_timestamp_seconds", Help: "Unix time at which this node last saw a height decided (FinalizeBlock began): alert when it stops moving."}),
		Drift: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace,
			Name: "timestamp_drift_seconds", Help: "Head block timestamp minus wall clock (positive: the chain runs ahead, as it does when heights come faster than one a second)."}),
		HeadNumber: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace,
			Name: "head_number", Help: "Number of the execution block geth holds as finalized head."}),
		Height: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace,
			Name: "committed_height", Help: "Last CometBFT height the app committed."}),
		Replayed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace,
			Name: "blocks_replayed_total", Help: "Decided payloads sent to geth without this node's ProcessProposal: block sync, the handshake's replay, or a block-store replay into a wiped geth."}),
		Optimistic: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace,
			Name: "optimistic_builds_total", Help: "Payloads prepared before the proposal was due, by fate: used, stale (the proposal's parent or timestamp differed), lost (geth failed or forgot it), unclaimed (another round or proposer took the height)."}, []string{"outcome"}),
		Ready: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace,
			Name: "ready", Help: "1 when geth is reachable and heights advance."}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace,
			Name: "errors_total", Help: "Errors by kind."}, []string{"kind"}),
		EngineCalls: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace,
			Name: "engine_call_duration_seconds", Help: "Engine API call latency by method and outcome.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16)}, []string{"method", "outcome"}),
		ValidatorUpdates: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace,
			Name: "validator_updates_total", Help: "Validator-set changes read from the registry contract, by outcome: applied (handed to CometBFT) or refused (the log says why)."}, []string{"outcome"}),
		Validators: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace,
			Name: "validators", Help: "Validators in CometBFT's set of the next height."}),
		VotingPower: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace,
			Name: "voting_power", Help: "Total voting power of CometBFT's set of the next height."}),
	}
	m.Registry.MustRegister(m.ProposalBuild, m.ProposalTxs, m.Verdicts, m.FinalizeLatency, m.Decided, m.Drift, m.HeadNumber, m.Height,
		m.Replayed, m.Optimistic, m.Ready, m.Errors, m.EngineCalls, m.ValidatorUpdates, m.Validators, m.VotingPower)
	m.Registry.MustRegister(buildInfo())
	// Known label values start at 0, so that dashboards and alerts see a
	// series (a rate of 0) before the first event, not none.
	for _, kind := range []string{"build", "geth", "invalid_decided", "empty_payload", "overdue_payload"} {
		m.Errors.WithLabelValues(kind)
	}
	for _, outcome := range []string{"used", "stale", "lost", "unclaimed"} {
		m.Optimistic.WithLabelValues(outcome)
	}
	for _, outcome := range []string{"applied", "refused"} {
		m.ValidatorUpdates.WithLabelValues(outcome)
	}
	m.Verdicts.WithLabelValues("accept", "")
	for _, reason := range RejectReasons {
		m.Verdicts.WithLabelValues("reject", reason)
	}
	return m
}

// ObserveEngineCall implements engine.Observer. The outcome is "ok", the
// payload status (valid, invalid, syncing, accepted) or an error kind.
func (m *Metrics) ObserveEngineCall(method, outcome string, d time.Duration) {
	m.EngineCalls.WithLabelValues(method, outcome).Observe(d.Seconds())
}

// Handler serves the app's metrics and CometBFT's (and the Go runtime's,
// from the default registry) in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	g := prometheus.Gatherers{m.Registry, prometheus.DefaultGatherer}
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{})
}

// buildInfo is gethcl_build_info: always 1, labelled with what the binary
// was built from, so that a dashboard can show which build each node runs.
func buildInfo() prometheus.Gauge {
	v := version.Get()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "build_info",
		Help:        "Always 1, labelled with the build's module version, commit and Go version.",
		ConstLabels: prometheus.Labels{"version": v.Version, "commit": v.Commit, "goversion": v.Go}})
	g.Set(1)
	return g
}
