// Package metrics defines the node's Prometheus metrics on a registry of its
// own (no global registry, so several nodes can run in one test process).
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/geth-consensus/tutorial/02-single-node/internal/version"
)

const namespace = "gethcl"

// Metrics are the stage's own metrics. Names carry the unit.
type Metrics struct {
	Registry *prometheus.Registry

	BlocksProduced prometheus.Counter
	BlockTxs       prometheus.Histogram
	BlockGas       prometheus.Histogram
	BuildWait      prometheus.Histogram
	BlockDuration  prometheus.Histogram
	StoreCommit    prometheus.Histogram
	HeadNumber     prometheus.Gauge
	DriftSeconds   prometheus.Gauge
	DriftPaused    prometheus.Gauge
	Ready          prometheus.Gauge
	Replayed       prometheus.Counter
	Discarded      prometheus.Counter
	LateAnnounced  prometheus.Counter
	Parked         prometheus.Gauge
	Busy           prometheus.Gauge
	BusyStreams    prometheus.Counter
	Errors         *prometheus.CounterVec
	EngineCalls    *prometheus.HistogramVec
}

// ErrorKinds are the kinds gethcl_errors_total counts: the Engine API's
// failures, "other", and the failures counted by name. New starts each at 0.
var ErrorKinds = []string{"unreachable", "syncing", "accepted", "unknown_payload", "jwt_clock_skew", "other", "invalid_payload"}

// New creates and registers the metrics.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		BlocksProduced: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace,
			Name: "blocks_produced_total", Help: "Blocks this node built and finalized."}),
		BlockTxs: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace,
			Name: "block_transactions", Help: "Transactions per produced block.",
			Buckets: []float64{0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000}}),
		BlockGas: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace,
			Name: "block_gas_used", Help: "Gas used per produced block.",
			Buckets: prometheus.ExponentialBuckets(21000, 4, 9)}),
		BuildWait: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace,
			Name: "build_wait_seconds", Help: "Time geth was given between forkchoiceUpdated and getPayload.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 12)}),
		BlockDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace,
			Name: "block_duration_seconds", Help: "From forkchoiceUpdated with attributes to the block being final.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		StoreCommit: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace,
			Name: "store_commit_seconds", Help: "Time to persist a block (one fsynced bbolt transaction).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 14)}),
		HeadNumber: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace,
			Name: "head_number", Help: "Number of the finalized head."}),
		DriftSeconds: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace,
			Name: "timestamp_drift_seconds", Help: "Head block timestamp minus wall clock (positive: the chain runs ahead)."}),
		DriftPaused: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace,
			Name: "drift_paused", Help: "1 while production waits for the wall clock to catch up with --max-drift."}),
		Ready: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace,
			Name: "ready", Help: "1 when geth is reachable, reconciled and the head advances as expected."}),
		Replayed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace,
			Name: "blocks_replayed_total", Help: "Stored payloads replayed into geth during recovery."}),
		Discarded: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace,
			Name: "payloads_discarded_total", Help: "Empty payloads dropped in on-demand mode (rebuilt with a longer wait)."}),
		LateAnnounced: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace,
			Name: "late_announcements_total", Help: "Pending-transaction announcements that came after a block had included the transaction (ignored)."}),
		Busy: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace,
			Name: "busy", Help: "1 while an on-demand node makes blocks back to back and does not listen to pending-transaction announcements."}),
		BusyStreams: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace,
			Name: "busy_streams_total", Help: "Times an on-demand node went busy (a block of 100 or more transactions)."}),
		Parked: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace,
			Name: "parked_transactions", Help: "Announced transactions a whole round of builds did not include (replaced, evicted, priced out): not waited for, rechecked with backoff."}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace,
			Name: "errors_total", Help: "Errors by kind."}, []string{"kind"}),
		EngineCalls: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace,
			Name: "engine_call_duration_seconds", Help: "Engine API call latency by method and outcome.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16)}, []string{"method", "outcome"}),
	}
	m.Registry.MustRegister(m.BlocksProduced, m.BlockTxs, m.BlockGas, m.BuildWait, m.BlockDuration, m.StoreCommit,
		m.HeadNumber, m.DriftSeconds, m.DriftPaused, m.Ready, m.Replayed, m.Discarded, m.LateAnnounced, m.Parked, m.Busy, m.BusyStreams, m.Errors, m.EngineCalls,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.Registry.MustRegister(buildInfo())
	// Every error kind starts at 0, so that dashboards and alerts see a
	// series (a rate of 0) before the first error, not none.
	for _, kind := range ErrorKinds {
		m.Errors.WithLabelValues(kind)
	}
	return m
}

// ObserveEngineCall implements engine.Observer. The outcome is "ok", the
// payload status (valid, invalid, syncing, accepted) or an error kind.
func (m *Metrics) ObserveEngineCall(method, outcome string, d time.Duration) {
	m.EngineCalls.WithLabelValues(method, outcome).Observe(d.Seconds())
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
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
