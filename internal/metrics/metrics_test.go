package metrics

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/batching"
)

var _ batching.Recorder = (*Metrics)(nil)

var modes = [infergate.NumClasses]infergate.Mode{infergate.ModeRealtime, infergate.ModeHybrid, infergate.ModeBatch}

// batchOf builds a BatchInfo from per-class (requests, items) pairs in
// class order: urgent, normal, bulk.
func batchOf(busy time.Duration, err error, reqItems ...[2]int) *batching.BatchInfo {
	b := &batching.BatchInfo{Busy: busy, Err: err, Modes: modes}
	for c, ri := range reqItems {
		b.Requests[c] = ri[0]
		b.ItemsBy[c] = ri[1]
		b.Items += ri[1]
	}
	return b
}

func TestRecordRequest(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg, 36)
	calls := []struct {
		model   string
		class   infergate.Class
		outcome batching.Outcome
	}{
		{"m", infergate.ClassUrgent, batching.OutcomeOK},
		{"m", infergate.ClassNormal, batching.OutcomeOK},
		{"m", infergate.ClassNormal, batching.OutcomeOK},
		{"m", infergate.ClassNormal, batching.OutcomeRejected},
		{"m", infergate.ClassBulk, batching.OutcomeShed},
		{"m", infergate.ClassBulk, batching.OutcomeExpired},
		{"m", infergate.ClassUrgent, batching.OutcomeError},
		{"other", infergate.ClassUrgent, batching.OutcomeCanceled},
	}
	for _, c := range calls {
		m.RecordRequest(c.model, c.class, c.outcome, 3*time.Millisecond, 20*time.Millisecond)
	}
	const want = `
# HELP infergate_requests_total Inference requests by model, class and outcome.
# TYPE infergate_requests_total counter
infergate_requests_total{class="bulk",model="m",outcome="expired"} 1
infergate_requests_total{class="bulk",model="m",outcome="shed"} 1
infergate_requests_total{class="normal",model="m",outcome="ok"} 2
infergate_requests_total{class="normal",model="m",outcome="rejected_capacity"} 1
infergate_requests_total{class="urgent",model="m",outcome="error"} 1
infergate_requests_total{class="urgent",model="m",outcome="ok"} 1
infergate_requests_total{class="urgent",model="other",outcome="canceled"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "infergate_requests_total"); err != nil {
		t.Error(err)
	}
	// Queue and compute times are observed for successful requests only:
	// one series each for m/urgent and m/normal.
	for _, name := range []string{"infergate_request_queue_seconds", "infergate_request_compute_seconds"} {
		if n, err := testutil.GatherAndCount(reg, name); err != nil || n != 2 {
			t.Errorf("%s: %d series, %v; want 2", name, n, err)
		}
	}
	const wantQueue = `
# HELP infergate_request_queue_seconds Time requests waited in their class queue.
# TYPE infergate_request_queue_seconds histogram
infergate_request_queue_seconds_bucket{class="normal",model="m",le="0.0001"} 0
infergate_request_queue_seconds_bucket{class="normal",model="m",le="0.00025"} 0
infergate_request_queue_seconds_bucket{class="normal",model="m",le="0.0005"} 0
infergate_request_queue_seconds_bucket{class="normal",model="m",le="0.001"} 0
infergate_request_queue_seconds_bucket{class="normal",model="m",le="0.0025"} 0
infergate_request_queue_seconds_bucket{class="normal",model="m",le="0.005"} 2
infergate_request_queue_seconds_bucket{class="normal",model="m",le="0.01"} 2
infergate_request_queue_seconds_bucket{class="normal",model="m",le="0.025"} 2
infergate_request_queue_seconds_bucket{class="normal",model="m",le="0.05"} 2
infergate_request_queue_seconds_bucket{class="normal",model="m",le="0.1"} 2
infergate_request_queue_seconds_bucket{class="normal",model="m",le="0.25"} 2
infergate_request_queue_seconds_bucket{class="normal",model="m",le="0.5"} 2
infergate_request_queue_seconds_bucket{class="normal",model="m",le="1"} 2
infergate_request_queue_seconds_bucket{class="normal",model="m",le="2.5"} 2
infergate_request_queue_seconds_bucket{class="normal",model="m",le="5"} 2
infergate_request_queue_seconds_bucket{class="normal",model="m",le="10"} 2
infergate_request_queue_seconds_bucket{class="normal",model="m",le="+Inf"} 2
infergate_request_queue_seconds_sum{class="normal",model="m"} 0.006
infergate_request_queue_seconds_count{class="normal",model="m"} 2
infergate_request_queue_seconds_bucket{class="urgent",model="m",le="0.0001"} 0
infergate_request_queue_seconds_bucket{class="urgent",model="m",le="0.00025"} 0
infergate_request_queue_seconds_bucket{class="urgent",model="m",le="0.0005"} 0
infergate_request_queue_seconds_bucket{class="urgent",model="m",le="0.001"} 0
infergate_request_queue_seconds_bucket{class="urgent",model="m",le="0.0025"} 0
infergate_request_queue_seconds_bucket{class="urgent",model="m",le="0.005"} 1
infergate_request_queue_seconds_bucket{class="urgent",model="m",le="0.01"} 1
infergate_request_queue_seconds_bucket{class="urgent",model="m",le="0.025"} 1
infergate_request_queue_seconds_bucket{class="urgent",model="m",le="0.05"} 1
infergate_request_queue_seconds_bucket{class="urgent",model="m",le="0.1"} 1
infergate_request_queue_seconds_bucket{class="urgent",model="m",le="0.25"} 1
infergate_request_queue_seconds_bucket{class="urgent",model="m",le="0.5"} 1
infergate_request_queue_seconds_bucket{class="urgent",model="m",le="1"} 1
infergate_request_queue_seconds_bucket{class="urgent",model="m",le="2.5"} 1
infergate_request_queue_seconds_bucket{class="urgent",model="m",le="5"} 1
infergate_request_queue_seconds_bucket{class="urgent",model="m",le="10"} 1
infergate_request_queue_seconds_bucket{class="urgent",model="m",le="+Inf"} 1
infergate_request_queue_seconds_sum{class="urgent",model="m"} 0.003
infergate_request_queue_seconds_count{class="urgent",model="m"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(wantQueue), "infergate_request_queue_seconds"); err != nil {
		t.Error(err)
	}
}

