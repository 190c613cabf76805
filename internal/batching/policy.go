package batching

import (
	"fmt"
	"time"

	"github.com/infergate/infergate"
)

// Kind names a batch-formation policy.
type Kind string

// The batch-formation policies.
const (
	// Single runs every request alone: the no-batching baseline.
	Single Kind = "single"
	// Size fires when MaxBatchSize items are queued, or earlier when the
	// oldest deadline would otherwise be missed.
	Size Kind = "size"
	// Time fires every BatchTimeout with whatever is queued.
	Time Kind = "time"
	// Hybrid fires when MaxBatchSize items are queued or the oldest request
	// has waited MaxQueueDelay (Triton's dynamic batcher).
	Hybrid Kind = "hybrid"
	// Adaptive waits for more requests only while waiting pays: it fires
	// at MaxBatchSize; when the tightest deadline in the forming batch,
	// less the measured execution time of a batch one item larger (the
	// live latency model), leaves no slack; or when, at the class's
	// measured arrival rate, the next request is not expected before that
	// point or before the oldest has waited MaxQueueDelay, its bound.
	Adaptive Kind = "adaptive"
	// AIMD is Hybrid with a maximum batch size that a controller tunes
	// online, as Clipper does: after each batch of the class, one more
	// item while the oldest request's latency (queue and execution) stays
	// within TargetLatency, half as many after a miss; between 1 and
	// MaxBatchSize.
	AIMD Kind = "aimd"
)

// TimeoutAction says what happens to a request whose timeout passes while
// it is queued.
type TimeoutAction string

// The timeout actions.
const (
	// Reject answers the request with a deadline error; it never executes.
	Reject TimeoutAction = "reject"
	// Delay keeps the request queued; its timeout no longer forces a
	// batch out early. The client's own deadline still applies.
	Delay TimeoutAction = "delay"
)

// Policy configures one class's queue and batch formation.
type Policy struct {
	Kind Kind `yaml:"policy" json:"policy"`
	// MaxBatchSize is the most items in one batch. Optional. Defaults to
	// the model's maximum.
	MaxBatchSize int `yaml:"max_batch_size" json:"max_batch_size"`
	// BatchTimeout is the period of the Time policy.
	BatchTimeout time.Duration `yaml:"batch_timeout" json:"batch_timeout"`
	// MaxQueueDelay bounds how long the oldest request waits under Hybrid.
	MaxQueueDelay time.Duration `yaml:"max_queue_delay" json:"max_queue_delay"`
	// PreferredBatchSizes, under Hybrid, fire a batch as soon as the
	// largest of them can be formed and round batches down to them.
	PreferredBatchSizes []int `yaml:"preferred_batch_sizes" json:"preferred_batch_sizes,omitempty"`
	// MaxQueueSize is the most requests queued in this class; more are
	// answered 429. 0 means unbounded (not recommended).
	MaxQueueSize int `yaml:"max_queue_size" json:"max_queue_size"`
	// DefaultTimeout applies to requests that carry no timeout. 0 means none.
	DefaultTimeout time.Duration `yaml:"default_timeout" json:"default_timeout"`
	// TimeoutAction is Reject (default) or Delay.
	TimeoutAction TimeoutAction `yaml:"timeout_action" json:"timeout_action"`
	// FillWithBulk lets bulk items take this class's spare batch slots.
	FillWithBulk bool `yaml:"fill_with_bulk" json:"fill_with_bulk"`
	// TargetLatency is the latency the AIMD policy keeps the oldest request
	// of each batch within. Optional. Defaults to DefaultTimeout.
	TargetLatency time.Duration `yaml:"target_latency" json:"target_latency,omitempty"`
	// Mode is the serving mode the class's requests are accounted under.
	Mode infergate.Mode `yaml:"mode" json:"mode"`
}

// Validate checks p; modelMax is the model's maximum batch size.
func (p *Policy) Validate(modelMax int) error {
	switch p.Kind {
	case Size:
		// Without a deadline nothing fires a partial batch: a lone
		// request would wait for company forever.
		if p.DefaultTimeout <= 0 || p.TimeoutAction == Delay {
			return fmt.Errorf("policy size needs default_timeout > 0 and timeout_action reject, so that a partial batch still fires")
		}
	case Single, Hybrid:
	case AIMD:
		if p.TargetLatency < 0 {
			return fmt.Errorf("target_latency must be >= 0")
		}
		if p.TargetLatency <= 0 && p.DefaultTimeout <= 0 {
			return fmt.Errorf("policy aimd needs target_latency (or default_timeout) > 0")
		}
		if p.MaxQueueDelay < 0 {
			return fmt.Errorf("max_queue_delay must be >= 0")
		}
	case Adaptive:
		if p.MaxQueueDelay <= 0 {
			return fmt.Errorf("policy adaptive needs max_queue_delay > 0, the longest the oldest request may wait")
		}
	case Time:
		if p.BatchTimeout <= 0 {
			return fmt.Errorf("batch_timeout must be > 0 for policy time")
		}
	default:
		return fmt.Errorf("policy %q: want single, size, time, hybrid, adaptive or aimd", p.Kind)
	}
	if p.MaxBatchSize < 0 || (modelMax > 0 && p.MaxBatchSize > modelMax) {
		return fmt.Errorf("max_batch_size %d: want 1..%d", p.MaxBatchSize, modelMax)
	}
	if p.Kind == Hybrid && p.MaxQueueDelay < 0 {
		return fmt.Errorf("max_queue_delay must be >= 0")
	}
	for _, n := range p.PreferredBatchSizes {
		if n < 1 || (p.MaxBatchSize > 0 && n > p.MaxBatchSize) {
			return fmt.Errorf("preferred_batch_sizes: %d out of 1..%d", n, p.MaxBatchSize)
		}
	}
	if p.MaxQueueSize < 0 || p.DefaultTimeout < 0 {
		return fmt.Errorf("max_queue_size and default_timeout must be >= 0")
	}
	switch p.TimeoutAction {
	case "", Reject, Delay:
	default:
		return fmt.Errorf("timeout_action %q: want reject or delay", p.TimeoutAction)
	}
	switch p.Mode {
	case "", infergate.ModeRealtime, infergate.ModeHybrid, infergate.ModeBatch:
	default:
		return fmt.Errorf("mode %q: want realtime, hybrid or batch", p.Mode)
	}
	return nil
}

// withDefaults fills in what the caller left zero.
func (p Policy) withDefaults(c infergate.Class, modelMax int) Policy {
	if p.Kind == "" {
		p.Kind = Hybrid
	}
	if p.MaxBatchSize == 0 {
		p.MaxBatchSize = max(modelMax, 1)
	}
	if p.Kind == Single {
		p.MaxBatchSize = 1
	}
	if p.TimeoutAction == "" {
		p.TimeoutAction = Reject
	}
	if p.Kind == AIMD && p.TargetLatency == 0 {
		p.TargetLatency = p.DefaultTimeout
	}
	if p.Mode == "" {
		p.Mode = c.DefaultMode()
		if p.Kind == Single {
			p.Mode = infergate.ModeRealtime
		}
	}
	return p
}
