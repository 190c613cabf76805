// Package metrics holds infergate's Prometheus collectors behind Record*
// helpers. Collectors are registered on an injected registerer, never the
// global one.
package metrics

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/batching"
)

// Metrics are the server's collectors.
type Metrics struct {
	requests     *prometheus.CounterVec
	queueTime    *prometheus.HistogramVec
	computeTime  *prometheus.HistogramVec
	latency      *prometheus.HistogramVec
	batchSize    *prometheus.HistogramVec
	inferences   *prometheus.CounterVec
	executions   *prometheus.CounterVec
	busy         *prometheus.CounterVec
	costUSD      *prometheus.CounterVec
	batchFailure *prometheus.CounterVec
	price        float64
}

// New registers the collectors on reg. pricePerHour prices busy time for
// the cost counter.
func New(reg prometheus.Registerer, pricePerHour float64) *Metrics {
	lat := []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	m := &Metrics{
		price: pricePerHour,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "infergate_requests_total", Help: "Inference requests by model, class and outcome.",
		}, []string{"model", "class", "outcome"}),
		queueTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "infergate_request_queue_seconds", Help: "Time requests waited in their class queue.", Buckets: lat,
		}, []string{"model", "class"}),
		computeTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "infergate_request_compute_seconds", Help: "Execution time of the batch a request ran in.", Buckets: lat,
		}, []string{"model", "class"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "infergate_request_latency_seconds", Help: "Time in the server of requests served: queue wait plus batch execution.", Buckets: lat,
		}, []string{"model", "class"}),
		batchSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "infergate_batch_size", Help: "Items per executed batch.", Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256},
		}, []string{"model"}),
		inferences: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "infergate_inference_count_total", Help: "Items inferred (average batch size = inference_count / execution_count).",
		}, []string{"model"}),
		executions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "infergate_execution_count_total", Help: "Batches executed.",
		}, []string{"model"}),
		busy: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "infergate_instance_busy_seconds_total", Help: "Measured execution time of batches, summed over instances.",
		}, []string{"model"}),
		costUSD: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "infergate_cost_usd_total", Help: "Busy instance time priced at the configured instance price, by class and mode.",
		}, []string{"model", "class", "mode"}),
		batchFailure: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "infergate_batch_failures_total", Help: "Batches whose execution failed.",
		}, []string{"model"}),
	}
	reg.MustRegister(m.requests, m.queueTime, m.computeTime, m.latency, m.batchSize, m.inferences, m.executions, m.busy, m.costUSD, m.batchFailure)
	return m
}

// RecordRequest implements batching.Recorder.
func (m *Metrics) RecordRequest(model string, c infergate.Class, o batching.Outcome, queued, compute time.Duration) {
	cl := c.String()
	m.requests.WithLabelValues(model, cl, string(o)).Inc()
	if o == batching.OutcomeOK {
		m.queueTime.WithLabelValues(model, cl).Observe(queued.Seconds())
		m.computeTime.WithLabelValues(model, cl).Observe(compute.Seconds())
		m.latency.WithLabelValues(model, cl).Observe((queued + compute).Seconds())
	}
}

// RecordBatch implements batching.Recorder.
func (m *Metrics) RecordBatch(model string, b *batching.BatchInfo) {
	m.executions.WithLabelValues(model).Inc()
	m.busy.WithLabelValues(model).Add(b.Busy.Seconds())
	if b.Err != nil {
		m.batchFailure.WithLabelValues(model).Inc()
		return
	}
	m.inferences.WithLabelValues(model).Add(float64(b.Items))
	m.batchSize.WithLabelValues(model).Observe(float64(b.Items))
	for _, c := range infergate.Classes {
		if b.ItemsBy[c] == 0 {
			continue
		}
		share := b.Busy.Seconds() * float64(b.ItemsBy[c]) / float64(b.Items)
		m.costUSD.WithLabelValues(model, c.String(), string(b.Modes[c])).Add(share * m.price / 3600)
	}
}

// QueueFunc reports a class's queue length.
type QueueFunc func(c infergate.Class) int

// RegisterModel adds gauges read at scrape time: queue length per class,
// instances and utilization.
func RegisterModel(reg prometheus.Registerer, model string, queue QueueFunc, instances func() int, utilization func() float64) {
	for _, c := range infergate.Classes {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "infergate_queue_length", Help: "Requests queued per model and class.",
			ConstLabels: prometheus.Labels{"model": model, "class": c.String()},
		}, func() float64 { return float64(queue(c)) }))
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "infergate_instances", Help: "Provisioned model instances.", ConstLabels: prometheus.Labels{"model": model},
	}, func() float64 { return float64(instances()) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "infergate_instance_utilization", Help: "Busy share of provisioned instance time since start.", ConstLabels: prometheus.Labels{"model": model},
	}, utilization))
}

// LatencyPoint is one batch size of a model's live latency model.
type LatencyPoint struct {
	BatchSize int
	Seconds   float64 // moving mean of the batch latency
	Count     int64
}

// RegisterLatencyModel exports a model's live per-batch-size latency model
// as infergate_batch_latency_seconds{model,batch_size} (the moving mean of
// the measured batch latency) and infergate_batch_latency_observations
// {model,batch_size}, read at scrape time from points.
func RegisterLatencyModel(reg prometheus.Registerer, model string, points func() []LatencyPoint) {
	reg.MustRegister(&latencyCollector{model: model, points: points})
}

var (
	latencyDesc = prometheus.NewDesc("infergate_batch_latency_seconds",
		"Live latency model: moving mean of the measured execution time of a batch, per batch size.", []string{"model", "batch_size"}, nil)
	latencyCountDesc = prometheus.NewDesc("infergate_batch_latency_observations",
		"Live latency model: batches observed per batch size (warmup included).", []string{"model", "batch_size"}, nil)
)

type latencyCollector struct {
	model  string
	points func() []LatencyPoint
}

// Describe sends nothing: the collector is unchecked, so that one per
// model can share the metric names (their model labels differ).
func (c *latencyCollector) Describe(chan<- *prometheus.Desc) {}

func (c *latencyCollector) Collect(ch chan<- prometheus.Metric) {
	for _, p := range c.points() {
		n := strconv.Itoa(p.BatchSize)
		ch <- prometheus.MustNewConstMetric(latencyDesc, prometheus.GaugeValue, p.Seconds, c.model, n)
		ch <- prometheus.MustNewConstMetric(latencyCountDesc, prometheus.CounterValue, float64(p.Count), c.model, n)
	}
}
