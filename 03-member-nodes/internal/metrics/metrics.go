// Package metrics defines the node's Prometheus metrics on a registry of its
// own (no global registry, so several nodes can run in one test process).
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/geth-consensus/tutorial/03-member-nodes/internal/version"
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
	Tracked        prometheus.Gauge
	Busy           prometheus.Gauge
	BusyStreams    prometheus.Counter
	Errors         *prometheus.CounterVec
	EngineCalls    *prometheus.HistogramVec

	Leader         prometheus.Gauge
	Epoch          prometheus.Gauge
	LeaseRenew     prometheus.Histogram
	BlocksApplied  prometheus.Counter
	SyncLagBlocks  prometheus.Gauge
	SyncLag        prometheus.Histogram
	VerifyFailures *prometheus.CounterVec
	PreExecuted    *prometheus.CounterVec
	Cosignatures   *prometheus.CounterVec
	CosignWait     prometheus.Histogram
}

// ErrorKinds are the kinds gethcl_errors_total counts: the Engine API's
// failures, "other", and the failures counted by name. New starts each at 0.
var ErrorKinds = []string{"quorum", "unavailable", "unreachable", "syncing", "accepted", "unknown_payload", "jwt_clock_skew", "other", "invalid_payload", "store", "redis"}

// VerifyReasons are the reasons gethcl_verification_failures_total counts
// (syncer.Rejection's, "invalid" and "other"). New starts each at 0.
var VerifyReasons = []string{"number", "parent", "epoch", "signature", "payload", "cosignatures", "invalid", "other"}

// New creates and registers the metrics: one definition each, with its
// help text, which is why it is long.
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
			Name: "store_commit_seconds", Help: "Time to persist a block, or the blocks a catching-up member applied at once (one PostgreSQL transaction; fenced for a leader).",
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
		Tracked: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace,
			Name: "tracked_transactions", Help: "Transaction hashes a candidate keeps: announced and not yet included, parked, and included in the last 10-20 s (to recognise late announcements)."}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace,
			Name: "errors_total", Help: "Errors by kind."}, []string{"kind"}),
		EngineCalls: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace,
			Name: "engine_call_duration_seconds", Help: "Engine API call latency by method and outcome.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16)}, []string{"method", "outcome"}),
		Leader: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace,
			Name: "leader", Help: "1 while this node holds a valid leader lease."}),
		Epoch: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace,
			Name: "epoch", Help: "Fencing epoch of the current leader as this node knows it."}),
		LeaseRenew: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace,
			Name: "lease_renew_seconds", Help: "Latency of a lease renewal (one Lua script in Redis).",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 14)}),
		BlocksApplied: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace,
			Name: "blocks_applied_total", Help: "Blocks another node produced that this node verified and applied."}),
		SyncLagBlocks: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace,
			Name: "sync_lag_blocks", Help: "Newest block announced by the leader minus this node's head."}),
		SyncLag: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace,
			Name: "sync_lag_seconds", Help: "From the leader's commit of a block to this node making it final in its geth.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		VerifyFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace,
			Name: "verification_failures_total", Help: "Blocks rejected by verification, by reason."}, []string{"reason"}),
		PreExecuted: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace,
			Name: "preexecuted_total", Help: "Blocks the leader proposed before committing them, executed here ahead (newPayload), by outcome: rejected (verification), executed, failed (geth), used (committed as executed: applied with a forkchoiceUpdated alone)."}, []string{"outcome"}),
		Cosignatures: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace,
			Name: "cosignatures_total", Help: "Proposed blocks this co-signer was asked to sign, by outcome: signed, refused (it signed another block at that height and epoch), failed (its store or Redis)."}, []string{"outcome"}),
		CosignWait: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace,
			Name: "cosign_wait_seconds", Help: "How long the leader waited for a block's k co-signatures.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
	}
	m.Registry.MustRegister(m.BlocksProduced, m.BlockTxs, m.BlockGas, m.BuildWait, m.BlockDuration, m.StoreCommit,
		m.HeadNumber, m.DriftSeconds, m.DriftPaused, m.Ready, m.Replayed, m.Discarded, m.LateAnnounced, m.Parked, m.Tracked, m.Busy, m.BusyStreams, m.Errors, m.EngineCalls,
		m.Leader, m.Epoch, m.LeaseRenew, m.BlocksApplied, m.SyncLagBlocks, m.SyncLag, m.VerifyFailures, m.PreExecuted,
		m.Cosignatures, m.CosignWait, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.Registry.MustRegister(buildInfo())
	// Known label values start at 0, so that dashboards and alerts see a
	// series (a rate of 0) before the first event, not none.
	for _, kind := range ErrorKinds {
		m.Errors.WithLabelValues(kind)
	}
	for _, reason := range VerifyReasons {
		m.VerifyFailures.WithLabelValues(reason)
	}
	for _, outcome := range []string{"rejected", "executed", "failed", "used"} {
		m.PreExecuted.WithLabelValues(outcome)
	}
	for _, outcome := range []string{"signed", "refused", "failed"} {
		m.Cosignatures.WithLabelValues(outcome)
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