// TestRecordBatch checks the batch counters, the batch size histogram and
// the cost counter. The price is 36 USD per instance-hour, 0.01 USD per
// busy second, so:
//
//	batch 1: 2 s, urgent 1 item, normal 3 items -> urgent 0.5 s = 0.005, normal 1.5 s = 0.015
//	batch 2: 1 s, bulk 8 items (mode batch)     -> bulk 0.01
//	batch 3: 0.25 s, bulk 2 items in mode hybrid -> bulk/hybrid 0.0025
//	batch 4: 0.5 s, failed                       -> no items, no cost, one failure
//	batch 5: model "other", 1 s, normal 1 item   -> other normal 0.01
func TestRecordBatch(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg, 36)
	m.RecordBatch("m", batchOf(2*time.Second, nil, [2]int{1, 1}, [2]int{1, 3}))
	m.RecordBatch("m", batchOf(time.Second, nil, [2]int{}, [2]int{}, [2]int{2, 8}))
	b3 := batchOf(250*time.Millisecond, nil, [2]int{}, [2]int{}, [2]int{1, 2})
	b3.Modes[infergate.ClassBulk] = infergate.ModeHybrid
	m.RecordBatch("m", b3)
	m.RecordBatch("m", batchOf(500*time.Millisecond, errors.New("runtime failed"), [2]int{}, [2]int{2, 2}))
	m.RecordBatch("other", batchOf(time.Second, nil, [2]int{}, [2]int{1, 1}))

	const want = `
# HELP infergate_execution_count_total Batches executed.
# TYPE infergate_execution_count_total counter
infergate_execution_count_total{model="m"} 4
infergate_execution_count_total{model="other"} 1
# HELP infergate_inference_count_total Items inferred (average batch size = inference_count / execution_count).
# TYPE infergate_inference_count_total counter
infergate_inference_count_total{model="m"} 14
infergate_inference_count_total{model="other"} 1
# HELP infergate_instance_busy_seconds_total Measured execution time of batches, summed over instances.
# TYPE infergate_instance_busy_seconds_total counter
infergate_instance_busy_seconds_total{model="m"} 3.75
infergate_instance_busy_seconds_total{model="other"} 1
# HELP infergate_batch_failures_total Batches whose execution failed.
# TYPE infergate_batch_failures_total counter
infergate_batch_failures_total{model="m"} 1
# HELP infergate_cost_usd_total Busy instance time priced at the configured instance price, by class and mode.
# TYPE infergate_cost_usd_total counter
infergate_cost_usd_total{class="bulk",mode="batch",model="m"} 0.01
infergate_cost_usd_total{class="bulk",mode="hybrid",model="m"} 0.0025
infergate_cost_usd_total{class="normal",mode="hybrid",model="m"} 0.015
infergate_cost_usd_total{class="normal",mode="hybrid",model="other"} 0.01
infergate_cost_usd_total{class="urgent",mode="realtime",model="m"} 0.005
# HELP infergate_batch_size Items per executed batch.
# TYPE infergate_batch_size histogram
infergate_batch_size_bucket{model="m",le="1"} 0
infergate_batch_size_bucket{model="m",le="2"} 1
infergate_batch_size_bucket{model="m",le="4"} 2
infergate_batch_size_bucket{model="m",le="8"} 3
infergate_batch_size_bucket{model="m",le="16"} 3
infergate_batch_size_bucket{model="m",le="32"} 3
infergate_batch_size_bucket{model="m",le="64"} 3
infergate_batch_size_bucket{model="m",le="128"} 3
infergate_batch_size_bucket{model="m",le="256"} 3
infergate_batch_size_bucket{model="m",le="+Inf"} 3
infergate_batch_size_sum{model="m"} 14
infergate_batch_size_count{model="m"} 3
infergate_batch_size_bucket{model="other",le="1"} 1
infergate_batch_size_bucket{model="other",le="2"} 1
infergate_batch_size_bucket{model="other",le="4"} 1
infergate_batch_size_bucket{model="other",le="8"} 1
infergate_batch_size_bucket{model="other",le="16"} 1
infergate_batch_size_bucket{model="other",le="32"} 1
infergate_batch_size_bucket{model="other",le="64"} 1
infergate_batch_size_bucket{model="other",le="128"} 1
infergate_batch_size_bucket{model="other",le="256"} 1
infergate_batch_size_bucket{model="other",le="+Inf"} 1
infergate_batch_size_sum{model="other"} 1
infergate_batch_size_count{model="other"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"infergate_execution_count_total", "infergate_inference_count_total", "infergate_instance_busy_seconds_total",
		"infergate_batch_failures_total", "infergate_cost_usd_total", "infergate_batch_size"); err != nil {
		t.Error(err)
	}
}

func TestCostByPrice(t *testing.T) {
	tests := []struct {
		name  string
		price float64
		busy  time.Duration
		items [infergate.NumClasses]int
		want  map[infergate.Class]float64
	}{
		{"one busy second at 3600/h", 3600, time.Second, [3]int{0, 1, 0}, map[infergate.Class]float64{infergate.ClassNormal: 1}},
		{"an hour at 0.10/h split 1:3", 0.10, time.Hour, [3]int{1, 0, 3},
			map[infergate.Class]float64{infergate.ClassUrgent: 0.025, infergate.ClassBulk: 0.075}},
		{"zero price", 0, time.Hour, [3]int{2, 2, 2}, map[infergate.Class]float64{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			m := New(reg, tc.price)
			b := &batching.BatchInfo{Busy: tc.busy, ItemsBy: tc.items, Modes: modes}
			for _, n := range tc.items {
				b.Items += n
			}
			m.RecordBatch("m", b)
			for _, c := range infergate.Classes {
				if tc.items[c] == 0 {
					continue
				}
				got := testutil.ToFloat64(m.costUSD.WithLabelValues("m", c.String(), string(modes[c])))
				if want := tc.want[c]; got < want*(1-1e-12) || got > want*(1+1e-12) {
					t.Errorf("%s cost = %.15g, want %.15g", c, got, want)
				}
			}
		})
	}
}

func TestRegisterModelReadsAtScrape(t *testing.T) {
	reg := prometheus.NewRegistry()
	queues := map[infergate.Class]int{}
	instances, util := 1, 0.0
	RegisterModel(reg, "m", func(c infergate.Class) int { return queues[c] }, func() int { return instances }, func() float64 { return util })

	names := []string{"infergate_queue_length", "infergate_instances", "infergate_instance_utilization"}
	expo := func(urgent, normal, bulk, inst, util string) string {
		return `
# HELP infergate_instance_utilization Busy share of provisioned instance time since start.
# TYPE infergate_instance_utilization gauge
infergate_instance_utilization{model="m"} ` + util + `
# HELP infergate_instances Provisioned model instances.
# TYPE infergate_instances gauge
infergate_instances{model="m"} ` + inst + `
# HELP infergate_queue_length Requests queued per model and class.
# TYPE infergate_queue_length gauge
infergate_queue_length{class="bulk",model="m"} ` + bulk + `
infergate_queue_length{class="normal",model="m"} ` + normal + `
infergate_queue_length{class="urgent",model="m"} ` + urgent + `
`
	}
	steps := []struct {
		name   string
		change func()
		want   string
	}{
		{"initial", func() {}, expo("0", "0", "0", "1", "0")},
		{"queues fill", func() { queues[infergate.ClassUrgent], queues[infergate.ClassBulk] = 2, 40 }, expo("2", "0", "40", "1", "0")},
		{"scaled and busy", func() { instances, util = 3, 0.25 }, expo("2", "0", "40", "3", "0.25")},
		{"drained", func() { clear(queues) }, expo("0", "0", "0", "3", "0.25")},
	}
	for _, s := range steps {
		s.change()
		if err := testutil.GatherAndCompare(reg, strings.NewReader(s.want), names...); err != nil {
			t.Errorf("%s: %v", s.name, err)
		}
	}

	// A second model registers its own series beside the first.
	RegisterModel(reg, "n", func(infergate.Class) int { return 7 }, func() int { return 2 }, func() float64 { return 1 })
	if n, err := testutil.GatherAndCount(reg, "infergate_queue_length"); err != nil || n != 2*infergate.NumClasses {
		t.Errorf("queue length series = %d, %v; want %d", n, err, 2*infergate.NumClasses)
	}
}
